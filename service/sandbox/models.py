"""Stored records (inboxes, webhooks, messages, threads) and their wire shapes.

Each ``to_wire`` method produces exactly the JSON the SDK's pydantic model of the same
name expects (``Inbox``, ``Webhook``, ``Message``, ``MessageItem``, ``ThreadItem``):
required fields always present, optional ones left out when they have no value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.sandbox.clock import isoformat

# Labels the system sets; clients may not add or remove them (docs: threads; [I] messages).
SYSTEM_LABELS = frozenset(
    {"received", "sent", "bounced", "spam", "blocked", "unauthenticated", "scheduled"}
)

RECEIVED_EVENT_TYPES = (
    "message.received",
    "message.received.spam",
    "message.received.blocked",
    "message.received.unauthenticated",
)

# The label each message.received variant puts on the stored message.
VARIANT_LABELS = {
    "message.received.spam": "spam",
    "message.received.blocked": "blocked",
    "message.received.unauthenticated": "unauthenticated",
}

# Labels that hide a message from list results unless the matching include_* flag is set.
HIDDEN_LABELS = {
    "spam": "include_spam",
    "blocked": "include_blocked",
    "unauthenticated": "include_unauthenticated",
    "trash": "include_trash",
}

DEFAULT_POD_ID = "pod_sandbox"


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set an optional wire field only when it has a value."""
    if value is not None:
        target[key] = value


@dataclass
class InboxRecord:
    """An inbox; its id is its e-mail address."""

    inbox_id: str
    pod_id: str
    created_at: datetime
    updated_at: datetime
    display_name: str | None = None
    client_id: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def email(self) -> str:
        """The inbox address (the same string as the id)."""
        return self.inbox_id

    @property
    def from_address(self) -> str:
        """The ``From`` value of mail sent by this inbox."""
        if self.display_name:
            return f"{self.display_name} <{self.inbox_id}>"
        return self.inbox_id

    def to_wire(self) -> dict[str, Any]:
        """The SDK ``Inbox`` shape."""
        wire: dict[str, Any] = {
            "pod_id": self.pod_id,
            "inbox_id": self.inbox_id,
            "email": self.email,
        }
        _put(wire, "display_name", self.display_name)
        _put(wire, "client_id", self.client_id)
        _put(wire, "metadata", self.metadata)
        wire["updated_at"] = isoformat(self.updated_at)
        wire["created_at"] = isoformat(self.created_at)
        return wire


@dataclass
class WebhookRecord:
    """A webhook (a Svix endpoint): org-level, or owned by one inbox."""

    webhook_id: str
    url: str
    event_types: list[str]
    secret: str
    created_at: datetime
    updated_at: datetime
    enabled: bool = True
    inbox_ids: list[str] | None = None
    pod_ids: list[str] | None = None
    owner_inbox_id: str | None = None
    client_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def scope(self) -> str:
        """The route a webhook lives under: ``org`` or ``inbox:<id>``; client_ids are per scope."""
        return f"inbox:{self.owner_inbox_id}" if self.owner_inbox_id else "org"

    def matches(self, event_type: str, inbox: InboxRecord) -> bool:
        """Whether an event of this type about this inbox goes to this webhook."""
        if not self.enabled or event_type not in self.event_types:
            return False
        if self.owner_inbox_id is not None:
            return self.owner_inbox_id == inbox.inbox_id
        if not self.inbox_ids and not self.pod_ids:
            return True
        return inbox.inbox_id in (self.inbox_ids or []) or inbox.pod_id in (self.pod_ids or [])

    def to_wire(self) -> dict[str, Any]:
        """The SDK ``Webhook`` shape (custom header values are write-only, never returned)."""
        wire: dict[str, Any] = {
            "webhook_id": self.webhook_id,
            "url": self.url,
            "event_types": list(self.event_types),
        }
        _put(wire, "pod_ids", list(self.pod_ids) if self.pod_ids else None)
        _put(wire, "inbox_ids", list(self.inbox_ids) if self.inbox_ids else None)
        _put(wire, "inbox_id", self.owner_inbox_id)
        wire["secret"] = self.secret
        wire["enabled"] = self.enabled
        wire["updated_at"] = isoformat(self.updated_at)
        wire["created_at"] = isoformat(self.created_at)
        _put(wire, "client_id", self.client_id)
        return wire


