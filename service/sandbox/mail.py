"""Messages and threads: storing mail, sending, replying, labels, listing and injection.

Sending stores the message in the sending inbox (labels ``sent`` + the body's labels),
logs it to the sent log and fires ``message.sent``. When a recipient is another sandbox
inbox, the mail is also stored there as inbound (``received`` + ``unread``) and fires
``message.received``, so two sandbox inboxes can write to each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from service.sandbox import events, inboxes
from service.sandbox.clock import isoformat
from service.sandbox.errors import ApiError, FieldError, invalid, not_found
from service.sandbox.models import (
    HIDDEN_LABELS,
    RECEIVED_EVENT_TYPES,
    SYSTEM_LABELS,
    VARIANT_LABELS,
    InboxRecord,
    MessageRecord,
    ThreadRecord,
    thread_item_wire,
)
from service.sandbox.paging import keyset_page, page
from service.sandbox.reports import DeliveryRef
from service.sandbox.validation import Body, email_of

if TYPE_CHECKING:
    from service.sandbox.state import Sandbox

PREVIEW_CHARS = 200
_QUOTE_INTRO = re.compile(r"^On .+ wrote:\s*$")
_WHITESPACE = re.compile(r"\s+")


# -- building and storing ---------------------------------------------------------


def _preview(text: str | None) -> str | None:
    if not text:
        return None
    return _WHITESPACE.sub(" ", text).strip()[:PREVIEW_CHARS] or None


def _extract(text: str | None) -> str | None:
    """The new part of a plain-text body: stops at a quote intro, drops ``>`` lines."""
    if text is None:
        return None
    kept: list[str] = []
    for line in text.splitlines():
        if _QUOTE_INTRO.match(line.strip()):
            break
        if not line.lstrip().startswith(">"):
            kept.append(line)
    return "\n".join(kept).strip()


def _size(headers: dict[str, str], text: str | None, html: str | None) -> int:
    head = sum(len(f"{k}: {v}\r\n".encode()) for k, v in headers.items())
    return head + 2 + len((text or "").encode()) + len((html or "").encode())


@dataclass
class Draft:
    """Everything needed to store one message, before it has an inbox and thread."""

    message_id: str
    from_: str
    to: list[str]
    cc: list[str] | None = None
    bcc: list[str] | None = None
    reply_to: list[str] | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] | None = None
    in_reply_to: str | None = None
    references: list[str] | None = None
    attachments: list[dict[str, Any]] | None = None

    def full_headers(self, moment: datetime) -> dict[str, str]:
        """The RFC 5322 headers the message carries, then the caller's own headers."""
        headers = {
            "From": self.from_,
            "To": ", ".join(self.to),
            "Date": moment.strftime("%a, %d %b %Y %H:%M:%S +0000"),
            "Message-ID": self.message_id,
        }
        if self.cc:
            headers["Cc"] = ", ".join(self.cc)
        if self.reply_to:
            headers["Reply-To"] = ", ".join(self.reply_to)
        if self.subject is not None:
            headers["Subject"] = self.subject
        if self.in_reply_to:
            headers["In-Reply-To"] = self.in_reply_to
        if self.references:
            headers["References"] = " ".join(self.references)
        for name, value in (self.headers or {}).items():
            for existing in [k for k in headers if k.lower() == name.lower()]:
                del headers[existing]
            headers[name] = value
        return headers


def _thread_for(sandbox: Sandbox, inbox_id: str, draft: Draft) -> ThreadRecord | None:
    """The thread a new message joins: that of the message it replies to or references."""
    for candidate in [draft.in_reply_to, *reversed(draft.references or [])]:
        if candidate:
            parent = sandbox.messages.get((inbox_id, candidate))
            if parent is not None:
                return sandbox.threads[parent.thread_id]
    return None


