"""The admin API under ``/_sandbox/`` (no auth): inject mail, inject faults, read back.

Endpoints:

* ``POST /_sandbox/inbound`` inject an inbound email (``copies`` > 1 = duplicate storm)
* ``GET /_sandbox/deliveries`` and ``GET /_sandbox/deliveries/{id}``
* ``POST /_sandbox/deliveries/{id}/redeliver`` same body again, same or new svix-id/event_id
* ``GET /_sandbox/sent``, ``GET /_sandbox/label-changes``, ``GET /_sandbox/requests``
* ``GET|POST|DELETE /_sandbox/faults``
* ``GET|POST /_sandbox/clock`` (``{"advance_seconds": N}``)
* ``POST /_sandbox/reset``; ``GET /_sandbox/info``
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.sandbox import events, mail
from service.sandbox.api import error_response
from service.sandbox.clock import isoformat
from service.sandbox.errors import ApiError, invalid, not_found
from service.sandbox.faults import ANY_OPERATION, OPERATIONS
from service.sandbox.reports import InjectResult, RedeliverResult
from service.sandbox.state import Sandbox
from service.sandbox.validation import Body, parse_json_body

PREFIX = "/_sandbox"
Endpoint = Callable[[Request], Awaitable[Response]]


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


async def _json(request: Request) -> Any:
    return parse_json_body(await request.body())


def _endpoint(fn: Callable[[Request], Awaitable[Any]]) -> Endpoint:
    """Wrap a handler returning JSON data; ApiErrors become documented error bodies."""

    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await fn(request))
        except ApiError as error:
            return error_response(error)

    endpoint.__name__ = fn.__name__
    return endpoint


async def info(request: Request) -> dict[str, Any]:
    """What this sandbox was started with."""
    sandbox = _sandbox(request)
    return {
        "api_keys": sorted(sandbox.api_keys),
        "inboxes": list(sandbox.inboxes),
        "initial_inboxes": sandbox.initial_inbox_ids,
        "time_scale": sandbox.deliverer.time_scale,
        "attempt_timeout": sandbox.deliverer.attempt_timeout,
        "operations": list(OPERATIONS),
        "now": isoformat(sandbox.clock.now()),
    }


async def inbound(request: Request) -> InjectResult:
    """Store an inbound email and deliver its event to the matching webhooks."""
    sandbox = _sandbox(request)
    injected = mail.inject(sandbox, await _json(request))
    return {
        "message_id": injected.message.message_id,
        "thread_id": injected.message.thread_id,
        "inbox_id": injected.message.inbox_id,
        "event_id": injected.event_id,
        "deliveries": injected.deliveries,
    }


async def deliveries(request: Request) -> list[Any]:
    """Every delivery with its attempts, oldest first."""
    return [d.report() for d in _sandbox(request).deliverer.deliveries.values()]


async def delivery(request: Request) -> Any:
    """One delivery with its attempts."""
    found = _sandbox(request).deliverer.deliveries.get(request.path_params["delivery_id"])
    if found is None:
        raise not_found("Delivery")
    return found.report()


async def redeliver(request: Request) -> RedeliverResult:
    """Send a past delivery's body again to its webhook."""
    sandbox = _sandbox(request)
    original = sandbox.deliverer.deliveries.get(request.path_params["delivery_id"])
    if original is None:
        raise not_found("Delivery")
    body = Body(await _json(request))
    copies = body.integer("copies", minimum=1) or 1
    new_svix_id = bool(body.boolean("new_svix_id"))
    new_event_id = bool(body.boolean("new_event_id"))
    body.finish()
    if original.webhook_id not in sandbox.webhooks:
        raise ApiError(409, f"Webhook {original.webhook_id} was deleted", "conflict")
    event_id, refs = events.redeliver(
        sandbox, original, copies=copies, new_svix_id=new_svix_id, new_event_id=new_event_id
    )
    return {"event_id": event_id, "deliveries": refs}


async def sent(request: Request) -> list[Any]:
    """Every email actually sent, oldest first."""
    return list(_sandbox(request).sent)


