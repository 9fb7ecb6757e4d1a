"""The list endpoints a catch-up sweep walks, through the real SDK, validated strictly:
``messages.list`` (order, time bounds, labels, include flags, pagination over a few hundred
messages), ``inboxes.list`` and ``threads.list`` pagination, and the "no route" 404s."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from agentmail.core.api_error import ApiError
from agentmail.errors import NotFoundError
from agentmail.inboxes.types.create_inbox_request import CreateInboxRequest
from agentmail.inboxes.types.inbox import Inbox
from agentmail.inboxes.types.list_inboxes_response import ListInboxesResponse
from agentmail.messages.types.list_messages_response import ListMessagesResponse
from agentmail.messages.types.message_item import MessageItem
from agentmail.threads.types.list_threads_response import ListThreadsResponse
from agentmail.threads.types.thread_item import ThreadItem
from agentmail.types.error_response import ErrorResponse
from agentmail.types.validation_error_response import ValidationErrorResponse

from service.sandbox import Clock
from tests.sandbox.conftest import NO_RETRY, Contract, strict

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def frozen_sandbox(sandbox_factory: Any, **kwargs: Any) -> Any:
    """A sandbox whose clock stands still at ``T0`` until the test moves it."""
    return sandbox_factory(clock=Clock(lambda: T0), **kwargs)


def inject(sandbox: Any, **fields: Any) -> Any:
    fields.setdefault("from_", "Jane Doe <jane@example.com>")
    fields.setdefault("inbox_id", sandbox.inbox)
    fields.setdefault("subject", "Hello")
    fields.setdefault("text", "Hi there")
    return sandbox.admin.inject(**fields)


async def collect(
    contract: Contract,
    fetch: Callable[[str | None], Awaitable[Any]],
    model: type[Any],
    key: str,
    item: type[Any],
) -> tuple[list[Any], int]:
    """Walk every page: validate each answer strictly; return the items and page count."""
    items: list[Any] = []
    token: str | None = None
    pages = 0
    while True:
        answer = await fetch(token)
        raw = contract.last_json()
        strict(model, raw)
        for entry in raw[key]:
            strict(item, entry)
        assert raw["count"] == len(raw[key])
        items.extend(getattr(answer, key))
        pages += 1
        token = answer.next_page_token
        if token is None:
            assert "next_page_token" not in raw
            return items, pages


# -- messages.list ----------------------------------------------------------------


async def test_messages_pages_are_complete_and_ordered(
    sandbox_factory: Any, contract_factory: Any
) -> None:
    sandbox = frozen_sandbox(sandbox_factory)
    contract = await contract_factory(sandbox)
    injected: list[str] = []
    for index in range(300):
        if index % 7 == 0:  # runs of equal timestamps, to check the tie order too
            sandbox.admin.advance_clock(1)
        injected.append(inject(sandbox, subject=f"n{index}")["message_id"])

    sdk = contract.client.inboxes.messages
    newest, pages = await collect(
        contract,
        lambda token: sdk.list(sandbox.inbox, limit=8, page_token=token),
        ListMessagesResponse,
        "messages",
        MessageItem,
    )
    assert pages == 38
    assert [m.message_id for m in newest] == list(reversed(injected))
    assert len({m.message_id for m in newest}) == 300
    stamps = [m.timestamp for m in newest]
    assert stamps == sorted(stamps, reverse=True)

    oldest, _ = await collect(
        contract,
        lambda token: sdk.list(sandbox.inbox, limit=100, ascending=True, page_token=token),
        ListMessagesResponse,
        "messages",
        MessageItem,
    )
    assert [m.message_id for m in oldest] == injected

    first = await sdk.list(sandbox.inbox)
    assert first.count == first.limit == 100  # default page size
    assert first.next_page_token


async def test_messages_before_and_after_are_exclusive(
    sandbox_factory: Any, contract_factory: Any
) -> None:
    sandbox = frozen_sandbox(sandbox_factory)
    contract = await contract_factory(sandbox)
    sdk = contract.client.inboxes.messages
    a = inject(sandbox, subject="a")["message_id"]
    sandbox.admin.advance_clock(60)
    b = inject(sandbox, subject="b")["message_id"]
    sandbox.admin.advance_clock(60)
    c = inject(sandbox, subject="c")["message_id"]
    t_b = T0 + timedelta(seconds=60)

    async def ids(**query: Any) -> list[str]:
        answer = await sdk.list(sandbox.inbox, **query)
        strict(ListMessagesResponse, contract.last_json())
        return [m.message_id for m in answer.messages]

    assert (await sdk.get(sandbox.inbox, b)).timestamp == t_b
    assert await ids(after=t_b) == [c]
    assert await ids(before=t_b) == [a]
    assert await ids(after=T0, before=T0 + timedelta(seconds=120)) == [b]
    assert await ids(after=t_b - timedelta(milliseconds=1)) == [c, b]
    assert await ids(after=t_b - timedelta(milliseconds=1), ascending=True) == [b, c]
    # The same instant written in another zone is the same bound.
    plus_two = timezone(timedelta(hours=2))
    assert await ids(after=t_b.astimezone(plus_two)) == [c]
    assert await ids(after=T0 + timedelta(days=1)) == []


async def test_messages_labels_and_include_flags(
    sandbox_factory: Any, contract_factory: Any
) -> None:
    sandbox = frozen_sandbox(sandbox_factory)
    contract = await contract_factory(sandbox)
    sdk = contract.client.inboxes.messages
    plain = inject(sandbox, labels=["vip"])["message_id"]
    sandbox.admin.advance_clock(1)
    spam = inject(sandbox, event_type="message.received.spam", labels=["vip"])["message_id"]
    sandbox.admin.advance_clock(1)
    blocked = inject(sandbox, event_type="message.received.blocked")["message_id"]
    sandbox.admin.advance_clock(1)
    unauth = inject(sandbox, event_type="message.received.unauthenticated")["message_id"]
    sandbox.admin.advance_clock(1)
    trashed = inject(sandbox, labels=["trash"])["message_id"]
    sandbox.admin.advance_clock(1)
    handled = inject(sandbox)["message_id"]
    await sdk.update(sandbox.inbox, handled, remove_labels=["unread"], add_labels=["replied"])

    async def ids(**query: Any) -> list[str]:
        answer = await sdk.list(sandbox.inbox, **query)
        strict(ListMessagesResponse, contract.last_json())
        return [m.message_id for m in answer.messages]

    assert await ids() == [handled, plain]
    assert await ids(labels=["unread"]) == [plain]
    assert await ids(labels=["received", "vip"]) == [plain]
    assert await ids(labels=["vip"], include_spam=True) == [spam, plain]
    assert await ids(include_blocked=True) == [handled, blocked, plain]
    assert await ids(include_unauthenticated=True) == [handled, unauth, plain]
    assert await ids(include_trash=True) == [handled, trashed, plain]
    assert await ids(
        labels=["unread"],
        include_spam=True,
        include_blocked=True,
        include_unauthenticated=True,
        include_trash=True,
        ascending=True,
    ) == [plain, spam, blocked, unauth, trashed]
    assert await ids(include_spam=False, labels=["replied"]) == [handled]


async def test_pages_hold_while_the_list_changes(
    sandbox_factory: Any, contract_factory: Any
) -> None:
    """Tokens name the last item served, not an offset: a sweep that marks what it handled
    while paging through ``labels=["unread"]`` sees every message once, and mail that
    arrives during a newest-first walk does not repeat items."""
    sandbox = frozen_sandbox(sandbox_factory)
    contract = await contract_factory(sandbox)
    sdk = contract.client.inboxes.messages
    injected = []
    for index in range(30):
        if index % 4 == 0:
            sandbox.admin.advance_clock(1)
        injected.append(inject(sandbox, subject=f"n{index}")["message_id"])

    seen: list[str] = []
    token: str | None = None
    while True:
        answer = await sdk.list(
            sandbox.inbox, labels=["unread"], ascending=True, limit=7, page_token=token
        )
        for item in answer.messages:
            seen.append(item.message_id)
            await sdk.update(sandbox.inbox, item.message_id, remove_labels=["unread"])
        token = answer.next_page_token
        if token is None:
            break
    assert seen == injected
    assert (await sdk.list(sandbox.inbox, labels=["unread"])).messages == []

    walked: list[str] = []
    token = None
    while True:
        answer = await sdk.list(sandbox.inbox, limit=7, page_token=token)
        walked.extend(m.message_id for m in answer.messages)
        inject(sandbox, subject="late")  # newer than everything: never on a later page
        token = answer.next_page_token
        if token is None:
            break
    assert walked == list(reversed(injected))

    ascending = await sdk.list(sandbox.inbox, ascending=True, limit=2)
    assert ascending.next_page_token
    with pytest.raises(ApiError) as caught:
        await sdk.list(
            sandbox.inbox, page_token=ascending.next_page_token, request_options=NO_RETRY
        )
    assert caught.value.status_code == 400


async def test_bad_page_tokens_are_400(contract: Contract, sandbox: Any) -> None:
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: contract.client.inboxes.messages.list(
            sandbox.inbox, page_token="nonsense", request_options=NO_RETRY
        ),
        lambda: contract.client.inboxes.list(page_token="bm9wZQ", request_options=NO_RETRY),
        lambda: contract.client.threads.list(page_token="%%%", request_options=NO_RETRY),
        lambda: contract.client.inboxes.threads.list(
            sandbox.inbox, page_token="e30", request_options=NO_RETRY
        ),
    ]
    # The SDK types no 400 for list calls: it raises the base ApiError (whose subclass
    # ValidationError is used where a 400 is typed), with the body as sent.
    for call in calls:
        with pytest.raises(ApiError) as caught:
            await call()
        assert caught.value.status_code == 400
        body = strict(ValidationErrorResponse, contract.last_json())
        assert body.code == "validation_error"
        assert body.errors == [{"path": "page_token", "message": "is not a valid page token"}]


# -- inboxes.list -----------------------------------------------------------------


async def test_inboxes_pages(contract: Contract, sandbox: Any) -> None:
    created = [sandbox.inbox]
    for index in range(7):
        inbox = await contract.client.inboxes.create(
            request=CreateInboxRequest(username=f"team{index}")
        )
        created.append(inbox.inbox_id)
    newest, pages = await collect(
        contract,
        lambda token: contract.client.inboxes.list(limit=3, page_token=token),
        ListInboxesResponse,
        "inboxes",
        Inbox,
    )
    assert pages == 3
    assert [i.inbox_id for i in newest] == list(reversed(created))
    oldest, _ = await collect(
        contract,
        lambda token: contract.client.inboxes.list(limit=5, ascending=True, page_token=token),
        ListInboxesResponse,
        "inboxes",
        Inbox,
    )
    assert [i.inbox_id for i in oldest] == created


# -- threads.list -----------------------------------------------------------------


async def test_threads_list_inbox_and_org(sandbox_factory: Any, contract_factory: Any) -> None:
    sandbox = frozen_sandbox(sandbox_factory, inboxes=["a@agentmail.to", "b@agentmail.to"])
    contract = await contract_factory(sandbox)
    first = inject(sandbox, subject="Topic", from_="Alice <alice@example.com>")
    sandbox.admin.advance_clock(60)
    other = inject(sandbox, inbox_id="b@agentmail.to", subject="Elsewhere", labels=["vip"])
    sandbox.admin.advance_clock(60)
    second = inject(sandbox, subject="Quiet")
    sandbox.admin.advance_clock(60)
    follow = inject(
        sandbox, subject="Re: Topic", in_reply_to=first["message_id"], from_="bob@example.com"
    )
    sandbox.admin.advance_clock(60)
    spam = inject(sandbox, subject="Buy", event_type="message.received.spam")
    assert follow["thread_id"] == first["thread_id"]

    async def inbox_ids(inbox: str, **query: Any) -> list[str]:
        answer = await contract.client.inboxes.threads.list(inbox, **query)
        strict(ListThreadsResponse, contract.last_json())
        for item in contract.last_json()["threads"]:
            strict(ThreadItem, item)
        return [t.thread_id for t in answer.threads]

    async def org_ids(**query: Any) -> list[str]:
        answer = await contract.client.threads.list(**query)
        strict(ListThreadsResponse, contract.last_json())
        for item in contract.last_json()["threads"]:
            strict(ThreadItem, item)
        return [t.thread_id for t in answer.threads]

    topic, quiet = first["thread_id"], second["thread_id"]
    elsewhere, junk = other["thread_id"], spam["thread_id"]
    # Newest first by the thread's last message: the follow-up moved "Topic" to the top.
    assert await inbox_ids(sandbox.inbox) == [topic, quiet]
    assert await inbox_ids(sandbox.inbox, ascending=True) == [quiet, topic]
    assert await inbox_ids("b@agentmail.to") == [elsewhere]
    assert await org_ids() == [topic, quiet, elsewhere]
    assert await org_ids(include_spam=True) == [junk, topic, quiet, elsewhere]

    answer = await contract.client.inboxes.threads.list(sandbox.inbox)
    item = answer.threads[0]
    assert item.message_count == 2
    assert item.last_message_id == follow["message_id"]
    assert item.subject == "Topic"
    assert item.timestamp == T0 + timedelta(seconds=180)

    t_quiet = T0 + timedelta(seconds=120)
    assert await org_ids(after=t_quiet) == [topic]
    assert await org_ids(before=t_quiet) == [elsewhere]
    assert await org_ids(labels=["vip"]) == [elsewhere]
    assert await org_ids(senders=["bob@"]) == [topic]
    assert await org_ids(subject=["quiet"]) == [quiet]
    assert await org_ids(recipients=["b@agentmail.to"]) == [elsewhere]

    paged, pages = await collect(
        contract,
        lambda token: contract.client.threads.list(limit=1, include_spam=True, page_token=token),
        ListThreadsResponse,
        "threads",
        ThreadItem,
    )
    assert pages == 4
    assert [t.thread_id for t in paged] == [junk, topic, quiet, elsewhere]

    with pytest.raises(NotFoundError):
        await contract.client.inboxes.threads.list("nobody@agentmail.to", request_options=NO_RETRY)


# -- unknown routes ---------------------------------------------------------------


def test_unimplemented_sub_routes_say_no_route(sandbox: Any, raw: httpx.Client) -> None:
    message_id = inject(sandbox)["message_id"]
    inbox = sandbox.inbox
    for path in (
        f"/v0/inboxes/{inbox}/messages/search",
        f"/v0/inboxes/{inbox}/messages/{message_id}/raw",
        f"/v0/inboxes/{inbox}/messages/{message_id}/attachments/att_1",
        f"/v0/inboxes/{inbox}/threads/search",
        f"/v0/inboxes/{inbox}/drafts/drf_1/attachments/att_1",
        "/v0/inboxes/search",
        "/v0/threads/search",
        "/v0/pods",
    ):
        answer = raw.get(path)
        assert answer.status_code == 404, path
        body = strict(ErrorResponse, answer.json())
        assert body.code == "not_found"
        assert body.message.startswith("No route for GET /v0/"), body.message
        assert "does not implement" in body.message
        assert body.fix
    # A path that exists for another method is a 405, not a missing message.
    answer = raw.get(f"/v0/inboxes/{inbox}/messages/send")
    assert answer.status_code == 405
    # Real resources still answer "not found" for what is missing.
    answer = raw.get(f"/v0/inboxes/{inbox}/messages/<missing@example.com>")
    assert answer.status_code == 404
    assert answer.json()["message"] == "Message not found"
    assert raw.get(f"/v0/inboxes/{inbox}/messages/{message_id}").status_code == 200