def store(
    sandbox: Sandbox,
    inbox: InboxRecord,
    draft: Draft,
    labels: list[str],
    *,
    thread: ThreadRecord | None = None,
    include_bcc: bool = False,
) -> MessageRecord:
    """Store a message in an inbox, in ``thread`` or the thread it replies to, or a new one."""
    key = (inbox.inbox_id, draft.message_id)
    if key in sandbox.messages:
        raise ApiError(409, f"Message {draft.message_id} already exists", "already_exists")
    now = sandbox.clock.now()
    thread = thread or _thread_for(sandbox, inbox.inbox_id, draft)
    if thread is None:
        thread = ThreadRecord(
            inbox_id=inbox.inbox_id, thread_id=sandbox.ids.thread_id(), created_at=now
        )
        sandbox.threads[thread.thread_id] = thread
    headers = draft.full_headers(now)
    message = MessageRecord(
        inbox_id=inbox.inbox_id,
        thread_id=thread.thread_id,
        message_id=draft.message_id,
        labels=list(dict.fromkeys(labels)),
        timestamp=now,
        from_=draft.from_,
        to=list(draft.to),
        size=_size(headers, draft.text, draft.html),
        created_at=now,
        updated_at=now,
        reply_to=draft.reply_to,
        cc=draft.cc or None,
        bcc=(draft.bcc or None) if include_bcc else None,
        subject=draft.subject,
        preview=_preview(draft.text),
        text=draft.text,
        html=draft.html,
        extracted_text=_extract(draft.text),
        extracted_html=draft.html,
        attachments=draft.attachments,
        in_reply_to=draft.in_reply_to,
        references=draft.references or None,
        headers=headers,
        seq=sandbox.next_sequence(),
    )
    sandbox.messages[key] = message
    thread.message_ids.append(message.message_id)
    return message


def _fire_received(
    sandbox: Sandbox, inbox: InboxRecord, message: MessageRecord, event_type: str, copies: int
) -> tuple[str, list[DeliveryRef]]:
    event_id = sandbox.ids.event_id()
    body = events.received_event(sandbox, message, event_type, event_id)
    refs = events.fan_out(
        sandbox,
        inbox=inbox,
        event_type=event_type,
        event_id=event_id,
        body=body,
        message_id=message.message_id,
        copies=copies,
    )
    return event_id, refs


# -- injection (admin) ------------------------------------------------------------


@dataclass
class Injected:
    """What an injected inbound email created."""

    message: MessageRecord
    event_id: str
    deliveries: list[DeliveryRef]


def inject(sandbox: Sandbox, data: Any) -> Injected:
    """Store an inbound email and deliver its ``message.received*`` event."""
    body = Body(data)
    inbox_id = body.string("inbox_id")
    sender = body.string("from") or "sender@example.com"
    if email_of(sender) is None:
        body.error("from", f"invalid e-mail address {sender!r}")
    to = body.addresses("to")
    cc = body.addresses("cc")
    reply_to = body.addresses("reply_to")
    subject = body.string("subject")
    text = body.string("text")
    html = body.string("html")
    headers = body.string_map("headers", header_names=True)
    event_type = body.string("event_type") or "message.received"
    if event_type not in RECEIVED_EVENT_TYPES:
        body.error("event_type", f"must be one of {', '.join(RECEIVED_EVENT_TYPES)}")
    in_reply_to = body.string("in_reply_to")
    references = body.strings("references")
    labels = body.strings("labels") or []
    copies = body.integer("copies", minimum=1) or 1
    message_id = body.string("message_id")
    body.finish()

    inbox: InboxRecord | None = None
    if inbox_id is not None:
        inbox = inboxes.find(sandbox, inbox_id)
    else:
        for address in [*(to or []), *(cc or [])]:
            inbox = sandbox.inbox_for_address(address)
            if inbox is not None:
                break
        if inbox is None:
            raise invalid("to", "names no sandbox inbox; give inbox_id or a sandbox address")
    if references is None and in_reply_to:
        parent = sandbox.messages.get((inbox.inbox_id, in_reply_to))
        references = [*(parent.references or []), in_reply_to] if parent else [in_reply_to]

    draft = Draft(
        message_id=message_id or sandbox.ids.message_id(_domain_of(sender)),
        from_=sender,
        to=to or [inbox.inbox_id],
        cc=cc,
        reply_to=reply_to,
        subject=subject,
        text=text,
        html=html,
        headers=headers,
        in_reply_to=in_reply_to,
        references=references,
    )
    variant = VARIANT_LABELS.get(event_type)
    all_labels = ["received", "unread", *([variant] if variant else []), *labels]
    message = store(sandbox, inbox, draft, all_labels)
    event_id, refs = _fire_received(sandbox, inbox, message, event_type, copies)
    return Injected(message, event_id, refs)


def _domain_of(address: str) -> str:
    email = email_of(address) or "example.com"
    return email.rsplit("@", 1)[1]


# -- reading ----------------------------------------------------------------------


