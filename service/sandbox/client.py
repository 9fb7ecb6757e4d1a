"""Python clients for the sandbox's admin API (``/_sandbox/…``).

``SandboxClient`` (sync) and ``AsyncSandboxClient`` (async) expose the same methods,
made from the same :class:`_Requests` builders (signatures, docstrings, the JSON they
send and the shape of the answer) and reading answers with the same :func:`_read`: only
the transport differs. Used by tests, the
``autoreply sandbox`` verbs and the demo.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast

import httpx

from service.sandbox.reports import (
    ClockReport,
    DeliveryReport,
    FaultReport,
    FeedbackResult,
    InjectResult,
    LabelChange,
    PersonReply,
    RedeliverResult,
    RequestsReport,
    SentEmail,
    WebhookReport,
)

DEFAULT_URL = "http://127.0.0.1:9100"
POLL_INTERVAL = 0.02
#: How long an HTTP client here keeps an idle connection for reuse: well under uvicorn's
#: 5 s keep-alive, the sandbox's and the service's. With both at 5 s (httpx's default),
#: a request sent on a connection the server is closing that instant is reset.
IDLE_CONNECTION_SECONDS = 1.0
#: How long the sandbox's server keeps an idle connection open: longer than any client's
#: idle expiry (the AgentMail SDK's httpx keeps one 5 s), as an API behind a load
#: balancer does, so a client never reuses a connection the sandbox is closing.
SERVER_KEEP_ALIVE_SECONDS = 60

_LIMITS = httpx.Limits(keepalive_expiry=IDLE_CONNECTION_SECONDS)

P = ParamSpec("P")
T = TypeVar("T")


class SandboxError(Exception):
    """The admin API answered with an error, or could not be reached (``status`` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Request(Generic[T]):
    """One admin request; ``T`` is the shape of its JSON answer."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, str] = field(default_factory=dict)


def _clean(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _many(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


class _Requests:
    """Every admin request, with the signature and docstring its client method shows.

    Both clients are built from these (``_sync``, ``_async``): they differ only in how
    a request is sent.
    """

    @staticmethod
    def info() -> _Request[dict[str, Any]]:
        """API keys, inboxes, time scale and the sandbox time."""
        return _Request("GET", "/_sandbox/info")

    @staticmethod
    def inject(
        *,
        inbox_id: str | None = None,
        from_: str | None = None,
        to: str | Sequence[str] | None = None,
        cc: str | Sequence[str] | None = None,
        reply_to: str | Sequence[str] | None = None,
        subject: str | None = None,
        text: str | None = None,
        html: str | None = None,
        headers: Mapping[str, str] | None = None,
        event_type: str | None = None,
        in_reply_to: str | None = None,
        references: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        copies: int | None = None,
        message_id: str | None = None,
    ) -> _Request[InjectResult]:
        """Inject an inbound email; see ``POST /_sandbox/inbound``."""
        fields = {
            "inbox_id": inbox_id,
            "from": from_,
            "to": _many(to),
            "cc": _many(cc),
            "reply_to": _many(reply_to),
            "subject": subject,
            "text": text,
            "html": html,
            "headers": dict(headers) if headers is not None else None,
            "event_type": event_type,
            "in_reply_to": in_reply_to,
            "references": list(references) if references is not None else None,
            "labels": list(labels) if labels is not None else None,
            "copies": copies,
            "message_id": message_id,
        }
        return _Request("POST", "/_sandbox/inbound", json=_clean(fields))

    @staticmethod
    def reply(
        *,
        message_id: str | None = None,
        thread_id: str | None = None,
        inbox_id: str | None = None,
        text: str | None = None,
        html: str | None = None,
    ) -> _Request[PersonReply]:
        """Answer a message (or a thread's newest received one) in its thread as a person
        would: a reply from the inbox with its ``message.sent`` event; see ``POST
        /_sandbox/reply``."""
        fields = {
            "message_id": message_id,
            "thread_id": thread_id,
            "inbox_id": inbox_id,
            "text": text,
            "html": html,
        }
        return _Request("POST", "/_sandbox/reply", json=_clean(fields))

    @staticmethod
    def redeliver(
        delivery_id: str,
        *,
        copies: int = 1,
        new_svix_id: bool = False,
        new_event_id: bool = False,
    ) -> _Request[RedeliverResult]:
        """Send a past delivery's body again (same or new svix-id / event_id)."""
        body = {"copies": copies, "new_svix_id": new_svix_id, "new_event_id": new_event_id}
        return _Request("POST", f"/_sandbox/deliveries/{delivery_id}/redeliver", json=body)

    @staticmethod
    def bounce(
        inbox_id: str,
        message_id: str,
        *,
        type_: str | None = None,
        sub_type: str | None = None,
        recipients: str | Sequence[str] | None = None,
        status: str | None = None,
    ) -> _Request[FeedbackResult]:
        """The sent message ``message_id`` bounced: fire ``message.bounced`` (default
        ``Permanent``/``General``, every recipient, status ``bounced``)."""
        fields = {
            "inbox_id": inbox_id,
            "message_id": message_id,
            "type": type_,
            "sub_type": sub_type,
            "recipients": _many(recipients),
            "status": status,
        }
        return _Request("POST", "/_sandbox/bounce", json=_clean(fields))

    @staticmethod
    def complain(
        inbox_id: str,
        message_id: str,
        *,
        type_: str | None = None,
        sub_type: str | None = None,
        recipients: str | Sequence[str] | None = None,
    ) -> _Request[FeedbackResult]:
        """A recipient reported the sent message ``message_id`` as spam: fire
        ``message.complained`` (default ``abuse``/``spam``, every recipient)."""
        fields = {
            "inbox_id": inbox_id,
            "message_id": message_id,
            "type": type_,
            "sub_type": sub_type,
            "recipients": _many(recipients),
        }
        return _Request("POST", "/_sandbox/complaint", json=_clean(fields))

    @staticmethod
    def deliveries() -> _Request[list[DeliveryReport]]:
        """Every delivery with its attempts."""
        return _Request("GET", "/_sandbox/deliveries")

    @staticmethod
    def delivery(delivery_id: str) -> _Request[DeliveryReport]:
        """One delivery with its attempts."""
        return _Request("GET", f"/_sandbox/deliveries/{delivery_id}")

    @staticmethod
    def sent() -> _Request[list[SentEmail]]:
        """Every email actually sent."""
        return _Request("GET", "/_sandbox/sent")

    @staticmethod
    def label_changes() -> _Request[list[LabelChange]]:
        """Every successful label PATCH."""
        return _Request("GET", "/_sandbox/label-changes")

    @staticmethod
    def requests() -> _Request[RequestsReport]:
        """API call counts per operation and status."""
        return _Request("GET", "/_sandbox/requests")

    @staticmethod
    def add_fault(
        operation: str,
        *,
        status: int | None = None,
        rate: float | None = None,
        times: int | None = None,
        retry_after: int | None = None,
        latency_ms: int | None = None,
        after_send: bool | None = None,
    ) -> _Request[FaultReport]:
        """Install a fault on an operation (``*`` for all)."""
        fields = {
            "operation": operation,
            "status": status,
            "rate": rate,
            "times": times,
            "retry_after": retry_after,
            "latency_ms": latency_ms,
            "after_send": after_send,
        }
        return _Request("POST", "/_sandbox/faults", json=_clean(fields))

    @staticmethod
    def faults() -> _Request[list[FaultReport]]:
        """The installed faults."""
        return _Request("GET", "/_sandbox/faults")

    @staticmethod
    def clear_faults() -> _Request[None]:
        """Remove every fault."""
        return _Request("DELETE", "/_sandbox/faults")

    @staticmethod
    def webhooks() -> _Request[list[WebhookReport]]:
        """Every webhook (org-level and inbox-scoped) with its drop window."""
        return _Request("GET", "/_sandbox/webhooks")

    @staticmethod
    def disable_webhook(webhook_id: str) -> _Request[WebhookReport]:
        """Disable a webhook as AgentMail does after repeated failures (``enabled`` false,
        pending deliveries cancelled, no deliveries until re-enabled, none replayed)."""
        return _Request("POST", f"/_sandbox/webhooks/{webhook_id}/disable")

    @staticmethod
    def delete_webhook(webhook_id: str) -> _Request[dict[str, Any]]:
        """Delete a webhook, whichever route it was created on."""
        return _Request("DELETE", f"/_sandbox/webhooks/{webhook_id}")

    @staticmethod
    def drop_deliveries(webhook_id: str, seconds: float | None = None) -> _Request[WebhookReport]:
        """Drop every delivery to a webhook for ``seconds`` of sandbox time (None: until
        :meth:`stop_dropping`): pending and new deliveries end ``dropped``, never sent."""
        return _Request(
            "POST", f"/_sandbox/webhooks/{webhook_id}/drop", json=_clean({"seconds": seconds})
        )

    @staticmethod
    def stop_dropping(webhook_id: str) -> _Request[WebhookReport]:
        """End a webhook's drop window now (what was dropped stays dropped)."""
        return _Request("DELETE", f"/_sandbox/webhooks/{webhook_id}/drop")

    @staticmethod
    def clock() -> _Request[ClockReport]:
        """The sandbox time and its offset from the wall clock."""
        return _Request("GET", "/_sandbox/clock")

    @staticmethod
    def advance_clock(seconds: float) -> _Request[ClockReport]:
        """Move the sandbox clock by ``seconds`` (negative moves it back)."""
        return _Request("POST", "/_sandbox/clock", json={"advance_seconds": seconds})

    @staticmethod
    def set_clock(now: datetime | str) -> _Request[ClockReport]:
        """Set the sandbox clock to ``now`` (a datetime, naive = UTC, or ISO-8601); it runs on."""
        if isinstance(now, datetime):
            moment = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
            now = moment.isoformat()
        return _Request("POST", "/_sandbox/clock", json={"now": now})

    @staticmethod
    def drafts() -> _Request[list[dict[str, Any]]]:
        """Every draft of every inbox (SDK ``Draft`` shape), oldest first."""
        return _Request("GET", "/_sandbox/drafts")

    @staticmethod
    def send_draft(draft_id: str) -> _Request[dict[str, str]]:
        """Send a draft as a person would from the console; ``{message_id, thread_id}``."""
        return _Request("POST", f"/_sandbox/drafts/{draft_id}/send")

    @staticmethod
    def delete_draft(draft_id: str) -> _Request[dict[str, Any]]:
        """Discard a draft as a person would from the console."""
        return _Request("DELETE", f"/_sandbox/drafts/{draft_id}")

    @staticmethod
    def reset() -> _Request[None]:
        """Back to the initial state."""
        return _Request("POST", "/_sandbox/reset")


def _sync(build: Callable[P, _Request[T]]) -> Callable[Concatenate[SandboxClient, P], T]:
    """``SandboxClient``'s method for one request: build it, send it, return the answer."""

    @functools.wraps(build)
    def call(client: SandboxClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return cast(T, client._send(build(*args, **kwargs)))

    return call


def _async(
    build: Callable[P, _Request[T]],
) -> Callable[Concatenate[AsyncSandboxClient, P], Coroutine[Any, Any, T]]:
    """``AsyncSandboxClient``'s method for one request (see ``_sync``)."""

    @functools.wraps(build)
    async def call(client: AsyncSandboxClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return cast(T, await client._send(build(*args, **kwargs)))

    return call


def _read(response: httpx.Response) -> Any:
    """The JSON answer, or a :class:`SandboxError` carrying the admin API's message."""
    if response.status_code >= 400:
        try:
            message = response.json().get("message") or response.text
        except ValueError:
            message = response.text
        raise SandboxError(f"HTTP {response.status_code}: {message}", response.status_code)
    return response.json()


def _unreachable(base_url: str, exc: httpx.HTTPError) -> SandboxError:
    return SandboxError(f"sandbox not reachable at {base_url} ({type(exc).__name__})")


def settled(reports: Sequence[DeliveryReport]) -> bool:
    """Whether no delivery is still pending (all succeeded, failed or were cancelled)."""
    return all(report["state"] != "pending" for report in reports)


def _timeout_message(reports: Sequence[DeliveryReport], timeout: float) -> str:
    pending = [r["delivery_id"] for r in reports if r["state"] == "pending"]
    return f"{len(pending)} deliveries still pending after {timeout:g} s: {', '.join(pending)}"


class SandboxClient:
    """Synchronous admin client (``httpx.Client``)."""

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, trust_env=False, limits=_LIMITS
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> SandboxClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, request: _Request[Any]) -> Any:
        try:
            response = self._http.request(
                request.method, request.path, json=request.json, params=dict(request.params)
            )
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return _read(response)

    info = _sync(_Requests.info)
    inject = _sync(_Requests.inject)
    reply = _sync(_Requests.reply)
    redeliver = _sync(_Requests.redeliver)
    bounce = _sync(_Requests.bounce)
    complain = _sync(_Requests.complain)
    deliveries = _sync(_Requests.deliveries)
    delivery = _sync(_Requests.delivery)
    sent = _sync(_Requests.sent)
    label_changes = _sync(_Requests.label_changes)
    requests = _sync(_Requests.requests)
    add_fault = _sync(_Requests.add_fault)
    faults = _sync(_Requests.faults)
    clear_faults = _sync(_Requests.clear_faults)
    webhooks = _sync(_Requests.webhooks)
    disable_webhook = _sync(_Requests.disable_webhook)
    delete_webhook = _sync(_Requests.delete_webhook)
    drop_deliveries = _sync(_Requests.drop_deliveries)
    stop_dropping = _sync(_Requests.stop_dropping)
    clock = _sync(_Requests.clock)
    advance_clock = _sync(_Requests.advance_clock)
    set_clock = _sync(_Requests.set_clock)
    drafts = _sync(_Requests.drafts)
    send_draft = _sync(_Requests.send_draft)
    delete_draft = _sync(_Requests.delete_draft)
    reset = _sync(_Requests.reset)

    def wait_for_deliveries(self, timeout: float = 10.0) -> list[DeliveryReport]:
        """Poll until no delivery is pending; return them all. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            reports = self.deliveries()
            if settled(reports):
                return reports
            if time.monotonic() >= deadline:
                raise TimeoutError(_timeout_message(reports, timeout))
            time.sleep(POLL_INTERVAL)

    def wait_for_sent(self, count: int, timeout: float = 10.0) -> list[SentEmail]:
        """Poll until at least ``count`` emails were sent; return them. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            emails = self.sent()
            if len(emails) >= count:
                return emails
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(emails)} of {count} emails sent after {timeout:g} s")
            time.sleep(POLL_INTERVAL)


class AsyncSandboxClient:
    """Asynchronous admin client (``httpx.AsyncClient``); same methods as SandboxClient."""

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, trust_env=False, limits=_LIMITS
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSandboxClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def _send(self, request: _Request[Any]) -> Any:
        try:
            response = await self._http.request(
                request.method, request.path, json=request.json, params=dict(request.params)
            )
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return _read(response)

    info = _async(_Requests.info)
    inject = _async(_Requests.inject)
    reply = _async(_Requests.reply)
    redeliver = _async(_Requests.redeliver)
    bounce = _async(_Requests.bounce)
    complain = _async(_Requests.complain)
    deliveries = _async(_Requests.deliveries)
    delivery = _async(_Requests.delivery)
    sent = _async(_Requests.sent)
    label_changes = _async(_Requests.label_changes)
    requests = _async(_Requests.requests)
    add_fault = _async(_Requests.add_fault)
    faults = _async(_Requests.faults)
    clear_faults = _async(_Requests.clear_faults)
    webhooks = _async(_Requests.webhooks)
    disable_webhook = _async(_Requests.disable_webhook)
    delete_webhook = _async(_Requests.delete_webhook)
    drop_deliveries = _async(_Requests.drop_deliveries)
    stop_dropping = _async(_Requests.stop_dropping)
    clock = _async(_Requests.clock)
    advance_clock = _async(_Requests.advance_clock)
    set_clock = _async(_Requests.set_clock)
    drafts = _async(_Requests.drafts)
    send_draft = _async(_Requests.send_draft)
    delete_draft = _async(_Requests.delete_draft)
    reset = _async(_Requests.reset)

    async def wait_for_deliveries(
        self,
        timeout: float = 10.0,  # noqa: ASYNC109 - the same signature as the sync client
    ) -> list[DeliveryReport]:
        """Poll until no delivery is pending; return them all. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            reports = await self.deliveries()
            if settled(reports):
                return reports
            if time.monotonic() >= deadline:
                raise TimeoutError(_timeout_message(reports, timeout))
            await asyncio.sleep(POLL_INTERVAL)

    async def wait_for_sent(
        self,
        count: int,
        timeout: float = 10.0,  # noqa: ASYNC109 - the same signature as the sync client
    ) -> list[SentEmail]:
        """Poll until at least ``count`` emails were sent; return them. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            emails = await self.sent()
            if len(emails) >= count:
                return emails
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(emails)} of {count} emails sent after {timeout:g} s")
            await asyncio.sleep(POLL_INTERVAL)