@dataclass
class MessageRecord:
    """One message as stored in one inbox (a sent mail and its inbound copy are two records).

    ``seq`` orders messages that share a millisecond timestamp.
    """

    inbox_id: str
    thread_id: str
    message_id: str
    labels: list[str]
    timestamp: datetime
    from_: str
    to: list[str]
    size: int
    created_at: datetime
    updated_at: datetime
    reply_to: list[str] | None = None
    cc: list[str] | None = None
    bcc: list[str] | None = None
    subject: str | None = None
    preview: str | None = None
    text: str | None = None
    html: str | None = None
    extracted_text: str | None = None
    extracted_html: str | None = None
    attachments: list[dict[str, Any]] | None = None
    in_reply_to: str | None = None
    references: list[str] | None = None
    headers: dict[str, str] | None = None
    seq: int = 0

    @property
    def is_sent(self) -> bool:
        """Whether the inbox sent this message (rather than received it)."""
        return "sent" in self.labels

    def to_item_wire(self) -> dict[str, Any]:
        """The SDK ``MessageItem`` shape (no reply_to, bodies or extracted bodies)."""
        wire: dict[str, Any] = {
            "inbox_id": self.inbox_id,
            "thread_id": self.thread_id,
            "message_id": self.message_id,
            "labels": list(self.labels),
            "timestamp": isoformat(self.timestamp),
            "from": self.from_,
            "to": list(self.to),
        }
        _put(wire, "cc", list(self.cc) if self.cc else None)
        _put(wire, "bcc", list(self.bcc) if self.bcc else None)
        _put(wire, "subject", self.subject)
        _put(wire, "preview", self.preview)
        _put(wire, "attachments", self.attachments)
        _put(wire, "in_reply_to", self.in_reply_to)
        _put(wire, "references", list(self.references) if self.references else None)
        _put(wire, "headers", dict(self.headers) if self.headers is not None else None)
        wire["size"] = self.size
        wire["updated_at"] = isoformat(self.updated_at)
        wire["created_at"] = isoformat(self.created_at)
        return wire

    def to_wire(self, *, with_bodies: bool = True) -> dict[str, Any]:
        """The SDK ``Message`` shape; ``with_bodies=False`` drops the four body fields."""
        wire: dict[str, Any] = {}
        for key, value in self.to_item_wire().items():
            wire[key] = value
            if key == "from":
                _put(wire, "reply_to", list(self.reply_to) if self.reply_to else None)
        if with_bodies:
            _put(wire, "text", self.text)
            _put(wire, "html", self.html)
            _put(wire, "extracted_text", self.extracted_text)
            _put(wire, "extracted_html", self.extracted_html)
        return wire


@dataclass
class ThreadRecord:
    """A conversation inside one inbox: the ids of its messages, oldest first."""

    inbox_id: str
    thread_id: str
    created_at: datetime
    message_ids: list[str] = field(default_factory=list)