def find_message(sandbox: Sandbox, inbox_id: str, message_id: str) -> MessageRecord:
    """A message of an inbox, or a 404."""
    inbox = inboxes.find(sandbox, inbox_id)
    message = sandbox.messages.get((inbox.inbox_id, message_id))
    if message is None:
        raise not_found("Message")
    return message


def get(sandbox: Sandbox, inbox_id: str, message_id: str) -> dict[str, Any]:
    """The full ``Message``."""
    return find_message(sandbox, inbox_id, message_id).to_wire()


@dataclass
class PageQuery:
    """The query parameters every list shares (messages, threads, drafts)."""

    limit: int | None = None
    page_token: str | None = None
    labels: tuple[str, ...] = ()
    before: datetime | None = None
    after: datetime | None = None
    ascending: bool = False


@dataclass
class ListQuery(PageQuery):
    """Parsed query parameters of ``GET …/messages`` (and threads)."""

    include: frozenset[str] = frozenset()
    senders: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()


def _hidden(labels: list[str], include: frozenset[str]) -> bool:
    """Whether a label (spam, blocked, unauthenticated, trash) hides this from lists."""
    return any(label in labels and flag not in include for label, flag in HIDDEN_LABELS.items())


def in_window(moment: datetime, query: PageQuery) -> bool:
    """``before`` and ``after`` are both exclusive bounds on the timestamp."""
    if query.before is not None and not moment < query.before:
        return False
    return query.after is None or moment > query.after


def _listed(message: MessageRecord, query: ListQuery) -> bool:
    if not all(label in message.labels for label in query.labels):
        return False
    if _hidden(message.labels, query.include):
        return False
    if not in_window(message.timestamp, query):
        return False
    sender = message.from_.lower()
    if not all(value.lower() in sender for value in query.senders):
        return False
    recipients = " ".join([*message.to, *(message.cc or []), *(message.bcc or [])]).lower()
    if not all(value.lower() in recipients for value in query.recipients):
        return False
    subject = (message.subject or "").lower()
    return all(value.lower() in subject for value in query.subjects)


def _message_key(message: MessageRecord) -> tuple[datetime, int]:
    """The list order: timestamp, then arrival (``seq``) among equal timestamps."""
    return (message.timestamp, message.seq)


def list_(sandbox: Sandbox, inbox_id: str, query: ListQuery) -> dict[str, Any]:
    """``ListMessagesResponse``: matching messages, newest first unless ``ascending``."""
    inbox = inboxes.find(sandbox, inbox_id)
    found = [
        m
        for (owner, _), m in sandbox.messages.items()
        if owner == inbox.inbox_id and _listed(m, query)
    ]
    found.sort(key=_message_key, reverse=not query.ascending)
    items, wire = keyset_page(
        found,
        key=_message_key,
        ascending=query.ascending,
        limit=query.limit,
        page_token=query.page_token,
    )
    wire["messages"] = [m.to_item_wire() for m in items]
    return wire


# -- labels -----------------------------------------------------------------------


def update_labels(sandbox: Sandbox, inbox_id: str, message_id: str, data: Any) -> dict[str, Any]:
    """Add and remove labels in one atomic change; remove wins; system labels are refused."""
    message = find_message(sandbox, inbox_id, message_id)
    body = Body(data)
    add = body.one_or_many("add_labels") or []
    remove = body.one_or_many("remove_labels") or []
    errors: list[FieldError] = []
    for key, labels in (("add_labels", add), ("remove_labels", remove)):
        for index, label in enumerate(labels):
            if label.lower() in SYSTEM_LABELS:
                errors.append(
                    FieldError(f"{key}[{index}]", f"{label!r} is a system label and cannot change")
                )
    body.errors.extend(errors)
    body.finish()
    removed = set(remove)
    after = [label for label in dict.fromkeys([*message.labels, *add]) if label not in removed]
    message.labels = after
    message.updated_at = sandbox.clock.now()
    sandbox.label_changes.append(
        {
            "inbox_id": message.inbox_id,
            "message_id": message.message_id,
            "added": [label for label in dict.fromkeys(add) if label not in removed],
            "removed": list(dict.fromkeys(remove)),
            "labels_after": list(after),
            "at": isoformat(message.updated_at),
        }
    )
    return {"message_id": message.message_id, "labels": list(after)}


# -- sending ----------------------------------------------------------------------


