"""The admin API under ``/_sandbox/`` (no auth): inject mail, inject faults, read back.

Endpoints:

* ``POST /_sandbox/inbound`` inject an inbound email (``copies`` > 1 = duplicate storm)
* ``POST /_sandbox/reply`` answer a message in its thread as a person would (a sent reply
  from the inbox, with its ``message.sent`` event)
* ``GET /_sandbox/deliveries`` and ``GET /_sandbox/deliveries/{id}``
* ``POST /_sandbox/deliveries/{id}/redeliver`` same body again, same or new svix-id/event_id
* ``POST /_sandbox/bounce``, ``POST /_sandbox/complaint``: a sent message bounces, or a
  recipient reports it as spam (``message.bounced`` / ``message.complained``)
* ``GET /_sandbox/sent``, ``GET /_sandbox/label-changes``, ``GET /_sandbox/requests``
* ``GET|POST|DELETE /_sandbox/faults``
* ``GET /_sandbox/webhooks``; ``POST /_sandbox/webhooks/{id}/disable``;
  ``DELETE /_sandbox/webhooks/{id}``; ``POST|DELETE /_sandbox/webhooks/{id}/drop``:
  the missed-webhook situations (disabled, deleted, deliveries dropped for a while)
* ``GET /_sandbox/drafts``; ``POST /_sandbox/drafts/{id}/send``; ``DELETE /_sandbox/drafts/{id}``:
  what a person does in AgentMail's console (review, approve, discard a draft)
* ``GET|POST /_sandbox/clock`` (``{"advance_seconds": N}`` or ``{"now": ISO-8601}``)
* ``POST /_sandbox/reset``; ``GET /_sandbox/info``
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.sandbox import drafts, events, feedback, mail, webhooks
from service.sandbox.api import error_response
from service.sandbox.clock import isoformat
from service.sandbox.errors import ApiError, not_found
from service.sandbox.faults import ANY_OPERATION, OPERATIONS
from service.sandbox.models import WebhookRecord
from service.sandbox.reports import FeedbackResult, InjectResult, PersonReply, RedeliverResult
from service.sandbox.state import Sandbox
from service.sandbox.validation import Body, parse_datetime, parse_json_body

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


async def _feedback(request: Request, event_type: str) -> FeedbackResult:
    reported = feedback.report(_sandbox(request), event_type, await _json(request))
    return {
        "event_id": reported.event_id,
        "event_type": reported.event_type,
        "message_id": reported.message_id,
        "recipients": reported.recipients,
        "deliveries": reported.deliveries,
    }


async def bounce(request: Request) -> FeedbackResult:
    """A sent message bounced: fire ``message.bounced`` (see :mod:`service.sandbox.feedback`)."""
    return await _feedback(request, feedback.BOUNCED)


async def complaint(request: Request) -> FeedbackResult:
    """A recipient reported a sent message as spam: fire ``message.complained``."""
    return await _feedback(request, feedback.COMPLAINED)


async def reply(request: Request) -> PersonReply:
    """Reply to a message (or a thread's newest received one) as a person would."""
    message = mail.reply_as_person(_sandbox(request), await _json(request))
    return {
        "message_id": message.message_id,
        "thread_id": message.thread_id,
        "inbox_id": message.inbox_id,
        "in_reply_to": message.in_reply_to or "",
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


def _webhook(request: Request) -> WebhookRecord:
    found = _sandbox(request).webhooks.get(request.path_params["webhook_id"])
    if found is None:
        raise not_found("Webhook")
    return found


def _webhook_report(sandbox: Sandbox, webhook: WebhookRecord) -> dict[str, Any]:
    until = sandbox.drops.get(webhook.webhook_id)
    dropping = sandbox.dropping(webhook.webhook_id)
    return {
        **webhook.to_wire(),
        "dropping": dropping,
        "drop_until": isoformat(until) if dropping and until is not None else None,
    }


async def webhooks_list(request: Request) -> list[Any]:
    """Every webhook, org-level and inbox-scoped, oldest first, with its drop window."""
    sandbox = _sandbox(request)
    return [_webhook_report(sandbox, w) for w in sandbox.webhooks.values()]


async def webhook_disable(request: Request) -> Any:
    """Disable a webhook as AgentMail does after repeated failures: ``enabled`` false, its
    pending deliveries end as ``cancelled`` and later events are not delivered to it (nor
    redelivered when it is enabled again)."""
    sandbox = _sandbox(request)
    webhook = _webhook(request)
    webhook.enabled = False
    webhook.updated_at = sandbox.clock.now()
    await sandbox.deliverer.end_pending(webhook.webhook_id, state="cancelled")
    return _webhook_report(sandbox, webhook)


async def webhook_delete(request: Request) -> Any:
    """Delete a webhook on whichever route it lives; pending deliveries end ``cancelled``."""
    sandbox = _sandbox(request)
    webhook = _webhook(request)
    webhooks.delete(sandbox, webhook.owner_inbox_id, webhook.webhook_id)
    sandbox.stop_dropping(webhook.webhook_id)
    await sandbox.deliverer.end_pending(webhook.webhook_id, state="cancelled")
    return {"webhook_id": webhook.webhook_id, "deleted": True}


async def webhook_drop(request: Request) -> Any:
    """Drop deliveries to a webhook for ``seconds`` of sandbox time, or until cleared."""
    sandbox = _sandbox(request)
    webhook = _webhook(request)
    body = Body(await _json(request))
    seconds = body.number("seconds", minimum=0.0)
    body.finish()
    await sandbox.drop_deliveries(webhook.webhook_id, seconds)
    return _webhook_report(sandbox, webhook)


async def webhook_undrop(request: Request) -> Any:
    """End a webhook's drop window now."""
    sandbox = _sandbox(request)
    webhook = _webhook(request)
    sandbox.stop_dropping(webhook.webhook_id)
    return _webhook_report(sandbox, webhook)


async def drafts_list(request: Request) -> list[Any]:
    """Every draft of every inbox (the full ``Draft`` shape), oldest first."""
    found = sorted(_sandbox(request).drafts.values(), key=lambda d: (d.created_at, d.seq))
    return [d.to_wire() for d in found]


async def draft_send(request: Request) -> Any:
    """Send a draft as a person would from the console: ``{message_id, thread_id}``,
    ``message.sent`` fires, the draft is deleted (404 if it is gone already)."""
    sandbox = _sandbox(request)
    draft = drafts.find(sandbox, None, request.path_params["draft_id"])
    return drafts.send(sandbox, draft.inbox_id, draft.draft_id, {}, idempotency_key=None)


async def draft_delete(request: Request) -> Any:
    """Discard a draft as a person would from the console (404 if it is gone already)."""
    sandbox = _sandbox(request)
    draft = drafts.find(sandbox, None, request.path_params["draft_id"])
    drafts.delete(sandbox, draft.inbox_id, draft.draft_id)
    return {"draft_id": draft.draft_id, "deleted": True}


async def clock_get(request: Request) -> Any:
    """The sandbox time and how far it was advanced."""
    clock = _sandbox(request).clock
    return {"now": isoformat(clock.now()), "offset_seconds": clock.offset_seconds}


async def clock_advance(request: Request) -> Any:
    """Move the sandbox clock by ``advance_seconds`` (may be negative) or to ``now``."""
    body = Body(await _json(request))
    seconds = body.number("advance_seconds")
    raw_now = body.string("now")
    moment = parse_datetime(raw_now) if raw_now is not None else None
    if raw_now is not None and moment is None:
        body.error("now", "must be an ISO-8601 date-time")
    if (seconds is None) == (raw_now is None) and not body.errors:
        body.error("advance_seconds", "give exactly one of advance_seconds and now")
    body.finish()
    clock = _sandbox(request).clock
    if moment is not None:
        clock.set(moment)
    elif seconds is not None:
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
        Route(f"{PREFIX}/bounce", _endpoint(bounce), methods=["POST"]),
        Route(f"{PREFIX}/complaint", _endpoint(complaint), methods=["POST"]),
        Route(f"{PREFIX}/reply", _endpoint(reply), methods=["POST"]),
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
        Route(f"{PREFIX}/webhooks", _endpoint(webhooks_list), methods=["GET"]),
        Route(f"{PREFIX}/webhooks/{{webhook_id}}", _endpoint(webhook_delete), methods=["DELETE"]),
        Route(
            f"{PREFIX}/webhooks/{{webhook_id}}/disable",
            _endpoint(webhook_disable),
            methods=["POST"],
        ),
        Route(f"{PREFIX}/webhooks/{{webhook_id}}/drop", _endpoint(webhook_drop), methods=["POST"]),
        Route(
            f"{PREFIX}/webhooks/{{webhook_id}}/drop", _endpoint(webhook_undrop), methods=["DELETE"]
        ),
        Route(f"{PREFIX}/drafts", _endpoint(drafts_list), methods=["GET"]),
        Route(f"{PREFIX}/drafts/{{draft_id}}/send", _endpoint(draft_send), methods=["POST"]),
        Route(f"{PREFIX}/drafts/{{draft_id}}", _endpoint(draft_delete), methods=["DELETE"]),
        Route(f"{PREFIX}/clock", _endpoint(clock_get), methods=["GET"]),
        Route(f"{PREFIX}/clock", _endpoint(clock_advance), methods=["POST"]),
        Route(f"{PREFIX}/reset", _endpoint(reset), methods=["POST"]),
    ]
