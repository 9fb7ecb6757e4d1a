"""Idempotency-Key on send, reply and reply-all, as AgentMail documents it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from agentmail.errors import ConflictError, NotFoundError, ValidationError
from agentmail.types.error_response import ErrorResponse
from agentmail.types.validation_error_response import ValidationErrorResponse

from tests.sandbox.conftest import NO_RETRY, Contract, strict
from tests.support.waiting import until

DAY = 24 * 3600


def inbound(sandbox: Any, inbox: str | None = None) -> str:
    result = sandbox.admin.inject(
        from_="jane@example.com", to=inbox or sandbox.inbox, subject="Q", text="?"
    )
    message_id: str = result["message_id"]
    return message_id


async def test_same_key_same_request_replays_without_sending(
    contract: Contract, sandbox: Any
) -> None:
    message_id = inbound(sandbox)
    sdk = contract.client.inboxes.messages
    first = await sdk.reply(sandbox.inbox, message_id, text="A", idempotency_key="k-1")
    again = await sdk.reply(sandbox.inbox, message_id, text="A", idempotency_key="k-1")
    assert contract.last().status == 200
    assert (again.message_id, again.thread_id) == (first.message_id, first.thread_id)
    [sent] = sandbox.admin.sent()
    assert sent["idempotency_key"] == "k-1"
    assert sandbox.admin.requests()["operations"]["messages.reply"] == {"200": 2}
    # The SDK's explicit nulls do not make the request "different".
    same = await sdk.reply(sandbox.inbox, message_id, text="A", html=None, idempotency_key="k-1")
    assert same.message_id == first.message_id


@pytest.mark.parametrize("change", ["content", "inbox", "endpoint", "target"])
async def test_same_key_different_request_is_409(sandbox_factory: Any, change: str) -> None:
    box = sandbox_factory(inboxes=["a@agentmail.to", "b@agentmail.to"])
    first_id = inbound(box, "a@agentmail.to")
    async with httpx.AsyncClient() as http:
        sdk = box.sdk(httpx_client=http).inboxes.messages
        await sdk.reply("a@agentmail.to", first_id, text="A", idempotency_key="k")
        other_id = inbound(box, "a@agentmail.to")
        a, b = "a@agentmail.to", "b@agentmail.to"
        retry = {"idempotency_key": "k", "request_options": NO_RETRY}
        calls = {
            "content": lambda: sdk.reply(a, first_id, text="B", **retry),
            "inbox": lambda: sdk.send(b, to="x@example.com", text="A", **retry),
            "endpoint": lambda: sdk.reply_all(a, first_id, text="A", **retry),
            "target": lambda: sdk.reply(a, other_id, text="A", **retry),
        }
        with pytest.raises(ConflictError) as caught:
            await calls[change]()
    assert strict(ErrorResponse, caught.value.body.model_dump(exclude_none=True)).code == "conflict"
    assert len(box.admin.sent()) == 1


async def test_key_in_flight_is_409(contract: Contract, sandbox: Any) -> None:
    message_id = inbound(sandbox)
    sandbox.admin.add_fault("messages.reply", latency_ms=1500, times=1)
    sdk = contract.client.inboxes.messages
    first = asyncio.create_task(
        sdk.reply(sandbox.inbox, message_id, text="A", idempotency_key="slow")
    )
    await until(lambda: sandbox.admin.requests()["in_flight"].get("messages.reply", 0) == 1)
    with pytest.raises(ConflictError) as caught:
        await sdk.reply(
            sandbox.inbox, message_id, text="A", idempotency_key="slow", request_options=NO_RETRY
        )
    assert "in progress" in caught.value.body.message
    done = await first
    replay = await sdk.reply(sandbox.inbox, message_id, text="A", idempotency_key="slow")
    assert replay.message_id == done.message_id
    assert len(sandbox.admin.sent()) == 1


async def test_empty_key_is_400(contract: Contract, sandbox: Any, raw: Any) -> None:
    message_id = inbound(sandbox)
    with pytest.raises(ValidationError):
        await contract.client.inboxes.messages.reply(
            sandbox.inbox, message_id, text="A", idempotency_key="", request_options=NO_RETRY
        )
    strict(ValidationErrorResponse, contract.last_json())
    answer = raw.post(
        f"/v0/inboxes/{sandbox.inbox}/messages/send",
        json={"to": "x@example.com", "text": "x"},
        headers={"Idempotency-Key": ""},
    )
    assert answer.status_code == 400
    assert sandbox.admin.sent() == []


@pytest.mark.parametrize("key", ["<abc@example.com>", "has space", "x" * 257, "semi;colon"])
async def test_malformed_key_is_400(contract: Contract, sandbox: Any, key: str) -> None:
    message_id = inbound(sandbox)
    with pytest.raises(ValidationError):
        await contract.client.inboxes.messages.reply(
            sandbox.inbox, message_id, text="A", idempotency_key=key, request_options=NO_RETRY
        )
    body = strict(ValidationErrorResponse, contract.last_json())
    assert body.code == "validation_error"
    assert body.errors[0]["path"] == "Idempotency-Key"
    assert sandbox.admin.sent() == []


async def test_longest_and_widest_valid_key(contract: Contract, sandbox: Any) -> None:
    message_id = inbound(sandbox)
    for key in ("k" * 256, "AZaz09-._~"):
        await contract.client.inboxes.messages.reply(
            sandbox.inbox, message_id, text=key, idempotency_key=key
        )
    assert len(sandbox.admin.sent()) == 2


async def test_key_expires_24h_after_the_send(contract: Contract, sandbox: Any) -> None:
    message_id = inbound(sandbox)
    sdk = contract.client.inboxes.messages
    first = await sdk.reply(sandbox.inbox, message_id, text="A", idempotency_key="day")
    sandbox.admin.advance_clock(DAY - 1)
    assert (
        await sdk.reply(sandbox.inbox, message_id, text="A", idempotency_key="day")
    ).message_id == first.message_id
    with pytest.raises(ConflictError):
        await sdk.reply(
            sandbox.inbox, message_id, text="B", idempotency_key="day", request_options=NO_RETRY
        )
    sandbox.admin.advance_clock(1)
    later = await sdk.reply(sandbox.inbox, message_id, text="B", idempotency_key="day")
    assert later.message_id != first.message_id
    assert [s["text"] for s in sandbox.admin.sent()] == ["A", "B"]


async def test_failure_before_sending_releases_the_key(contract: Contract, sandbox: Any) -> None:
    message_id = inbound(sandbox)
    sdk = contract.client.inboxes.messages
    sandbox.admin.add_fault("messages.reply", status=500, times=1)
    with pytest.raises(Exception, match="500"):
        await sdk.reply(
            sandbox.inbox,
            message_id,
            text="A",
            idempotency_key="retry-me",
            request_options=NO_RETRY,
        )
    assert sandbox.admin.sent() == []
    # A validation failure (unknown target) also sends nothing and frees the key.
    with pytest.raises(NotFoundError):
        await sdk.reply(
            sandbox.inbox, "<nope@example.com>", text="A", idempotency_key="retry-me",
            request_options=NO_RETRY,
        )  # fmt: skip
    done = await sdk.reply(sandbox.inbox, message_id, text="A", idempotency_key="retry-me")
    [sent] = sandbox.admin.sent()
    assert sent["message_id"] == done.message_id


async def test_failure_after_send_then_retry_replays(contract: Contract, sandbox: Any) -> None:
    message_id = inbound(sandbox)
    sdk = contract.client.inboxes.messages
    sandbox.admin.add_fault("messages.reply", status=500, after_send=True, times=1)
    with pytest.raises(Exception, match="500"):
        await sdk.reply(
            sandbox.inbox, message_id, text="A", idempotency_key="once", request_options=NO_RETRY
        )
    [sent] = sandbox.admin.sent()
    replay = await sdk.reply(sandbox.inbox, message_id, text="A", idempotency_key="once")
    assert replay.message_id == sent["message_id"]
    assert len(sandbox.admin.sent()) == 1


async def test_sdk_retry_with_key_after_send_failure_sends_once(
    contract: Contract, sandbox: Any
) -> None:
    message_id = inbound(sandbox)
    sandbox.admin.add_fault("messages.reply", status=503, after_send=True, times=1)
    answer = await contract.client.inboxes.messages.reply(
        sandbox.inbox, message_id, text="A", idempotency_key="sdk-retry"
    )
    [sent] = sandbox.admin.sent()
    assert answer.message_id == sent["message_id"]
    assert sandbox.admin.requests()["operations"]["messages.reply"] == {"503": 1, "200": 1}


async def test_without_key_a_retry_sends_twice(contract: Contract, sandbox: Any) -> None:
    message_id = inbound(sandbox)
    sandbox.admin.add_fault("messages.reply", status=503, after_send=True, times=1)
    await contract.client.inboxes.messages.reply(sandbox.inbox, message_id, text="A")
    assert len(sandbox.admin.sent()) == 2