@dataclass
class Outgoing:
    """A validated send/reply body."""

    to: list[str] | None
    cc: list[str] | None
    bcc: list[str] | None
    reply_to: list[str] | None
    subject: str | None
    text: str | None
    html: str | None
    labels: list[str]
    headers: dict[str, str] | None
    attachments: list[dict[str, Any]] | None
    reply_all: bool


def attachments_of(sandbox: Sandbox, body: Body) -> list[dict[str, Any]] | None:
    raw = body.data.get("attachments")
    if raw is None:
        return None
    if not isinstance(raw, list):
        body.error("attachments", "must be a list")
        return None
    found: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        part = Body(item, prefix=f"attachments[{index}].")
        filename = part.string("filename")
        content_type = part.string("content_type")
        disposition = part.string("content_disposition")
        content_id = part.string("content_id")
        content = part.string("content")
        url = part.string("url")
        if content is None and url is None:
            part.error("content", "either content (base64) or url is required")
        body.errors.extend(part.errors)
        attachment: dict[str, Any] = {
            "attachment_id": sandbox.ids.attachment_id(),
            "size": len(content or "") * 3 // 4,
        }
        for key, value in (
            ("filename", filename),
            ("content_type", content_type),
            ("content_disposition", disposition),
            ("content_id", content_id),
        ):
            if value is not None:
                attachment[key] = value
        found.append(attachment)
    return found


def parse_outgoing(sandbox: Sandbox, data: Any, *, operation: str) -> Outgoing:
    """Validate a send, reply or reply-all body (fields per the SDK request models)."""
    body = Body(data)
    allowed_recipients = operation != "messages.reply_all"
    to = body.addresses("to") if allowed_recipients else None
    cc = body.addresses("cc") if allowed_recipients else None
    bcc = body.addresses("bcc") if allowed_recipients else None
    if not allowed_recipients:
        body.reject("to", "cc", "bcc", reason="is not accepted by reply-all")
    reply_to = body.addresses("reply_to")
    subject = body.string("subject") if operation == "messages.send" else None
    if operation != "messages.send":
        body.reject("subject", reason="is taken from the original message")
    text = body.string("text")
    html = body.string("html")
    labels = body.strings("labels") or []
    for index, label in enumerate(labels):
        if label.lower() in SYSTEM_LABELS:
            body.error(f"labels[{index}]", f"{label!r} is a system label")
    headers = body.string_map("headers", header_names=True)
    attachments = attachments_of(sandbox, body)
    body.boolean("track_opens")
    reply_all = bool(body.boolean("reply_all")) if operation == "messages.reply" else False
    body.finish()
    return Outgoing(
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=subject,
        text=text,
        html=html,
        labels=labels,
        headers=headers,
        attachments=attachments,
        reply_all=reply_all or operation == "messages.reply_all",
    )


def without(addresses: list[str], *excluded: str) -> list[str]:
    """Addresses minus the excluded e-mails and duplicates, keeping the first spelling."""
    seen = {email_of(e) or e.lower() for e in excluded}
    kept: list[str] = []
    for address in addresses:
        email = email_of(address) or address.lower()
        if email not in seen:
            seen.add(email)
            kept.append(address)
    return kept


def reply_subject(subject: str | None) -> str:
    original = (subject or "").strip()
    if original.lower().startswith("re:"):
        return original
    return f"Re: {original}".rstrip()


def send(
    sandbox: Sandbox,
    inbox_id: str,
    outgoing: Outgoing,
    *,
    operation: str,
    original_id: str | None,
    idempotency_key: str | None,
) -> MessageRecord:
    """Send a new message, a reply or a reply-all; returns the stored sent message."""
    inbox = inboxes.find(sandbox, inbox_id)
    original: MessageRecord | None = None
    if original_id is not None:
        original = find_message(sandbox, inbox.inbox_id, original_id)

    to, cc, bcc = outgoing.to, outgoing.cc, outgoing.bcc
    subject = outgoing.subject
    in_reply_to: str | None = None
    references: list[str] | None = None
    thread: ThreadRecord | None = None
    if original is not None:
        senders = list(original.to) if original.is_sent else (original.reply_to or [original.from_])
        if outgoing.reply_all:
            if to is None:
                to = without([*senders, *original.to], inbox.inbox_id)
            if cc is None:
                cc = without(list(original.cc or []), inbox.inbox_id, *to)
        elif to is None:
            to = senders
        subject = reply_subject(original.subject)
        in_reply_to = original.message_id
        references = [*(original.references or []), original.message_id]
        thread = sandbox.threads[original.thread_id]

    if not (to or cc or bcc):
        raise ApiError(422, "A message needs at least one recipient", "unprocessable")

    draft = Draft(
        message_id=sandbox.ids.message_id(inbox.inbox_id.rsplit("@", 1)[1]),
        from_=inbox.from_address,
        to=list(to or []),
        cc=cc,
        bcc=bcc,
        reply_to=outgoing.reply_to,
        subject=subject,
        text=outgoing.text,
        html=outgoing.html,
        headers=outgoing.headers,
        in_reply_to=in_reply_to,
        references=references,
        attachments=outgoing.attachments,
    )
    return dispatch(
        sandbox,
        inbox,
        draft,
        ["sent", *outgoing.labels],
        thread=thread,
        operation=operation,
        idempotency_key=idempotency_key,
    )


