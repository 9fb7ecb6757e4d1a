"""Drafts through the real SDK, every answer validated strictly against its pydantic model,
and the ``message.sent`` event of every kind of send checked against ``MessageSentEvent``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from agentmail.core.api_error import ApiError
from agentmail.drafts.types.draft import Draft
from agentmail.drafts.types.draft_item import DraftItem
from agentmail.drafts.types.list_drafts_response import ListDraftsResponse
from agentmail.errors import ConflictError, NotFoundError, ValidationError
from agentmail.events.types.message_sent_event import MessageSentEvent
from agentmail.messages.types.message import Message
from agentmail.messages.types.send_message_response import SendMessageResponse
from agentmail.types.error_response import ErrorResponse
from agentmail.types.validation_error_response import ValidationErrorResponse

from tests.sandbox.conftest import NO_RETRY, Contract, create_webhook, strict
from tests.support.receiver import verify
from tests.support.waiting import until, until_sync


def inbound(sandbox: Any, **fields: Any) -> dict[str, Any]:
    fields.setdefault("from_", "Jane Doe <jane@example.com>")
    fields.setdefault("to", sandbox.inbox)
    fields.setdefault("subject", "Order 42")
    fields.setdefault("text", "Where is my order?")
    result: dict[str, Any] = sandbox.admin.inject(**fields)
    return result


# -- create and read ----------------------------------------------------------------


async def test_reply_draft_takes_recipients_subject_and_thread(
    contract: Contract, sandbox: Any
) -> None:
    original = inbound(sandbox, reply_to=["orders@example.com"])
    sdk = contract.client.inboxes.drafts
    draft = await sdk.create(
        sandbox.inbox, in_reply_to=original["message_id"], text="We are on it.", labels=["review"]
    )
    wire = strict(Draft, contract.last_json())
    assert wire.draft_id == draft.draft_id
    assert wire.inbox_id == sandbox.inbox
    assert wire.to == ["orders@example.com"]
    assert wire.subject == "Re: Order 42"
    assert wire.in_reply_to == original["message_id"]
    assert wire.references == [original["message_id"]]
    assert wire.labels == ["review"]
    assert wire.text == wire.preview == "We are on it."
    assert wire.send_status is None
    assert "client_id" not in contract.last_json()

    await sdk.get(sandbox.inbox, draft.draft_id)
    assert strict(Draft, contract.last_json()) == wire
    await contract.client.drafts.get(draft.draft_id)
    assert strict(Draft, contract.last_json()) == wire

    explicit = await sdk.create(
        sandbox.inbox,
        in_reply_to=original["message_id"],
        to=["jane@example.com"],
        subject="About your order",
        text="x",
    )
    assert (explicit.to, explicit.subject) == (["jane@example.com"], "About your order")


async def test_client_id_returns_the_same_draft_unchanged(contract: Contract, sandbox: Any) -> None:
    original = inbound(sandbox)
    sdk = contract.client.inboxes.drafts
    first = await sdk.create(
        sandbox.inbox, in_reply_to=original["message_id"], text="A", client_id="reply-1"
    )
    assert strict(Draft, contract.last_json()).client_id == "reply-1"
    again = await sdk.create(sandbox.inbox, to=["other@example.com"], text="B", client_id="reply-1")
    assert contract.last().status == 200
    assert again == first
    listed = await sdk.list(sandbox.inbox)
    assert [d.draft_id for d in listed.drafts] == [first.draft_id]

    with pytest.raises(ValidationError):
        await sdk.create(sandbox.inbox, text="x", client_id="a@b", request_options=NO_RETRY)
    strict(ValidationErrorResponse, contract.last_json())

    # Sending frees the client_id: the same create now makes a new draft.
    await sdk.send(sandbox.inbox, first.draft_id)
    fresh = await sdk.create(sandbox.inbox, to=["x@example.com"], text="C", client_id="reply-1")
    assert fresh.draft_id != first.draft_id


async def test_invalid_creates_are_400_or_404(contract: Contract, sandbox: Any) -> None:
    original = inbound(sandbox)
    sdk = contract.client.inboxes.drafts
    bad = [
        {"in_reply_to": original["message_id"], "forward_of": original["message_id"]},
        {"reply_all": True, "to": ["a@example.com"], "in_reply_to": original["message_id"]},
        {"reply_all": True},
        {"to": ["not an address"]},
        {"labels": ["sent"]},
    ]
    for fields in bad:
        with pytest.raises(ValidationError):
            await sdk.create(sandbox.inbox, request_options=NO_RETRY, **fields)
        strict(ValidationErrorResponse, contract.last_json())
    answer = await contract.http.post(
        f"{sandbox.url}/v0/inboxes/{sandbox.inbox}/drafts",
        json={"send_at": "tomorrow"},
        headers={"Authorization": f"Bearer {sandbox.api_key}"},
    )
    assert answer.status_code == 400
    assert strict(ValidationErrorResponse, answer.json()).errors == [
        {"path": "send_at", "message": "must be an ISO-8601 date-time"}
    ]
    with pytest.raises(NotFoundError):
        await sdk.create(sandbox.inbox, in_reply_to="<nope@example.com>", request_options=NO_RETRY)
    strict(ErrorResponse, contract.last_json())
    with pytest.raises(NotFoundError):
        await sdk.create("nobody@agentmail.to", text="x", request_options=NO_RETRY)
    assert sandbox.admin.requests()["operations"]["drafts.create"] == {"400": 6, "404": 2}


async def test_reply_all_and_forward_drafts(contract: Contract, sandbox: Any) -> None:
    original = inbound(
        sandbox,
        to=[sandbox.inbox, "bob@example.com"],
        cc=["carol@example.com"],
    )
    sdk = contract.client.inboxes.drafts
    everyone = await sdk.create(
        sandbox.inbox, in_reply_to=original["message_id"], reply_all=True, text="All"
    )
    assert everyone.to == ["Jane Doe <jane@example.com>", "bob@example.com"]
    assert everyone.cc == ["carol@example.com"]

    forward = await sdk.create(
        sandbox.inbox, forward_of=original["message_id"], to=["desk@example.com"], text="FYI"
    )
    assert forward.subject == "Fwd: Order 42"
    assert forward.forward_of == original["message_id"]
    sent = await sdk.send(sandbox.inbox, forward.draft_id)
    message = await contract.client.inboxes.messages.get(sandbox.inbox, sent.message_id)
    assert message.thread_id == original["thread_id"]
    assert message.text is not None
    assert message.text.startswith("FYI")
    assert message.text.endswith("Where is my order?")


async def test_list_orders_pages_and_filters(contract: Contract, sandbox: Any) -> None:
    sdk = contract.client.inboxes.drafts
    ids = [
        (
            await sdk.create(sandbox.inbox, to=["a@example.com"], text=f"{n}", labels=[f"n{n}"])
        ).draft_id
        for n in range(3)
    ]
    listed = await sdk.list(sandbox.inbox)
    strict(ListDraftsResponse, contract.last_json())
    for item in contract.last_json()["drafts"]:
        strict(DraftItem, item)
    assert [d.draft_id for d in listed.drafts] == ids[::-1]
    assert listed.count == 3

    first = await sdk.list(sandbox.inbox, limit=2, ascending=True)
    assert [d.draft_id for d in first.drafts] == ids[:2]
    assert first.next_page_token is not None
    rest = await sdk.list(sandbox.inbox, limit=2, ascending=True, page_token=first.next_page_token)
    assert [d.draft_id for d in rest.drafts] == ids[2:]
    assert rest.next_page_token is None

    labelled = await sdk.list(sandbox.inbox, labels=["n1"])
    assert [d.draft_id for d in labelled.drafts] == [ids[1]]

    # Updating a draft moves it to the front (ordered by updated_at).
    await sdk.update(sandbox.inbox, ids[0], text="edited")
    again = await sdk.list(sandbox.inbox)
    assert [d.draft_id for d in again.drafts] == [ids[0], ids[2], ids[1]]

    await contract.client.drafts.list()
    org = strict(ListDraftsResponse, contract.last_json())
    assert {d.draft_id for d in org.drafts} == set(ids)

    with pytest.raises(NotFoundError):
        await sdk.list("nobody@agentmail.to", request_options=NO_RETRY)


# -- update and delete ----------------------------------------------------------------


async def test_update_sets_clears_and_relabels(contract: Contract, sandbox: Any) -> None:
    sdk = contract.client.inboxes.drafts
    draft = await sdk.create(
        sandbox.inbox,
        to=["a@example.com"],
        cc=["c@example.com"],
        subject="S",
        text="T",
        labels=["one"],
    )
    updated = await sdk.update(
        sandbox.inbox,
        draft.draft_id,
        subject="New",
        cc=[],
        html=None,
        add_labels=["two"],
        remove_labels=["one"],
    )
    wire = strict(Draft, contract.last_json())
    assert updated == wire
    assert (wire.subject, wire.text, wire.cc, wire.to) == ("New", "T", None, ["a@example.com"])
    assert wire.labels == ["two"]
    assert wire.updated_at > draft.updated_at or wire.updated_at == draft.updated_at
    cleared = await sdk.update(sandbox.inbox, draft.draft_id, subject=None)
    assert cleared.subject is None

    with pytest.raises(ValidationError):
        await sdk.update(
            sandbox.inbox, draft.draft_id, add_labels=["scheduled"], request_options=NO_RETRY
        )
    strict(ValidationErrorResponse, contract.last_json())
    with pytest.raises(NotFoundError):
        await sdk.update(sandbox.inbox, "drf_missing", text="x", request_options=NO_RETRY)
    strict(ErrorResponse, contract.last_json())


async def test_delete_then_everything_is_404(contract: Contract, sandbox: Any) -> None:
    sdk = contract.client.inboxes.drafts
    draft = await sdk.create(sandbox.inbox, to=["a@example.com"], text="x", client_id="c-1")
    await sdk.delete(sandbox.inbox, draft.draft_id)
    assert contract.last().status == 204
    for call in (
        lambda: sdk.get(sandbox.inbox, draft.draft_id, request_options=NO_RETRY),
        lambda: sdk.delete(sandbox.inbox, draft.draft_id, request_options=NO_RETRY),
        lambda: sdk.send(sandbox.inbox, draft.draft_id, request_options=NO_RETRY),
        lambda: sdk.update(sandbox.inbox, draft.draft_id, text="y", request_options=NO_RETRY),
    ):
        with pytest.raises(NotFoundError):
            await call()
        strict(ErrorResponse, contract.last_json())
    assert sandbox.admin.sent() == []
    again = await sdk.create(sandbox.inbox, to=["a@example.com"], text="x", client_id="c-1")
    assert again.draft_id != draft.draft_id


# -- send -----------------------------------------------------------------------------


async def test_send_makes_a_reply_in_the_thread_and_deletes_the_draft(
    contract: Contract, sandbox: Any
) -> None:
    original = inbound(sandbox)
    sdk = contract.client.inboxes.drafts
    draft = await sdk.create(
        sandbox.inbox, in_reply_to=original["message_id"], text="Shipped.", labels=["auto"]
    )
    result = await sdk.send(
        sandbox.inbox, draft.draft_id, add_labels=["approved"], idempotency_key="send-1"
    )
    strict(SendMessageResponse, contract.last_json())
    assert result.thread_id == original["thread_id"]
    [sent] = sandbox.admin.sent()
    assert sent["operation"] == "drafts.send"
    assert sent["draft_id"] == draft.draft_id
    assert sent["idempotency_key"] == "send-1"
    assert sent["message_id"] == result.message_id
    assert sent["to"] == ["Jane Doe <jane@example.com>"]
    assert sent["in_reply_to"] == original["message_id"]

    await contract.client.inboxes.messages.get(sandbox.inbox, result.message_id)
    message = strict(Message, contract.last_json())
    assert message.labels == ["sent", "auto", "approved"]
    assert message.subject == "Re: Order 42"
    assert message.in_reply_to == original["message_id"]

    with pytest.raises(NotFoundError):
        await sdk.get(sandbox.inbox, draft.draft_id, request_options=NO_RETRY)
    # The same key replays the answer and sends nothing more.
    replay = await sdk.send(
        sandbox.inbox, draft.draft_id, add_labels=["approved"], idempotency_key="send-1"
    )
    assert (replay.message_id, replay.thread_id) == (result.message_id, result.thread_id)
    # Without the key (or with another) the draft is gone: 404, nothing sent.
    with pytest.raises(NotFoundError):
        await sdk.send(sandbox.inbox, draft.draft_id, request_options=NO_RETRY)
    strict(ErrorResponse, contract.last_json())
    with pytest.raises(NotFoundError):
        await sdk.send(
            sandbox.inbox, draft.draft_id, idempotency_key="send-2", request_options=NO_RETRY
        )
    assert len(sandbox.admin.sent()) == 1


async def test_send_key_conflicts_and_unsendable_drafts(contract: Contract, sandbox: Any) -> None:
    sdk = contract.client.inboxes.drafts
    a = await sdk.create(sandbox.inbox, to=["a@example.com"], text="a")
    b = await sdk.create(sandbox.inbox, to=["b@example.com"], text="b")
    await sdk.send(sandbox.inbox, a.draft_id, idempotency_key="k")
    with pytest.raises(ConflictError):
        await sdk.send(sandbox.inbox, b.draft_id, idempotency_key="k", request_options=NO_RETRY)
    strict(ErrorResponse, contract.last_json())
    # The draft the conflict refused is still there.
    await sdk.get(sandbox.inbox, b.draft_id)

    empty = await sdk.create(sandbox.inbox, text="nobody to send to")
    with pytest.raises(ApiError, match="recipient"):
        await sdk.send(sandbox.inbox, empty.draft_id, request_options=NO_RETRY)
    assert contract.last().status == 422
    await sdk.get(sandbox.inbox, empty.draft_id)
    with pytest.raises(ValidationError):
        await sdk.send(sandbox.inbox, b.draft_id, add_labels=["sent"], request_options=NO_RETRY)
    assert [s["to"] for s in sandbox.admin.sent()] == [["a@example.com"]]


async def test_scheduled_draft_is_sent_when_the_clock_reaches_send_at(
    contract: Contract, sandbox: Any
) -> None:
    sdk = contract.client.inboxes.drafts
    later = datetime.now(UTC) + timedelta(hours=2)
    draft = await sdk.create(sandbox.inbox, to=["a@example.com"], text="later", send_at=later)
    wire = strict(Draft, contract.last_json())
    assert wire.labels == ["scheduled"]
    assert wire.send_status == "scheduled"
    assert wire.send_at is not None
    assert abs((wire.send_at - later).total_seconds()) < 0.001
    scheduled = await sdk.list(sandbox.inbox, labels=["scheduled"])
    assert [d.draft_id for d in scheduled.drafts] == [draft.draft_id]

    unscheduled = await sdk.update(sandbox.inbox, draft.draft_id, send_at=None)
    assert (unscheduled.labels, unscheduled.send_status) == ([], None)
    sandbox.admin.advance_clock(3 * 3600)
    await sdk.get(sandbox.inbox, draft.draft_id)  # not sent: no longer scheduled

    await sdk.update(sandbox.inbox, draft.draft_id, send_at=datetime.now(UTC) + timedelta(days=1))
    assert sandbox.admin.sent() == []
    sandbox.admin.advance_clock(2 * 24 * 3600)
    await until(lambda: len(sandbox.admin.sent()) == 1, what="the scheduled send")
    [sent] = sandbox.admin.sent()
    assert sent["draft_id"] == draft.draft_id
    assert sent["idempotency_key"] is None
    with pytest.raises(NotFoundError):
        await sdk.get(sandbox.inbox, draft.draft_id, request_options=NO_RETRY)


# -- message.sent on every send ---------------------------------------------------------


def test_message_sent_fires_for_send_reply_and_draft_send(
    sandbox: Any, receiver: Any, raw: httpx.Client
) -> None:
    webhook = create_webhook(raw, receiver.url, ["message.sent"])
    original = inbound(sandbox)
    base = f"/v0/inboxes/{sandbox.inbox}"
    sends = [
        raw.post(f"{base}/messages/send", json={"to": "x@example.com", "text": "hi"}).json(),
        raw.post(f"{base}/messages/{original['message_id']}/reply", json={"text": "r"}).json(),
        raw.post(f"{base}/messages/{original['message_id']}/reply-all", json={"text": "ra"}).json(),
    ]
    draft = raw.post(
        f"{base}/drafts", json={"in_reply_to": original["message_id"], "text": "d"}
    ).json()
    sends.append(raw.post(f"{base}/drafts/{draft['draft_id']}/send", json={}).json())
    received = receiver.wait_for(len(sends))
    events = [strict(MessageSentEvent, verify(r, webhook["secret"])) for r in received]
    by_message = {e.send.message_id: e for e in events}
    assert set(by_message) == {s["message_id"] for s in sends}
    for answer in sends:
        event = by_message[answer["message_id"]]
        assert event.send.thread_id == answer["thread_id"]
        assert event.send.inbox_id == sandbox.inbox
        assert event.event_id.startswith("evt_")
        # Exactly the SDK's shape: {type, event_type, event_id, send} and nothing more.
        raw_event = json.loads(
            next(r.body for r in received if answer["message_id"] in str(r.body))
        )
        assert set(raw_event) == {"type", "event_type", "event_id", "send"}
        assert set(raw_event["send"]) == {
            "inbox_id",
            "thread_id",
            "message_id",
            "timestamp",
            "recipients",
        }
    assert by_message[sends[3]["message_id"]].send.recipients == ["Jane Doe <jane@example.com>"]
    until_sync(lambda: all(d["state"] == "succeeded" for d in sandbox.admin.deliveries()))