async def label_changes(request: Request) -> list[Any]:
    """Every successful label PATCH, oldest first."""
    return list(_sandbox(request).label_changes)


async def requests_(request: Request) -> Any:
    """API call counts per operation and status, and the calls in flight."""
    return _sandbox(request).requests_report()


async def faults_list(request: Request) -> list[Any]:
    """The installed faults."""
    return [f.report() for f in _sandbox(request).faults.list()]


async def faults_add(request: Request) -> Any:
    """Install a fault (see :mod:`service.sandbox.faults`)."""
    body = Body(await _json(request))
    operation = body.string("operation", required=True)
    if operation is not None and operation not in (*OPERATIONS, ANY_OPERATION):
        body.error("operation", f"unknown operation; one of {', '.join(OPERATIONS)} or *")
    status = body.integer("status")
    if status is not None and not 400 <= status <= 599:
        body.error("status", "must be an HTTP error status (400-599)")
    rate = body.number("rate", minimum=0.0)
    if rate is not None and rate > 1:
        body.error("rate", "must be between 0 and 1")
    times = body.integer("times", minimum=0)
    retry_after = body.integer("retry_after", minimum=0)
    latency_ms = body.integer("latency_ms", minimum=0) or 0
    after_send = bool(body.boolean("after_send"))
    body.finish()
    assert operation is not None
    fault = _sandbox(request).faults.add(
        operation,
        status=status,
        rate=1.0 if rate is None else rate,
        times=times,
        retry_after=retry_after,
        latency_ms=latency_ms,
        after_send=after_send,
    )
    return fault.report()


async def faults_clear(request: Request) -> Any:
    """Remove every fault."""
    _sandbox(request).faults.clear()
    return {"faults": []}


async def clock_get(request: Request) -> Any:
    """The sandbox time and how far it was advanced."""
    clock = _sandbox(request).clock
    return {"now": isoformat(clock.now()), "offset_seconds": clock.offset_seconds}


async def clock_advance(request: Request) -> Any:
    """Move the sandbox clock by ``advance_seconds``."""
    body = Body(await _json(request))
    seconds = body.number("advance_seconds")
    if seconds is None and not body.errors:
        raise invalid("advance_seconds", "is required")
    body.finish()
    assert seconds is not None
    clock = _sandbox(request).clock
    clock.advance(seconds)
    return {"now": isoformat(clock.now()), "offset_seconds": clock.offset_seconds}


async def reset(request: Request) -> Any:
    """Back to the initial state."""
    sandbox = _sandbox(request)
    await sandbox.reset()
    return {"inboxes": list(sandbox.inboxes)}


def admin_routes() -> list[Route]:
    """The ``/_sandbox`` routes."""
    return [
        Route(f"{PREFIX}/info", _endpoint(info), methods=["GET"]),
        Route(f"{PREFIX}/inbound", _endpoint(inbound), methods=["POST"]),
        Route(f"{PREFIX}/deliveries", _endpoint(deliveries), methods=["GET"]),
        Route(f"{PREFIX}/deliveries/{{delivery_id}}", _endpoint(delivery), methods=["GET"]),
        Route(
            f"{PREFIX}/deliveries/{{delivery_id}}/redeliver",
            _endpoint(redeliver),
            methods=["POST"],
        ),
        Route(f"{PREFIX}/sent", _endpoint(sent), methods=["GET"]),
        Route(f"{PREFIX}/label-changes", _endpoint(label_changes), methods=["GET"]),
        Route(f"{PREFIX}/requests", _endpoint(requests_), methods=["GET"]),
        Route(f"{PREFIX}/faults", _endpoint(faults_list), methods=["GET"]),
        Route(f"{PREFIX}/faults", _endpoint(faults_add), methods=["POST"]),
        Route(f"{PREFIX}/faults", _endpoint(faults_clear), methods=["DELETE"]),
        Route(f"{PREFIX}/clock", _endpoint(clock_get), methods=["GET"]),
        Route(f"{PREFIX}/clock", _endpoint(clock_advance), methods=["POST"]),
        Route(f"{PREFIX}/reset", _endpoint(reset), methods=["POST"]),
    ]
