"""The HTTP surface: the webhook endpoint and the health probes.

The webhook request path only verifies and records: read the raw body, check the
Svix signature, parse, commit the delivery and its job durably, answer. No AgentMail
call, no template, nothing slow; the worker does the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import structlog
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from service import metrics
from service.http_limits import BODY_TIMEOUT_SECONDS, SWEEP_SECONDS
from service.models import Delivery, DeliveryOutcome, SentRef
from service.runtime import Runtime
from service.store.base import Recorded, StoreUnavailable
from service.webhooks import RejectedDelivery, parse_delivery

log = structlog.get_logger("autoreply.intake")

#: AgentMail caps payloads at 1 MB (it drops the body above that); 1 MiB leaves room.
MAX_BODY = 1024 * 1024
#: Body bytes all webhook requests in progress may hold together; past it a delivery is
#: answered 503 (Svix retries). 192 bodies of the maximum size, thousands of real ones
#: (a few KiB each): what keeps many concurrent large bodies within a 512 MiB container.
MAX_BODIES_BYTES = 192 * MAX_BODY
#: Characters kept of a value from a request (a header, a field of the body) in a log
#: line or a response's ``reason``; svix and AgentMail ids are far shorter.
MAX_LOGGED_CHARS = 200

_STATUS = {
    Recorded.ENQUEUED: (202, DeliveryOutcome.ACCEPTED),
    Recorded.DUPLICATE_DELIVERY: (200, DeliveryOutcome.DUPLICATE),
    Recorded.DUPLICATE_EVENT: (200, DeliveryOutcome.DUPLICATE),
    Recorded.DUPLICATE_MESSAGE: (200, DeliveryOutcome.DUPLICATE),
    Recorded.IGNORED: (200, DeliveryOutcome.IGNORED),
    Recorded.FEEDBACK: (202, DeliveryOutcome.ACCEPTED),
    # Nothing recorded: Svix delivers it again, once our reply's sent id is known.
    Recorded.NOT_YET: (503, DeliveryOutcome.UNAVAILABLE),
}

#: The response header that names the outcome (``accepted``, ``duplicate``, ...).
OUTCOME_HEADER = "autoreply-outcome"


class WebhookEndpoint:
    """``POST /webhooks/agentmail``: 202 new, 200 duplicate or ignored, 4xx refused, 503 retry.

    A plain ASGI app rather than a Starlette request handler: this is the one hot path,
    and it needs only the raw body and three headers, not Request and Response objects.

    Every answer names its outcome in the ``Autoreply-Outcome`` header. Refusals and
    503s also carry a JSON body with the reason, for the person reading Svix's attempt
    log. Acknowledgements carry no body: the sender reads only the status, and a body
    is a second write to the socket per delivery.
    """

    def __init__(self) -> None:
        self._counters: dict[tuple[DeliveryOutcome, int], Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read, verify, record and answer one delivery."""
        runtime: Runtime = scope["app"].state.runtime
        started = time.perf_counter()
        headers = _headers(scope)
        fields: dict[str, object] = {"svix_id": headers.get("svix-id")}
        try:
            status, outcome = await _receive(receive, headers, runtime, fields)
        except RejectedDelivery as rejected:
            status, outcome = rejected.status, DeliveryOutcome.REJECTED
            # Reasons may quote the request (an event type, a header's problem).
            fields["reason"] = clip(rejected.reason)
        except BodyBudgetExceeded:
            status, outcome = 503, DeliveryOutcome.UNAVAILABLE
            fields["reason"] = "too many request bodies in progress"
        self._counter(outcome, status).inc()
        # An accepted delivery is logged again, with its outcome, by the job that
        # answers it; at INFO a line here too would double the logging per message.
        level = logging.DEBUG if status == 202 else logging.INFO
        if log.is_enabled_for(level):
            log.log(
                level,
                "delivery",
                outcome=outcome,
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                # Most values came with the request (a header, the body) or quote it.
                **{k: clip(v) if isinstance(v, str) else v for k, v in fields.items()},
            )
        response_headers = [(OUTCOME_HEADER.encode(), outcome.encode())]
        content = b""
        if status >= 300:
            body: dict[str, object] = {"status": outcome}
            if "reason" in fields:
                body["reason"] = fields["reason"]
            content = orjson.dumps(body)
            response_headers.append((b"content-type", b"application/json"))
        response_headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": content})

    def _counter(self, outcome: DeliveryOutcome, status: int) -> Counter:
        """``autoreply_deliveries_total`` for this outcome, looked up once per label pair."""
        key = (outcome, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = metrics.DELIVERIES.labels(outcome=outcome, status=str(status))
            self._counters[key] = counter
        return counter


_WANTED = frozenset((b"svix-id", b"svix-timestamp", b"svix-signature", b"content-length"))


def _headers(scope: Scope) -> dict[str, str]:
    # ASGI header names arrive lower-cased; a repeated one keeps its first value.
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in _WANTED:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


async def _receive(
    receive: Receive, headers: dict[str, str], runtime: Runtime, fields: dict[str, object]
) -> tuple[int, DeliveryOutcome]:
    verifier = runtime.verifier
    if verifier is None:
        # Why there is none: registration pending or failing, or its secret refused.
        fields["reason"] = runtime.registration_problem or "webhook secret not known yet"
        return 503, DeliveryOutcome.UNAVAILABLE
    body = await _read_body(receive, headers.get("content-length"))
    try:
        svix_id = verifier.verify(body, headers)
        delivery = parse_delivery(svix_id, body, acted_on=runtime.event_types)
        fields.update(event_id=delivery.event_id, event_type=delivery.event_type)
        # Routed by what the event carries: a message (a job), feedback about a message
        # an inbox sent (the suppression list), a sent message (a draft's job may wait
        # for it), or none of these (recorded, ignored).
        about = delivery.message or delivery.feedback or delivery.sent
        if about is not None:
            fields["message_id"] = about.message_id
            fields["inbox_id"] = about.inbox_id
            if runtime.inbox_ids and about.inbox_id not in runtime.inbox_ids:
                fields["reason"] = "inbox not handled by this service"
                return 200, DeliveryOutcome.IGNORED
        try:
            if delivery.feedback is not None:
                recorded = await _record_feedback(runtime, delivery, fields)
            else:
                recorded = await runtime.store.record_delivery(delivery, now=time.time())
        except StoreUnavailable as exc:
            fields["reason"] = "store unavailable"
            fields["error"] = str(exc)
            return 503, DeliveryOutcome.UNAVAILABLE
        if delivery.sent is not None:
            try:
                recorded = await _note_sent(runtime, delivery.sent, recorded)
            except StoreUnavailable as exc:
                fields["reason"] = "store unavailable"
                fields["error"] = str(exc)
                return 503, DeliveryOutcome.UNAVAILABLE
        if recorded is Recorded.ENQUEUED:
            runtime.wake_worker()
        fields["recorded"] = recorded.value
        return _STATUS[recorded]
    finally:
        _BODIES.give_back(len(body))


async def _record_feedback(
    runtime: Runtime, delivery: Delivery, fields: dict[str, object]
) -> Recorded:
    """Record a bounce or complaint; log and count each address it suppressed."""
    outcome = await runtime.store.record_feedback(
        delivery, now=time.time(), transient_limit=runtime.settings.transient_bounce_limit
    )
    if outcome.recorded is Recorded.IGNORED:
        fields["reason"] = "not about a reply of ours, or not about its recipient"
    elif outcome.recorded is Recorded.NOT_YET:
        fields["reason"] = "a reply in this thread is on its way; retry when it is recorded"
    assert delivery.feedback is not None
    for address, cause in outcome.suppressed:
        metrics.SUPPRESSIONS_ADDED.labels(cause=cause.value).inc()
        log.info(
            "suppressed",
            inbox_id=delivery.feedback.inbox_id,
            address=address,
            cause=cause.value,
            detail=clip(delivery.feedback.detail),
            message_id=delivery.feedback.message_id,
            event_id=delivery.event_id,
        )
    return outcome.recorded


async def _note_sent(runtime: Runtime, sent: SentRef, recorded: Recorded) -> Recorded:
    """A ``message.sent`` event: wake the jobs of its thread whose draft awaits review,
    or which wait out a grace period (their thread may have been answered by a person).

    Noted on every delivery, duplicates too (it only sets a hint and makes the jobs due,
    so it may repeat): a delivery whose note was lost to a crash after its record
    committed is noted by Svix's retry. A new event that hinted or woke a job is
    ``accepted`` (202); one about nothing of ours stays recorded and ``ignored`` (200).
    """
    hinted = await runtime.store.note_sent(
        inbox_id=sent.inbox_id,
        thread_id=sent.thread_id,
        message_id=sent.message_id,
        now=time.time(),
    )
    if hinted and recorded is Recorded.IGNORED:
        return Recorded.ENQUEUED
    return recorded


async def _read_body(receive: Receive, declared: str | None) -> bytes:
    """The whole body: 413 past :data:`MAX_BODY`, 408 if it takes longer than
    ``BODY_TIMEOUT_SECONDS`` (a ``Content-Length`` larger than what is sent would
    otherwise be waited on forever)."""
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise RejectedDelivery(413, f"body over {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    # Held against the budget until the caller gives the whole body back.
    held = 0
    task = _DEADLINES.start()
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RejectedDelivery(400, "client disconnected mid-body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise RejectedDelivery(413, f"body over {MAX_BODY} bytes")
            _BODIES.take(len(chunk))
            held = size
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    except BaseException as exc:
        _BODIES.give_back(held)
        if isinstance(exc, asyncio.CancelledError) and _DEADLINES.expired(task):
            task.uncancel()
            reason = f"body not received within {BODY_TIMEOUT_SECONDS:g} s"
            raise RejectedDelivery(408, reason) from None
        raise
    finally:
        _DEADLINES.stop(task)


class _BodyDeadlines:
    """The deadlines of the bodies being read, held by one timer a second for all of them.

    ``asyncio.timeout()`` arms and cancels a timer per request: about 7 us under uvloop
    on the benchmark machine, 5% of a delivery's CPU, for a deadline that needs a
    precision of a second. A task past its deadline is cancelled while it waits in
    ``receive()`` (the only place it can wait while registered), and ``_read_body``
    turns that cancellation into a 408.
    """

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeping = False

    def start(self) -> asyncio.Task[Any]:
        """Register the current task's body read; returns the task, for :meth:`stop`."""
        task = asyncio.current_task()
        assert task is not None  # an ASGI app always runs in a task
        loop = task.get_loop()
        self._due[task] = loop.time() + BODY_TIMEOUT_SECONDS
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(SWEEP_SECONDS, self._sweep, loop)
        return task

    def stop(self, task: asyncio.Task[Any]) -> None:
        self._due.pop(task, None)
        self._expired.discard(task)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled for its deadline (not by anything else)."""
        return task in self._expired

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, due in list(self._due.items()):
            if due <= now:
                del self._due[task]
                self._expired.add(task)
                task.cancel()
        if self._due:
            loop.call_later(SWEEP_SECONDS, self._sweep, loop)
        else:
            self._sweeping = False


_DEADLINES = _BodyDeadlines()


class BodyBudgetExceeded(Exception):
    """The bodies in progress would hold more than :data:`MAX_BODIES_BYTES`."""


class _BodyBudget:
    """Body bytes held by webhook requests in progress, against :data:`MAX_BODIES_BYTES`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> None:
        if self.held + size > self.limit:
            raise BodyBudgetExceeded
        self.held += size

    def give_back(self, size: int) -> None:
        self.held -= size


_BODIES = _BodyBudget(MAX_BODIES_BYTES)


def clip(value: str) -> str:
    """``value`` cut to :data:`MAX_LOGGED_CHARS` characters, marked with the full length.

    For values from a request on their way to a log line or a response: a 4 MiB
    ``svix-id`` must not make a 4 MiB line.
    """
    if len(value) <= MAX_LOGGED_CHARS:
        return value
    return f"{value[:MAX_LOGGED_CHARS]}...[{len(value)} chars]"


async def healthz(request: Request) -> Response:
    """``GET /healthz``: the process is alive and serving."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """``GET /readyz``: store reachable, webhook secret known, worker running."""
    runtime: Runtime = request.app.state.runtime
    problems = await runtime.problems()
    if problems:
        return JSONResponse({"status": "unavailable", "reasons": problems}, status_code=503)
    return JSONResponse({"status": "ready"})
