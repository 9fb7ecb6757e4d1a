"""Bounces and complaints about a message an inbox sent, as the receiving side reports them.

``POST /_sandbox/bounce`` and ``POST /_sandbox/complaint`` take ``{inbox_id, message_id}``
of a **sent** message and fire ``message.bounced`` / ``message.complained`` to the
matching webhooks, shaped as the SDK's ``MessageBouncedEvent`` / ``MessageComplainedEvent``
(``bounce`` / ``complaint``: ``inbox_id``, ``thread_id``, ``message_id``, ``timestamp``,
``type``, ``sub_type``, ``recipients``). A bounce's recipients are ``{address, status}``
objects, a complaint's plain addresses. Each call is a new event (new ``event_id``); to
deliver one event twice, redeliver its delivery.

Defaults follow AgentMail's documented examples: a bounce is ``Permanent``/``General``
with status ``bounced``, a complaint ``abuse``/``spam``; the recipients default to every
recipient of the message, and any given must be among them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.sandbox import events, inboxes
from service.sandbox.clock import isoformat
from service.sandbox.errors import ApiError
from service.sandbox.mail import find_message
from service.sandbox.models import MessageRecord
from service.sandbox.reports import DeliveryRef
from service.sandbox.validation import Body, email_of

if TYPE_CHECKING:
    from service.sandbox.state import Sandbox

BOUNCED = "message.bounced"
COMPLAINED = "message.complained"

#: The defaults of each kind: event type, the payload's object, ``type``, ``sub_type``.
_KINDS = {
    BOUNCED: ("bounce", "Permanent", "General"),
    COMPLAINED: ("complaint", "abuse", "spam"),
}


@dataclass(frozen=True, slots=True)
class Reported:
    """What one bounce or complaint fired."""

    event_id: str
    event_type: str
    message_id: str
    recipients: list[str]
    deliveries: list[DeliveryRef]


def report(sandbox: Sandbox, event_type: str, data: Any) -> Reported:
    """Fire ``event_type`` (``message.bounced`` or ``message.complained``) for a sent message."""
    name, default_type, default_sub_type = _KINDS[event_type]
    body = Body(data)
    inbox_id = body.string("inbox_id", required=True)
    message_id = body.string("message_id", required=True)
    type_ = body.string("type") or default_type
    sub_type = body.string("sub_type") or default_sub_type
    recipients = body.addresses("recipients")
    status = body.string("status") or "bounced"
    if event_type == COMPLAINED and body.present("status"):
        body.error("status", "only a bounce has a recipient status")
    body.finish()
    assert inbox_id is not None
    assert message_id is not None
    message = find_message(sandbox, inbox_id, message_id)
    if not message.is_sent:
        raise ApiError(422, f"Message {message_id} was not sent by this inbox", "unprocessable")
    chosen = _recipients(message, recipients)
    event_id = sandbox.ids.event_id()
    wire_recipients: list[Any] = (
        [{"address": address, "status": status} for address in chosen]
        if event_type == BOUNCED
        else chosen
    )
    payload = {
        "type": "event",
        "event_type": event_type,
        "event_id": event_id,
        name: {
            "inbox_id": message.inbox_id,
            "thread_id": message.thread_id,
            "message_id": message.message_id,
            "timestamp": isoformat(sandbox.clock.now()),
            "type": type_,
            "sub_type": sub_type,
            "recipients": wire_recipients,
        },
    }
    refs = events.fan_out(
        sandbox,
        inbox=inboxes.find(sandbox, message.inbox_id),
        event_type=event_type,
        event_id=event_id,
        body=events.encode(payload),
        message_id=message.message_id,
    )
    return Reported(event_id, event_type, message.message_id, chosen, refs)


def _recipients(message: MessageRecord, given: list[str] | None) -> list[str]:
    """The bare addresses the event names: ``given`` (each a recipient of the message)
    or, by default, every recipient."""
    own = [email_of(a) or a for a in [*message.to, *(message.cc or []), *(message.bcc or [])]]
    if given is None:
        return list(dict.fromkeys(own))
    chosen = []
    for index, address in enumerate(given):
        bare = email_of(address) or address
        if bare not in own:
            raise ApiError(
                422,
                f"recipients[{index}]: {address} is not a recipient of the message",
                "unprocessable",
            )
        chosen.append(bare)
    return list(dict.fromkeys(chosen))