def dispatch(
    sandbox: Sandbox,
    inbox: InboxRecord,
    draft: Draft,
    labels: list[str],
    *,
    thread: ThreadRecord | None,
    operation: str,
    idempotency_key: str | None,
    draft_id: str | None = None,
) -> MessageRecord:
    """Send a built message: store it as sent, log it, fire ``message.sent``, and store
    it as inbound in every other sandbox inbox it is addressed to. Shared by send,
    reply, reply-all and the sending of a draft."""
    message = store(sandbox, inbox, draft, labels, thread=thread, include_bcc=True)
    sandbox.sent.append(
        {
            "operation": operation,
            "inbox_id": inbox.inbox_id,
            "message_id": message.message_id,
            "thread_id": message.thread_id,
            "from": message.from_,
            "to": list(message.to),
            "cc": list(message.cc or []),
            "bcc": list(message.bcc or []),
            "reply_to": list(message.reply_to or []),
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
            "headers": dict(draft.headers or {}),
            "labels": list(message.labels),
            "in_reply_to": message.in_reply_to,
            "references": list(message.references or []),
            "idempotency_key": idempotency_key,
            "draft_id": draft_id,
            "at": isoformat(message.timestamp),
        }
    )
    _fire_sent(sandbox, inbox, message)
    _deliver_internally(sandbox, inbox, draft)
    return message


def _fire_sent(sandbox: Sandbox, inbox: InboxRecord, message: MessageRecord) -> None:
    event_id = sandbox.ids.event_id()
    events.fan_out(
        sandbox,
        inbox=inbox,
        event_type="message.sent",
        event_id=event_id,
        body=events.sent_event(message, event_id),
        message_id=message.message_id,
    )


def _deliver_internally(sandbox: Sandbox, sender: InboxRecord, draft: Draft) -> None:
    """Store the mail as inbound in every other sandbox inbox it is addressed to."""
    targets: dict[str, InboxRecord] = {}
    for address in [*draft.to, *(draft.cc or []), *(draft.bcc or [])]:
        inbox = sandbox.inbox_for_address(address)
        if inbox is not None and inbox.inbox_id != sender.inbox_id:
            targets.setdefault(inbox.inbox_id, inbox)
    for inbox in targets.values():
        if (inbox.inbox_id, draft.message_id) in sandbox.messages:
            continue
        message = store(sandbox, inbox, draft, ["received", "unread"])
        _fire_received(sandbox, inbox, message, "message.received", 1)


def reply_as_person(sandbox: Sandbox, data: Any) -> MessageRecord:
    """Answer a message in its thread as a person would in AgentMail's console: a reply
    from the inbox, through the same path as ``POST .../messages/{id}/reply`` (stored with
    ``sent``, logged as sent, ``message.sent`` fired), with no Idempotency-Key.

    ``message_id`` picks the message answered (``inbox_id`` when several inboxes hold
    it); ``thread_id`` instead answers the thread's newest received message.
    """
    body = Body(data)
    inbox_id = body.string("inbox_id")
    message_id = body.string("message_id")
    thread_id = body.string("thread_id")
    text = body.string("text")
    html = body.string("html")
    if (message_id is None) == (thread_id is None) and not body.errors:
        body.error("message_id", "give exactly one of message_id and thread_id")
    body.finish()
    original = _answered(sandbox, inbox_id, message_id, thread_id)
    outgoing = Outgoing(
        to=None,
        cc=None,
        bcc=None,
        reply_to=None,
        subject=None,
        text=text if text is not None or html is not None else "Thanks, I'm on it.",
        html=html,
        labels=[],
        headers=None,
        attachments=None,
        reply_all=False,
    )
    return send(
        sandbox,
        original.inbox_id,
        outgoing,
        operation="messages.reply",
        original_id=original.message_id,
        idempotency_key=None,
    )


