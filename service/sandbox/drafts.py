"""Drafts: create (plain, reply, forward; ``client_id``; ``send_at``), get, list, update,
delete and send, as the SDK's ``inboxes.drafts`` and ``drafts`` clients call them.

* A reply draft (``in_reply_to``) takes its recipients (unless given), subject
  (``Re: …``, unless given) and threading from the message it answers; with
  ``reply_all`` it addresses the whole conversation and may not name ``to``/``cc``/``bcc``.
  A forward draft (``forward_of``) takes its subject and threading from the source and
  its recipients from the caller; the source's text is appended when it is sent.
  ``in_reply_to`` and ``forward_of`` exclude each other; a message they name must exist
  in the inbox (404).
* ``client_id`` (1-256 of ``A-Za-z0-9-._~``): a create repeating one already used in
  the same inbox returns that draft **unchanged** with 200, as for webhooks (docs:
  idempotency). Sending or deleting the draft frees it ([I]: undocumented).
* ``send_at`` labels the draft ``scheduled`` with ``send_status`` ``scheduled``; the
  sandbox sends it once its clock reaches that time (checked every 100 ms of real
  time). Updating ``send_at`` to null un-schedules it.
* Sending (``POST …/send``, Idempotency-Key honoured by the API layer) stores a sent
  message exactly as a reply or send does (``message.sent`` fires, mail to other sandbox
  inboxes arrives), then **deletes the draft**: a second send of the same id is a 404
  (docs: knowledge base, preventing duplicate sends).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from service.sandbox import inboxes, mail
from service.sandbox.errors import ApiError, not_found
from service.sandbox.models import SYSTEM_LABELS, DraftRecord, MessageRecord, ThreadRecord
from service.sandbox.paging import keyset_page
from service.sandbox.validation import Body, parse_datetime

if TYPE_CHECKING:
    from service.sandbox.state import Sandbox

SCHEDULER_INTERVAL_S = 0.1
FORWARD_INTRO = "---------- Forwarded message ----------"


# -- parsing helpers --------------------------------------------------------------


def _user_labels(body: Body, key: str, *, many: bool = False) -> list[str] | None:
    """Labels a client may set: anything but the system labels."""
    labels = body.one_or_many(key) if many else body.strings(key)
    for index, label in enumerate(labels or []):
        if label.lower() in SYSTEM_LABELS:
            body.error(f"{key}[{index}]", f"{label!r} is a system label")
    return labels


def _send_at(body: Body) -> datetime | None:
    raw = body.string("send_at")
    if raw is None:
        return None
    moment = parse_datetime(raw)
    if moment is None:
        body.error("send_at", "must be an ISO-8601 date-time")
    return moment


def _source(sandbox: Sandbox, inbox_id: str, message_id: str | None) -> MessageRecord | None:
    if message_id is None:
        return None
    message = sandbox.messages.get((inbox_id, message_id))
    if message is None:
        raise not_found("Message")
    return message


def _touch(sandbox: Sandbox, draft: DraftRecord) -> None:
    draft.updated_at = sandbox.clock.now()
    draft.seq = sandbox.next_sequence()


# -- create -----------------------------------------------------------------------


def create(sandbox: Sandbox, inbox_id: str, data: Any) -> dict[str, Any]:
    """Create a draft, or return the one this inbox already made with this ``client_id``."""
    inbox = inboxes.find(sandbox, inbox_id)
    body = Body(data)
    labels = _user_labels(body, "labels") or []
    reply_to = body.addresses("reply_to")
    to = body.addresses("to")
    cc = body.addresses("cc")
    bcc = body.addresses("bcc")
    subject = body.string("subject")
    text = body.string("text")
    html = body.string("html")
    attachments = mail.attachments_of(sandbox, body)
    in_reply_to = body.string("in_reply_to")
    forward_of = body.string("forward_of")
    reply_all = bool(body.boolean("reply_all"))
    send_at = _send_at(body)
    client_id = body.token("client_id")
    if in_reply_to is not None and forward_of is not None:
        body.error("forward_of", "in_reply_to and forward_of are mutually exclusive")
    if reply_all and in_reply_to is None:
        body.error("reply_all", "needs in_reply_to")
    if reply_all:
        body.reject("to", "cc", "bcc", reason="cannot be given with reply_all")
    body.finish()

    if client_id is not None:
        existing = sandbox.draft_client_ids.get((inbox.inbox_id, client_id))
        if existing is not None:
            return sandbox.drafts[existing].to_wire()

    original = _source(sandbox, inbox.inbox_id, in_reply_to)
    forwarded = _source(sandbox, inbox.inbox_id, forward_of)
    references: list[str] | None = None
    if original is not None:
        senders = list(original.to) if original.is_sent else (original.reply_to or [original.from_])
        if reply_all:
            to = mail.without([*senders, *original.to], inbox.inbox_id)
            cc = mail.without(list(original.cc or []), inbox.inbox_id, *to) or None
        elif to is None:
            to = senders
        subject = subject if subject is not None else mail.reply_subject(original.subject)
        references = [*(original.references or []), original.message_id]
    if forwarded is not None:
        if subject is None:
            subject = f"Fwd: {(forwarded.subject or '').strip()}".rstrip()
        references = [*(forwarded.references or []), forwarded.message_id]

    now = sandbox.clock.now()
    draft = DraftRecord(
        inbox_id=inbox.inbox_id,
        draft_id=sandbox.ids.draft_id(),
        labels=list(dict.fromkeys(labels)),
        created_at=now,
        updated_at=now,
        client_id=client_id,
        reply_to=reply_to,
        to=to,
        cc=cc,
        bcc=bcc,
        subject=subject,
        text=text,
        html=html,
        attachments=attachments,
        in_reply_to=in_reply_to,
        forward_of=forward_of,
        references=references,
        send_at=send_at,
        send_status="scheduled" if send_at is not None else None,
        seq=sandbox.next_sequence(),
    )
    sandbox.drafts[draft.draft_id] = draft
    if client_id is not None:
        sandbox.draft_client_ids[(inbox.inbox_id, client_id)] = draft.draft_id
    return draft.to_wire()


# -- read -------------------------------------------------------------------------


def find(sandbox: Sandbox, inbox_id: str | None, draft_id: str) -> DraftRecord:
    """A draft (of ``inbox_id``, when given), or a 404."""
    if inbox_id is not None:
        inbox_id = inboxes.find(sandbox, inbox_id).inbox_id
    draft = sandbox.drafts.get(draft_id)
    if draft is None or (inbox_id is not None and draft.inbox_id != inbox_id):
        raise not_found("Draft")
    return draft


def get(sandbox: Sandbox, inbox_id: str | None, draft_id: str) -> dict[str, Any]:
    """The full ``Draft``."""
    return find(sandbox, inbox_id, draft_id).to_wire()


def _key(draft: DraftRecord) -> tuple[datetime, int]:
    return (draft.updated_at, draft.seq)


def list_(sandbox: Sandbox, inbox_id: str | None, query: mail.PageQuery) -> dict[str, Any]:
    """``ListDraftsResponse``: drafts of one inbox (or of the org), newest ``updated_at``
    first unless ``ascending``; ``labels`` must all be present, ``before``/``after``
    are exclusive bounds on ``updated_at``."""
    if inbox_id is not None:
        inbox_id = inboxes.find(sandbox, inbox_id).inbox_id
    found = [
        d
        for d in sandbox.drafts.values()
        if (inbox_id is None or d.inbox_id == inbox_id)
        and all(label in d.wire_labels for label in query.labels)
        and mail.in_window(d.updated_at, query)
    ]
    found.sort(key=_key, reverse=not query.ascending)
    items, wire = keyset_page(
        found,
        key=_key,
        ascending=query.ascending,
        limit=query.limit,
        page_token=query.page_token,
    )
    wire["drafts"] = [d.to_item_wire() for d in items]
    return wire


# -- update and delete ------------------------------------------------------------


_CLEARABLE_ADDRESSES = ("reply_to", "to", "cc", "bcc")
_CLEARABLE_TEXT = ("subject", "text", "html")


def update(sandbox: Sandbox, inbox_id: str, draft_id: str, data: Any) -> dict[str, Any]:
    """Edit a draft: a field left out is unchanged, ``null`` (or ``[]`` for recipients)
    clears it, ``send_at`` schedules, reschedules or (null) un-schedules it. A draft's
    kind (plain, reply, forward) is fixed at creation."""
    draft = find(sandbox, inbox_id, draft_id)
    body = Body(data)
    sent = body.data
    addresses = {key: body.addresses(key) for key in _CLEARABLE_ADDRESSES if key in sent}
    texts = {key: body.string(key) for key in _CLEARABLE_TEXT if key in sent}
    adding = Body({"attachments": sent.get("add_attachments")}, prefix="add_")
    new_attachments = mail.attachments_of(sandbox, adding)
    body.errors.extend(adding.errors)
    remove_attachments = body.strings("remove_attachments") or []
    add_labels = _user_labels(body, "add_labels", many=True) or []
    remove_labels = _user_labels(body, "remove_labels", many=True) or []
    send_at = _send_at(body)
    body.reject("in_reply_to", "forward_of", "reply_all", reason="is fixed at creation")
    known = {a.get("attachment_id") for a in draft.attachments or []}
    for index, attachment_id in enumerate(remove_attachments):
        if attachment_id not in known:
            body.error(f"remove_attachments[{index}]", "no such attachment on this draft")
    body.finish()
    if draft.send_status == "sending":
        raise ApiError(409, "The draft is being sent and cannot be edited", "conflict")

    for key, value in addresses.items():
        setattr(draft, key, value or None)
    for key, text in texts.items():
        setattr(draft, key, text)
    kept = [a for a in draft.attachments or [] if a["attachment_id"] not in remove_attachments]
    draft.attachments = [*kept, *(new_attachments or [])] or None
    removed = set(remove_labels)
    draft.labels = [
        label for label in dict.fromkeys([*draft.labels, *add_labels]) if label not in removed
    ]
    if "send_at" in sent:
        draft.send_at = send_at
        draft.send_status = "scheduled" if send_at is not None else None
    _touch(sandbox, draft)
    return draft.to_wire()


def _forget(sandbox: Sandbox, draft: DraftRecord) -> None:
    sandbox.drafts.pop(draft.draft_id, None)
    if draft.client_id is not None:
        key = (draft.inbox_id, draft.client_id)
        if sandbox.draft_client_ids.get(key) == draft.draft_id:
            del sandbox.draft_client_ids[key]


def delete(sandbox: Sandbox, inbox_id: str, draft_id: str) -> None:
    """Delete a draft (a scheduled one is then never sent)."""
    _forget(sandbox, find(sandbox, inbox_id, draft_id))


# -- send -------------------------------------------------------------------------


def send(
    sandbox: Sandbox,
    inbox_id: str,
    draft_id: str,
    data: Any,
    *,
    idempotency_key: str | None,
) -> dict[str, str]:
    """Send a draft as a message and delete it; answers ``{message_id, thread_id}``."""
    draft = find(sandbox, inbox_id, draft_id)
    body = Body(data)
    add = _user_labels(body, "add_labels", many=True) or []
    remove = _user_labels(body, "remove_labels", many=True) or []
    body.finish()
    message = _send_now(sandbox, draft, add, remove, idempotency_key=idempotency_key)
    return {"message_id": message.message_id, "thread_id": message.thread_id}


def _send_now(
    sandbox: Sandbox,
    draft: DraftRecord,
    add: list[str],
    remove: list[str],
    *,
    idempotency_key: str | None,
) -> MessageRecord:
    inbox = inboxes.find(sandbox, draft.inbox_id)
    if not (draft.to or draft.cc or draft.bcc):
        raise ApiError(422, "A message needs at least one recipient", "unprocessable")
    thread: ThreadRecord | None = None
    text = draft.text
    for source_id in (draft.in_reply_to, draft.forward_of):
        source = sandbox.messages.get((inbox.inbox_id, source_id)) if source_id else None
        if source is not None:
            thread = sandbox.threads[source.thread_id]
            if source_id == draft.forward_of and source.text:
                text = "\n\n".join(part for part in (text, FORWARD_INTRO, source.text) if part)
    outgoing = mail.Draft(
        message_id=sandbox.ids.message_id(inbox.inbox_id.rsplit("@", 1)[1]),
        from_=inbox.from_address,
        to=list(draft.to or []),
        cc=draft.cc,
        bcc=draft.bcc,
        reply_to=draft.reply_to,
        subject=draft.subject,
        text=text,
        html=draft.html,
        in_reply_to=draft.in_reply_to,
        references=draft.references,
        attachments=draft.attachments,
    )
    removed = set(remove)
    labels = [
        label for label in dict.fromkeys(["sent", *draft.labels, *add]) if label not in removed
    ]
    message = mail.dispatch(
        sandbox,
        inbox,
        outgoing,
        labels,
        thread=thread,
        operation="drafts.send",
        idempotency_key=idempotency_key,
        draft_id=draft.draft_id,
    )
    _forget(sandbox, draft)
    return message


def send_due(sandbox: Sandbox) -> list[str]:
    """Send every scheduled draft whose ``send_at`` the sandbox clock has reached; one
    that cannot be sent (no recipient) stays, with ``send_status`` ``failed``. Returns
    the ids of the drafts sent."""
    now = sandbox.clock.now()
    due = [
        d
        for d in list(sandbox.drafts.values())
        if d.send_at is not None and d.send_status == "scheduled" and d.send_at <= now
    ]
    sent: list[str] = []
    for draft in sorted(due, key=lambda d: (d.send_at or now, d.seq)):
        try:
            _send_now(sandbox, draft, [], [], idempotency_key=None)
        except ApiError:
            draft.send_status = "failed"
            _touch(sandbox, draft)
            continue
        sent.append(draft.draft_id)
    return sent