def _unique(values: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        seen.setdefault(value, None)
    return list(seen)


def thread_item_wire(thread: ThreadRecord, messages: list[MessageRecord]) -> dict[str, Any]:
    """The SDK ``ThreadItem`` shape, derived from the thread's messages (oldest first)."""
    last = messages[-1]
    received = [m.timestamp for m in messages if not m.is_sent]
    sent = [m.timestamp for m in messages if m.is_sent]
    attachments = [a for m in messages for a in (m.attachments or [])]
    wire: dict[str, Any] = {
        "inbox_id": thread.inbox_id,
        "thread_id": thread.thread_id,
        "labels": _unique([label for m in messages for label in m.labels]),
        "timestamp": isoformat(max(m.timestamp for m in messages)),
    }
    _put(wire, "received_timestamp", isoformat(max(received)) if received else None)
    _put(wire, "sent_timestamp", isoformat(max(sent)) if sent else None)
    wire["senders"] = _unique([m.from_ for m in messages])
    wire["recipients"] = _unique([r for m in messages for r in [*m.to, *(m.cc or [])]])
    _put(wire, "subject", messages[0].subject)
    _put(wire, "preview", last.preview)
    _put(wire, "attachments", attachments or None)
    wire["last_message_id"] = last.message_id
    wire["message_count"] = len(messages)
    wire["size"] = sum(m.size for m in messages)
    wire["updated_at"] = isoformat(max(m.updated_at for m in messages))
    wire["created_at"] = isoformat(thread.created_at)
    return wire


@dataclass
class DraftRecord:
    """An unsent message in one inbox: plain, a reply (``in_reply_to``) or a forward.

    ``labels`` are the caller's own; ``scheduled`` is added on the wire while ``send_at``
    is set (docs: drafts). ``seq`` orders drafts updated in the same millisecond.
    """

    inbox_id: str
    draft_id: str
    labels: list[str]
    created_at: datetime
    updated_at: datetime
    client_id: str | None = None
    reply_to: list[str] | None = None
    to: list[str] | None = None
    cc: list[str] | None = None
    bcc: list[str] | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    attachments: list[dict[str, Any]] | None = None
    in_reply_to: str | None = None
    forward_of: str | None = None
    references: list[str] | None = None
    send_at: datetime | None = None
    send_status: str | None = None
    seq: int = 0

    @property
    def wire_labels(self) -> list[str]:
        """The labels as the API shows them: the caller's, plus ``scheduled`` when due later."""
        extra = ["scheduled"] if self.send_at is not None else []
        return list(dict.fromkeys([*self.labels, *extra]))

    @property
    def preview(self) -> str | None:
        """The first 200 characters of the text body, whitespace collapsed."""
        if not self.text:
            return None
        return " ".join(self.text.split())[:200] or None

    def to_item_wire(self) -> dict[str, Any]:
        """The SDK ``DraftItem`` shape (list results: no bodies, reply_to or client_id)."""
        wire: dict[str, Any] = {
            "inbox_id": self.inbox_id,
            "draft_id": self.draft_id,
            "labels": self.wire_labels,
        }
        _put(wire, "to", list(self.to) if self.to else None)
        _put(wire, "cc", list(self.cc) if self.cc else None)
        _put(wire, "bcc", list(self.bcc) if self.bcc else None)
        _put(wire, "subject", self.subject)
        _put(wire, "preview", self.preview)
        _put(wire, "attachments", self.attachments)
        _put(wire, "in_reply_to", self.in_reply_to)
        _put(wire, "forward_of", self.forward_of)
        _put(wire, "send_status", self.send_status)
        _put(wire, "send_at", isoformat(self.send_at) if self.send_at else None)
        wire["updated_at"] = isoformat(self.updated_at)
        return wire

    def to_wire(self) -> dict[str, Any]:
        """The SDK ``Draft`` shape."""
        wire: dict[str, Any] = {
            "inbox_id": self.inbox_id,
            "draft_id": self.draft_id,
        }
        _put(wire, "client_id", self.client_id)
        wire["labels"] = self.wire_labels
        _put(wire, "reply_to", list(self.reply_to) if self.reply_to else None)
        _put(wire, "to", list(self.to) if self.to else None)
        _put(wire, "cc", list(self.cc) if self.cc else None)
        _put(wire, "bcc", list(self.bcc) if self.bcc else None)
        _put(wire, "subject", self.subject)
        _put(wire, "preview", self.preview)
        _put(wire, "text", self.text)
        _put(wire, "html", self.html)
        _put(wire, "attachments", self.attachments)
        _put(wire, "in_reply_to", self.in_reply_to)
        _put(wire, "forward_of", self.forward_of)
        _put(wire, "references", list(self.references) if self.references else None)
        _put(wire, "send_status", self.send_status)
        _put(wire, "send_at", isoformat(self.send_at) if self.send_at else None)
        wire["updated_at"] = isoformat(self.updated_at)
        wire["created_at"] = isoformat(self.created_at)
        return wire