def _answered(
    sandbox: Sandbox, inbox_id: str | None, message_id: str | None, thread_id: str | None
) -> MessageRecord:
    """The message a person's reply answers (see ``reply_as_person``)."""
    if thread_id is not None:
        thread = sandbox.threads.get(thread_id)
        if thread is None or (inbox_id is not None and thread.inbox_id != inbox_id.lower()):
            raise not_found("Thread")
        received = [m for m in sandbox.thread_messages(thread) if not m.is_sent]
        if not received:
            raise invalid("thread_id", "the thread has no received message to answer")
        return received[-1]
    assert message_id is not None
    if inbox_id is not None:
        return find_message(sandbox, inbox_id, message_id)
    found = [m for (_, mid), m in sandbox.messages.items() if mid == message_id]
    if not found:
        raise not_found("Message")
    if len(found) > 1:
        raise invalid("inbox_id", "several inboxes hold this message; name one")
    return found[0]


# -- threads ----------------------------------------------------------------------


def list_threads(sandbox: Sandbox, inbox_id: str | None, query: ListQuery) -> dict[str, Any]:
    """``ListThreadsResponse``: threads of one inbox (or of the org), newest first.

    A thread is ordered and filtered by its own ``timestamp`` (its newest message). It is
    listed when at least one of its messages is not hidden by a spam / blocked /
    unauthenticated / trash label (see the ``include_*`` flags); the item still describes
    the whole thread. ``labels`` must all be among the thread's labels (the union of its
    messages' labels); ``senders`` / ``recipients`` / ``subject`` are substring filters.
    """
    if inbox_id is not None:
        inbox_id = inboxes.find(sandbox, inbox_id).inbox_id
    found: list[tuple[tuple[datetime, int], dict[str, Any]]] = []
    for thread in sandbox.threads.values():
        if inbox_id is not None and thread.inbox_id != inbox_id:
            continue
        messages = sandbox.thread_messages(thread)
        if not messages or all(_hidden(m.labels, query.include) for m in messages):
            continue
        newest = messages[-1]
        if not in_window(newest.timestamp, query):
            continue
        wire = thread_item_wire(thread, messages)
        if not all(label in wire["labels"] for label in query.labels):
            continue
        if not _thread_text_matches(wire, query):
            continue
        found.append(((newest.timestamp, newest.seq), wire))
    found.sort(key=lambda pair: pair[0], reverse=not query.ascending)
    items, envelope = keyset_page(
        found,
        key=lambda pair: pair[0],
        ascending=query.ascending,
        limit=query.limit,
        page_token=query.page_token,
    )
    envelope["threads"] = [wire for _, wire in items]
    return envelope


def _thread_text_matches(wire: dict[str, Any], query: ListQuery) -> bool:
    senders = " ".join(wire["senders"]).lower()
    if not all(value.lower() in senders for value in query.senders):
        return False
    recipients = " ".join(wire["recipients"]).lower()
    if not all(value.lower() in recipients for value in query.recipients):
        return False
    subject = str(wire.get("subject") or "").lower()
    return all(value.lower() in subject for value in query.subjects)


def get_thread(
    sandbox: Sandbox,
    inbox_id: str | None,
    thread_id: str,
    *,
    limit: int | None,
    page_token: str | None,
) -> dict[str, Any]:
    """``Thread``: the ThreadItem fields, ``count`` and a page of messages.

    The first page holds the newest messages in ascending order; ``next_page_token``
    leads to older ones.
    """
    if inbox_id is not None:
        inbox_id = inboxes.find(sandbox, inbox_id).inbox_id
    thread = sandbox.threads.get(thread_id)
    if thread is None or (inbox_id is not None and thread.inbox_id != inbox_id):
        raise not_found("Thread")
    messages = sandbox.thread_messages(thread)
    newest_first = list(reversed(messages))
    chunk, envelope = page(newest_first, limit=limit, page_token=page_token)
    wire = thread_item_wire(thread, messages)
    wire["count"] = envelope["count"]
    wire["limit"] = envelope["limit"]
    if "next_page_token" in envelope:
        wire["next_page_token"] = envelope["next_page_token"]
    wire["messages"] = [m.to_wire() for m in reversed(chunk)]
    return wire
