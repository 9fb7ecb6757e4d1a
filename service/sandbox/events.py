"""Webhook events: building the payloads and fanning them out to matching webhooks.

One event is one Svix message: it gets one ``event_id`` and one ``svix-id``, shared by
every webhook it goes to and by every copy of a duplicate storm (the relation between
the two ids is undocumented; this is the sandbox's reading of Svix). Each webhook and
copy is its own :class:`Delivery` with its own retries.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from service.sandbox.clock import isoformat
from service.sandbox.delivery import Delivery
from service.sandbox.models import InboxRecord, MessageRecord, thread_item_wire
from service.sandbox.reports import DeliveryRef

if TYPE_CHECKING:
    from service.sandbox.state import Sandbox

# AgentMail caps webhook payloads at 1 MB; above it the message bodies are left out.
PAYLOAD_CAP_BYTES = 1_000_000


def encode(event: dict[str, Any]) -> str:
    """The exact body string that is signed and sent."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def received_event(sandbox: Sandbox, message: MessageRecord, event_type: str, event_id: str) -> str:
    """A ``message.received*`` body: ``{type, event_type, event_id, message, thread}``."""
    thread = sandbox.threads[message.thread_id]
    event: dict[str, Any] = {
        "type": "event",
        "event_type": event_type,
        "event_id": event_id,
        "message": message.to_wire(),
        "thread": thread_item_wire(thread, sandbox.thread_messages(thread)),
    }
    body = encode(event)
    if len(body.encode("utf-8")) > PAYLOAD_CAP_BYTES:
        event["message"] = message.to_wire(with_bodies=False)
        body = encode(event)
    return body


def sent_event(message: MessageRecord, event_id: str) -> str:
    """A ``message.sent`` body: ``{type, event_type, event_id, send: {...}}``."""
    recipients = [*message.to, *(message.cc or []), *(message.bcc or [])]
    return encode(
        {
            "type": "event",
            "event_type": "message.sent",
            "event_id": event_id,
            "send": {
                "inbox_id": message.inbox_id,
                "thread_id": message.thread_id,
                "message_id": message.message_id,
                "timestamp": isoformat(message.timestamp),
                "recipients": recipients,
            },
        }
    )


def start(sandbox: Sandbox, delivery: Delivery) -> None:
    """Hand a delivery to the sender, or record it as ``dropped`` without any attempt
    while its webhook is in a drop window (see :meth:`Sandbox.dropping`)."""
    if sandbox.dropping(delivery.webhook_id):
        sandbox.deliverer.record(delivery, state="dropped")
    else:
        sandbox.deliverer.submit(delivery)


def fan_out(
    sandbox: Sandbox,
    *,
    inbox: InboxRecord,
    event_type: str,
    event_id: str,
    body: str,
    message_id: str | None,
    copies: int = 1,
    svix_id: str | None = None,
) -> list[DeliveryRef]:
    """Start one delivery per matching enabled webhook and copy; return their handles."""
    shared_svix_id = svix_id or sandbox.ids.svix_id()
    refs: list[DeliveryRef] = []
    for webhook in list(sandbox.webhooks.values()):
        if not webhook.matches(event_type, inbox):
            continue
        for _ in range(copies):
            delivery = Delivery(
                delivery_id=sandbox.ids.delivery_id(),
                svix_id=shared_svix_id,
                event_id=event_id,
                event_type=event_type,
                webhook_id=webhook.webhook_id,
                url=webhook.url,
                secret=webhook.secret,
                body=body,
                created_at=sandbox.clock.now(),
                inbox_id=inbox.inbox_id,
                message_id=message_id,
                extra_headers=dict(webhook.headers),
            )
            start(sandbox, delivery)
            refs.append(delivery.ref())
    return refs


def redeliver(
    sandbox: Sandbox,
    original: Delivery,
    *,
    copies: int,
    new_svix_id: bool,
    new_event_id: bool,
) -> tuple[str, list[DeliveryRef]]:
    """Send a past delivery's body again to the same webhook.

    The same body (same ``event_id``) under the same ``svix-id`` by default; a new
    ``svix-id`` if asked; with ``new_event_id`` the body gets a fresh ``event_id`` (a
    second event for the same message) and therefore a fresh ``svix-id`` too.
    """
    body = original.body
    event_id = original.event_id
    svix_id = original.svix_id
    if new_event_id:
        event = json.loads(body)
        event_id = sandbox.ids.event_id()
        event["event_id"] = event_id
        body = encode(event)
    if new_svix_id or new_event_id:
        svix_id = sandbox.ids.svix_id()
    webhook = sandbox.webhooks.get(original.webhook_id)
    refs: list[DeliveryRef] = []
    for _ in range(copies):
        delivery = Delivery(
            delivery_id=sandbox.ids.delivery_id(),
            svix_id=svix_id,
            event_id=event_id,
            event_type=original.event_type,
            webhook_id=original.webhook_id,
            url=original.url,
            secret=original.secret,
            body=body,
            created_at=sandbox.clock.now(),
            inbox_id=original.inbox_id,
            message_id=original.message_id,
            extra_headers=dict(webhook.headers) if webhook else dict(original.extra_headers),
        )
        start(sandbox, delivery)
        refs.append(delivery.ref())
    return event_id, refs
