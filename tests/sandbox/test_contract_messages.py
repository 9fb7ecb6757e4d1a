"""Inboxes, messages and threads through the real SDK, validated strictly."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from agentmail.core.api_error import ApiError
from agentmail.errors import NotFoundError, ValidationError
from agentmail.inboxes.types.create_inbox_request import CreateInboxRequest
from agentmail.inboxes.types.inbox import Inbox
from agentmail.inboxes.types.list_inboxes_response import ListInboxesResponse
from agentmail.messages.types.list_messages_response import ListMessagesResponse
from agentmail.messages.types.message import Message
from agentmail.messages.types.message_item import MessageItem
from agentmail.messages.types.send_message_response import SendMessageResponse
from agentmail.messages.types.update_message_response import UpdateMessageResponse
from agentmail.threads.types.thread import Thread
from agentmail.types.error_response import ErrorResponse
from agentmail.types.validation_error_response import ValidationErrorResponse

from tests.sandbox.conftest import NO_RETRY, Contract, strict


def inject(sandbox: Any, **fields: Any) -> Any:
    fields.setdefault("from_", "Jane Doe <jane@example.com>")
    fields.setdefault("to", sandbox.inbox)
    fields.setdefault("subject", "Hello")
    fields.setdefault("text", "Hi there")
    return sandbox.admin.inject(**fields)


# -- inboxes ----------------------------------------------------------------------


async def test_inboxes(contract: Contract, sandbox: Any) -> None:
    sdk = contract.client.inboxes
    await sdk.list()
    listed = strict(ListInboxesResponse, contract.last_json())
    assert [i.inbox_id for i in listed.inboxes] == [sandbox.inbox]

    created = await sdk.create(
        request=CreateInboxRequest(username="Support", display_name="Support", client_id="sup-1")
    )
    wire = strict(Inbox, contract.last_json())
    assert wire.inbox_id == wire.email == "support@agentmail.to"
    assert wire.display_name == "Support"
    assert wire.client_id == "sup-1"

    again = await sdk.create(request=CreateInboxRequest(username="other", client_id="sup-1"))
    assert again.inbox_id == created.inbox_id

    random_one = await sdk.create()
    strict(Inbox, contract.last_json())
    assert random_one.inbox_id.endswith("@agentmail.to")

    await sdk.get(created.inbox_id)
    assert strict(Inbox, contract.last_json()).inbox_id == created.inbox_id

    await sdk.list()
    listed = strict(ListInboxesResponse, contract.last_json())
    assert [i.inbox_id for i in listed.inboxes][:2] == [random_one.inbox_id, created.inbox_id]
    with pytest.raises(NotFoundError):
        await sdk.get("nobody@agentmail.to")
    strict(ErrorResponse, contract.last_json())
    with pytest.raises(ValidationError):
        await sdk.create(request=CreateInboxRequest(client_id="bad@id"), request_options=NO_RETRY)
    strict(ValidationErrorResponse, contract.last_json())


# -- get / list -------------------------------------------------------------------


async def test_get_message_full_shape(contract: Contract, sandbox: Any) -> None:
    result = inject(
        sandbox,
        cc=["Bob <bob@example.com>"],
        reply_to=["replies@example.com"],
        headers={"Auto-Submitted": "auto-replied", "List-Id": "<list.example.com>"},
    )
    await contract.client.inboxes.messages.get(sandbox.inbox, result["message_id"])
    message = strict(Message, contract.last_json())
    assert message.message_id == result["message_id"]
    assert message.thread_id == result["thread_id"]
    assert message.labels == ["received", "unread"]
    assert message.from_ == "Jane Doe <jane@example.com>"
    assert message.to == [sandbox.inbox]
    assert message.cc == ["Bob <bob@example.com>"]
    assert message.reply_to == ["replies@example.com"]
    assert message.text == message.extracted_text == message.preview == "Hi there"
    assert message.headers is not None
    assert message.headers["Auto-Submitted"] == "auto-replied"
    assert message.headers["List-Id"] == "<list.example.com>"
    assert message.headers["Message-ID"] == result["message_id"]
    assert message.message_id.startswith("<")
    assert message.message_id.endswith(">")


async def test_html_only_message(contract: Contract, sandbox: Any) -> None:
    result = inject(sandbox, text=None, html="<p>Only <b>HTML</b></p>")
    await contract.client.inboxes.messages.get(sandbox.inbox, result["message_id"])
    raw = contract.last_json()
    strict(Message, raw)
    assert raw["html"] == "<p>Only <b>HTML</b></p>"
    assert "text" not in raw
    assert "preview" not in raw


async def test_list_messages(contract: Contract, sandbox: Any) -> None:
    ids = [inject(sandbox, subject=f"m{n}")["message_id"] for n in range(3)]
    await contract.client.inboxes.messages.list(sandbox.inbox)
    listed = strict(ListMessagesResponse, contract.last_json())
    for item in contract.last_json()["messages"]:
        strict(MessageItem, item)
    assert [m.message_id for m in listed.messages] == ids[::-1]
    assert listed.count == 3
    ascending = await contract.client.inboxes.messages.list(sandbox.inbox, ascending=True, limit=2)
    assert [m.message_id for m in ascending.messages] == ids[:2]
    assert ascending.next_page_token is not None
    rest = await contract.client.inboxes.messages.list(
        sandbox.inbox, ascending=True, page_token=ascending.next_page_token
    )
    assert [m.message_id for m in rest.messages] == ids[2:]


async def test_list_label_filters_in_every_encoding(
    contract: Contract, sandbox: Any, raw: Any
) -> None:
    plain = inject(sandbox)["message_id"]
    tagged = inject(sandbox, labels=["vip", "urgent"])["message_id"]
    vip_only = inject(sandbox, labels=["vip"])["message_id"]

    # The SDK sends labels JSON-encoded: labels=["vip","urgent"].
    both = await contract.client.inboxes.messages.list(sandbox.inbox, labels=["vip", "urgent"])
    assert "labels=%5B%22vip%22%2C+%22urgent%22%5D" in str(contract.last().url)
    assert [m.message_id for m in both.messages] == [tagged]
    vip = await contract.client.inboxes.messages.list(sandbox.inbox, labels=["vip"])
    assert {m.message_id for m in vip.messages} == {tagged, vip_only}
    unread = await contract.client.inboxes.messages.list(sandbox.inbox, labels=["unread"])
    assert {m.message_id for m in unread.messages} == {plain, tagged, vip_only}

    path = f"/v0/inboxes/{sandbox.inbox}/messages"
    repeated = raw.get(path, params=[("labels", "vip"), ("labels", "urgent")]).json()
    comma = raw.get(path, params={"labels": "vip,urgent"}).json()
    assert [m["message_id"] for m in repeated["messages"]] == [tagged]
    assert [m["message_id"] for m in comma["messages"]] == [tagged]


async def test_hidden_labels_need_include_flags(contract: Contract, sandbox: Any) -> None:
    normal = inject(sandbox)["message_id"]
    spam = inject(sandbox, event_type="message.received.spam")["message_id"]
    blocked = inject(sandbox, event_type="message.received.blocked")["message_id"]
    unauth = inject(sandbox, event_type="message.received.unauthenticated")["message_id"]
    trashed = inject(sandbox)["message_id"]
    await contract.client.inboxes.messages.update(sandbox.inbox, trashed, add_labels="trash")

    sdk = contract.client.inboxes.messages
    default = await sdk.list(sandbox.inbox)
    assert [m.message_id for m in default.messages] == [normal]
    everything = await sdk.list(
        sandbox.inbox,
        include_spam=True,
        include_blocked=True,
        include_unauthenticated=True,
        include_trash=True,
    )
    assert {m.message_id for m in everything.messages} == {normal, spam, blocked, unauth, trashed}
    only_spam = await sdk.list(sandbox.inbox, include_spam=True)
    assert {m.message_id for m in only_spam.messages} == {normal, spam}
    spam_message = await sdk.get(sandbox.inbox, spam)
    assert "spam" in spam_message.labels


async def test_list_time_and_substring_filters(contract: Contract, sandbox: Any) -> None:
    first = inject(sandbox, from_="alice@example.com", subject="Invoice 1")
    sandbox.admin.advance_clock(60)
    second = inject(sandbox, from_="bob@example.org", subject="Meeting")
    sdk = contract.client.inboxes.messages
    one = await sdk.get(sandbox.inbox, first["message_id"])
    two = await sdk.get(sandbox.inbox, second["message_id"])
    after = await sdk.list(sandbox.inbox, after=one.timestamp)
    assert [m.message_id for m in after.messages] == [two.message_id]
    before = await sdk.list(sandbox.inbox, before=two.timestamp)
    assert [m.message_id for m in before.messages] == [one.message_id]
    by_sender = await sdk.list(sandbox.inbox, from_=["alice"])
    assert [m.message_id for m in by_sender.messages] == [one.message_id]
    by_subject = await sdk.list(sandbox.inbox, subject=["meet"])
    assert [m.message_id for m in by_subject.messages] == [two.message_id]


async def test_unknown_inbox_and_message(contract: Contract, sandbox: Any) -> None:
    with pytest.raises(NotFoundError):
        await contract.client.inboxes.messages.list("nobody@agentmail.to")
    strict(ErrorResponse, contract.last_json())
    with pytest.raises(NotFoundError):
        await contract.client.inboxes.messages.get(sandbox.inbox, "<missing@example.com>")
    assert strict(ErrorResponse, contract.last_json()).code == "not_found"


# -- message ids in paths ---------------------------------------------------------


@pytest.mark.parametrize(
    "message_id", ["<plain123@example.com>", "<a/b+c=d@example.com>", "<sp ace%x@example.com>"]
)
async def test_message_ids_raw_or_percent_encoded(
    contract: Contract, sandbox: Any, raw: Any, message_id: str
) -> None:
    inject(sandbox, message_id=message_id)
    via_sdk = await contract.client.inboxes.messages.get(sandbox.inbox, message_id)
    assert via_sdk.message_id == message_id
    encoded = quote(message_id, safe="")
    answer = raw.get(f"/v0/inboxes/{sandbox.inbox}/messages/{encoded}")
    assert answer.status_code == 200
    assert answer.json()["message_id"] == message_id
    reply = await contract.client.inboxes.messages.reply(sandbox.inbox, message_id, text="ok")
    assert (
        await contract.client.inboxes.messages.get(sandbox.inbox, reply.message_id)
    ).in_reply_to == message_id
    labelled = raw.patch(
        f"/v0/inboxes/{sandbox.inbox}/messages/{encoded}", json={"add_labels": ["seen"]}
    )
    assert labelled.json()["labels"][-1] == "seen"


# -- labels -----------------------------------------------------------------------


async def test_update_labels(contract: Contract, sandbox: Any) -> None:
    message_id = inject(sandbox)["message_id"]
    sdk = contract.client.inboxes.messages
    await sdk.update(sandbox.inbox, message_id, add_labels=["read", "done"], remove_labels="unread")
    answer = strict(UpdateMessageResponse, contract.last_json())
    assert answer.message_id == message_id
    assert answer.labels == ["received", "read", "done"]
    # remove wins over add for the same label; one string works as well as a list.
    await sdk.update(sandbox.inbox, message_id, add_labels="x", remove_labels=["x", "done"])
    assert strict(UpdateMessageResponse, contract.last_json()).labels == ["received", "read"]
    # explicit nulls (the SDK sends them for None) change nothing
    await sdk.update(sandbox.inbox, message_id, add_labels=None, remove_labels=None)
    assert contract.last_json()["labels"] == ["received", "read"]
    changes = sandbox.admin.label_changes()
    assert [(c["added"], c["removed"], c["labels_after"]) for c in changes] == [
        (["read", "done"], ["unread"], ["received", "read", "done"]),
        ([], ["x", "done"], ["received", "read"]),
        ([], [], ["received", "read"]),
    ]
    assert sandbox.admin.requests()["operations"]["messages.update"] == {"200": 3}


@pytest.mark.parametrize(
    "label", ["received", "sent", "bounced", "spam", "blocked", "unauthenticated", "scheduled"]
)
async def test_system_labels_reject_the_whole_request(
    contract: Contract, sandbox: Any, label: str
) -> None:
    message_id = inject(sandbox)["message_id"]
    sdk = contract.client.inboxes.messages
    with pytest.raises(ValidationError):
        await sdk.update(
            sandbox.inbox,
            message_id,
            add_labels=["fine", label],
            remove_labels=["unread"],
            request_options=NO_RETRY,
        )
    body = strict(ValidationErrorResponse, contract.last_json())
    assert body.code == "validation_error"
    assert body.errors == [{"path": "add_labels[1]", "message": body.errors[0]["message"]}]
    with pytest.raises(ValidationError):
        await sdk.update(sandbox.inbox, message_id, remove_labels=label, request_options=NO_RETRY)
    assert (await sdk.get(sandbox.inbox, message_id)).labels == ["received", "unread"]
    assert sandbox.admin.label_changes() == []


# -- send / reply / reply-all -----------------------------------------------------


async def test_send_new_message(contract: Contract, sandbox: Any) -> None:
    sdk = contract.client.inboxes.messages
    await sdk.send(
        sandbox.inbox,
        to="Ann <ann@example.com>",
        cc=["cc@example.com"],
        subject="Welcome",
        text="Hello Ann",
        html="<p>Hello Ann</p>",
        labels=["outreach"],
        headers={"X-Campaign": "w1"},
    )
    answer = strict(SendMessageResponse, contract.last_json())
    message = await sdk.get(sandbox.inbox, answer.message_id)
    strict(Message, contract.last_json())
    assert message.thread_id == answer.thread_id
    assert message.labels == ["sent", "outreach"]
    assert message.from_ == sandbox.inbox
    assert message.to == ["Ann <ann@example.com>"]
    assert message.cc == ["cc@example.com"]
    assert message.headers is not None
    assert message.headers["X-Campaign"] == "w1"
    [sent] = sandbox.admin.sent()
    assert sent["operation"] == "messages.send"
    assert sent["subject"] == "Welcome"
    assert sent["headers"] == {"X-Campaign": "w1"}
    with pytest.raises(ApiError) as caught:
        await sdk.send(sandbox.inbox, subject="nobody", text="x", request_options=NO_RETRY)
    assert caught.value.status_code == 422
    assert strict(ErrorResponse, contract.last_json()).code == "unprocessable"
    with pytest.raises(ValidationError):
        await sdk.send(sandbox.inbox, to="not-an-address", text="x", request_options=NO_RETRY)
    with pytest.raises(ValidationError):
        await sdk.send(sandbox.inbox, to="a@example.com", labels=["sent"], request_options=NO_RETRY)
    assert len(sandbox.admin.sent()) == 1


async def test_reply(contract: Contract, sandbox: Any) -> None:
    original = inject(sandbox, subject="Question", cc="other@example.com")
    sdk = contract.client.inboxes.messages
    await sdk.reply(
        sandbox.inbox,
        original["message_id"],
        text="Answer",
        html="<p>Answer</p>",
        labels=["autoreplied"],
        headers={"Auto-Submitted": "auto-replied"},
    )
    answer = strict(SendMessageResponse, contract.last_json())
    assert answer.thread_id == original["thread_id"]
    assert answer.message_id.startswith("<")
    assert answer.message_id.endswith("@agentmail.to>")
    reply = await sdk.get(sandbox.inbox, answer.message_id)
    assert reply.to == ["Jane Doe <jane@example.com>"]
    assert reply.cc is None
    assert reply.subject == "Re: Question"
    assert reply.in_reply_to == original["message_id"]
    assert reply.references == [original["message_id"]]
    assert reply.labels == ["sent", "autoreplied"]
    assert reply.text == "Answer"
    assert reply.html == "<p>Answer</p>"
    assert reply.headers is not None
    assert reply.headers["Auto-Submitted"] == "auto-replied"
    assert reply.headers["In-Reply-To"] == original["message_id"]

    # A reply to the reply does not double the prefix and extends the references.
    again = await sdk.reply(sandbox.inbox, answer.message_id, text="More")
    second = await sdk.get(sandbox.inbox, again.message_id)
    assert second.subject == "Re: Question"
    assert second.references == [original["message_id"], answer.message_id]

    await contract.client.threads.get(original["thread_id"])
    thread = strict(Thread, contract.last_json())
    assert thread.message_count == thread.count == 3
    assert [m.message_id for m in thread.messages] == [
        original["message_id"],
        answer.message_id,
        again.message_id,
    ]
    assert thread.senders == ["Jane Doe <jane@example.com>", sandbox.inbox]
    assert thread.last_message_id == again.message_id
    assert thread.sent_timestamp is not None
    assert thread.received_timestamp is not None


async def test_reply_goes_to_reply_to_unless_to_given(contract: Contract, sandbox: Any) -> None:
    original = inject(sandbox, reply_to=["list@example.org"])
    sdk = contract.client.inboxes.messages
    default = await sdk.reply(sandbox.inbox, original["message_id"], text="a")
    assert (await sdk.get(sandbox.inbox, default.message_id)).to == ["list@example.org"]
    explicit = await sdk.reply(
        sandbox.inbox, original["message_id"], text="b", to=["jane@example.com"]
    )
    assert (await sdk.get(sandbox.inbox, explicit.message_id)).to == ["jane@example.com"]


async def test_reply_all(contract: Contract, sandbox: Any) -> None:
    original = inject(
        sandbox, to=[sandbox.inbox, "peer@example.com"], cc=["boss@example.com", sandbox.inbox]
    )
    sdk = contract.client.inboxes.messages
    await sdk.reply_all(sandbox.inbox, original["message_id"], text="all")
    answer = strict(SendMessageResponse, contract.last_json())
    reply = await sdk.get(sandbox.inbox, answer.message_id)
    assert reply.to == ["Jane Doe <jane@example.com>", "peer@example.com"]
    assert reply.cc == ["boss@example.com"]
    flagged = await sdk.reply(sandbox.inbox, original["message_id"], text="x", reply_all=True)
    assert (await sdk.get(sandbox.inbox, flagged.message_id)).cc == ["boss@example.com"]
    assert [s["operation"] for s in sandbox.admin.sent()] == [
        "messages.reply_all",
        "messages.reply",
    ]


async def test_reply_to_unknown_message_is_404(contract: Contract, sandbox: Any) -> None:
    with pytest.raises(NotFoundError):
        await contract.client.inboxes.messages.reply(
            sandbox.inbox, "<nope@example.com>", text="x", request_options=NO_RETRY
        )
    assert sandbox.admin.sent() == []


# -- threads ----------------------------------------------------------------------


async def test_threads_inbox_and_org_level(contract: Contract, sandbox: Any) -> None:
    first = inject(sandbox, subject="Topic")
    follow = inject(sandbox, subject="Re: Topic", in_reply_to=first["message_id"])
    assert follow["thread_id"] == first["thread_id"]
    other = inject(sandbox, subject="Other")
    assert other["thread_id"] != first["thread_id"]

    await contract.client.inboxes.threads.get(sandbox.inbox, first["thread_id"])
    scoped = strict(Thread, contract.last_json())
    for message in contract.last_json()["messages"]:
        strict(Message, message)
    await contract.client.threads.get(first["thread_id"])
    org = strict(Thread, contract.last_json())
    assert scoped == org
    assert scoped.subject == "Topic"
    assert [m.message_id for m in scoped.messages] == [first["message_id"], follow["message_id"]]
    followed = await contract.client.inboxes.messages.get(sandbox.inbox, follow["message_id"])
    assert followed.references == [first["message_id"]]

    page = await contract.client.threads.get(first["thread_id"], limit=1)
    assert [m.message_id for m in page.messages] == [follow["message_id"]]
    assert page.count == 1
    assert page.next_page_token
    older = await contract.client.threads.get(
        first["thread_id"], limit=1, page_token=page.next_page_token
    )
    assert [m.message_id for m in older.messages] == [first["message_id"]]
    assert older.next_page_token is None

    with pytest.raises(NotFoundError):
        await contract.client.threads.get("thd_missing")


def test_thread_of_another_inbox_is_404(sandbox_factory: Any) -> None:
    two = sandbox_factory(inboxes=["a@agentmail.to", "b@agentmail.to"])
    result = two.admin.inject(from_="x@example.com", to="a@agentmail.to", text="x")
    headers = {"Authorization": f"Bearer {two.api_key}"}
    with httpx.Client(base_url=two.url, headers=headers) as client:
        mine = client.get(f"/v0/inboxes/a@agentmail.to/threads/{result['thread_id']}")
        theirs = client.get(f"/v0/inboxes/b@agentmail.to/threads/{result['thread_id']}")
        message = client.get(f"/v0/inboxes/b@agentmail.to/messages/{result['message_id']}")
    assert mine.status_code == 200
    assert theirs.status_code == message.status_code == 404


# -- auth and errors --------------------------------------------------------------


def test_authentication(sandbox: Any, raw: Any) -> None:
    with httpx.Client(base_url=sandbox.url) as anonymous:
        missing = anonymous.get("/v0/inboxes")
        wrong = anonymous.get("/v0/inboxes", headers={"Authorization": "Bearer am_wrong"})
        basic = anonymous.get("/v0/inboxes", headers={"Authorization": "Basic abc"})
    assert missing.status_code == wrong.status_code == basic.status_code == 401
    assert strict(ErrorResponse, missing.json()).code == "missing_authorization"
    assert strict(ErrorResponse, wrong.json()).code == "unknown_api_key"
    assert strict(ErrorResponse, basic.json()).code == "missing_authorization"
    assert raw.get("/v0/inboxes").status_code == 200
    assert raw.get("/v0/nothing-here").status_code == 404
    assert strict(ErrorResponse, raw.delete("/v0/inboxes").json()).code == "method_not_allowed"
    bad_json = raw.post(
        "/v0/webhooks", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    strict(ValidationErrorResponse, bad_json.json())
    requests = sandbox.admin.requests()["operations"]
    assert requests["inboxes.list"] == {"401": 3, "200": 1}


async def test_sdk_surfaces_auth_errors(sandbox: Any) -> None:
    async with httpx.AsyncClient() as http:
        client = sandbox.sdk(api_key="am_wrong", httpx_client=http)
        with pytest.raises(ApiError) as caught:
            await client.inboxes.list(request_options=NO_RETRY)
    assert caught.value.status_code == 401
