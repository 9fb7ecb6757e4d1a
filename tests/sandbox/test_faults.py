"""Fault injection: statuses, Retry-After, rate and budget, latency, after-send, stacking."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
from agentmail.core.api_error import ApiError
from agentmail.types.error_response import ErrorResponse

from service.sandbox import SandboxError
from tests.sandbox.conftest import NO_RETRY, Contract, strict
from tests.support.waiting import until, until_sync


async def test_status_fault_with_budget(contract: Contract, sandbox: Any) -> None:
    sandbox.admin.add_fault("inboxes.get", status=503, times=2)
    for _ in range(2):
        with pytest.raises(ApiError) as caught:
            await contract.client.inboxes.get(sandbox.inbox, request_options=NO_RETRY)
        assert caught.value.status_code == 503
        assert strict(ErrorResponse, contract.last_json()).code == "service_unavailable"
    await contract.client.inboxes.get(sandbox.inbox, request_options=NO_RETRY)
    [fault] = sandbox.admin.faults()
    assert fault["fired"] == 2
    assert sandbox.admin.requests()["operations"]["inboxes.get"] == {"503": 2, "200": 1}


async def test_sdk_retries_through_5xx(contract: Contract, sandbox: Any) -> None:
    sandbox.admin.add_fault("inboxes.list", status=500, times=1)
    listed = await contract.client.inboxes.list()
    assert listed.count == 1
    assert sandbox.admin.requests()["operations"]["inboxes.list"] == {"500": 1, "200": 1}


def test_429_carries_retry_after(sandbox: Any, raw: Any) -> None:
    sandbox.admin.add_fault("inboxes.list", status=429, retry_after=7, times=1)
    answer = raw.get("/v0/inboxes")
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "7"
    assert strict(ErrorResponse, answer.json()).code == "rate_limit_exceeded"


async def test_sdk_honours_429_then_succeeds(contract: Contract, sandbox: Any) -> None:
    sandbox.admin.add_fault("inboxes.list", status=429, retry_after=1, times=1)
    listed = await contract.client.inboxes.list(request_options={"max_retries": 1})
    assert listed.count == 1
    assert sandbox.admin.requests()["operations"]["inboxes.list"] == {"429": 1, "200": 1}


def _pattern(box: Any, client: httpx.Client) -> list[int]:
    box.admin.add_fault("inboxes.list", status=500, rate=0.5)
    return [client.get("/v0/inboxes").status_code for _ in range(30)]


def test_rate_is_deterministic_with_a_seed(sandbox_factory: Any) -> None:
    patterns = []
    for _ in range(2):
        box = sandbox_factory(seed=42)
        headers = {"Authorization": f"Bearer {box.api_key}"}
        with httpx.Client(base_url=box.url, headers=headers) as client:
            patterns.append(_pattern(box, client))
    assert patterns[0] == patterns[1]
    assert set(patterns[0]) == {200, 500}


async def test_latency_does_not_block_other_requests(contract: Contract, sandbox: Any) -> None:
    sandbox.admin.add_fault("messages.send", latency_ms=1500, times=1)
    sending = asyncio.create_task(
        contract.client.inboxes.messages.send(sandbox.inbox, to="x@example.com", text="slow")
    )
    await until(lambda: sandbox.admin.requests()["in_flight"].get("messages.send", 0) == 1)
    await contract.client.inboxes.get(sandbox.inbox)
    assert sandbox.admin.requests()["in_flight"] == {"messages.send": 1}
    assert sandbox.admin.sent() == []
    await sending
    assert len(sandbox.admin.sent()) == 1
    assert sandbox.admin.requests()["in_flight"] == {}


def test_send_completes_after_the_client_hangs_up(sandbox: Any) -> None:
    sandbox.admin.add_fault("messages.send", latency_ms=800, times=1)
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}
    with (
        httpx.Client(base_url=sandbox.url, headers=headers, timeout=0.2) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        impatient.post(
            f"/v0/inboxes/{sandbox.inbox}/messages/send",
            json={"to": "x@example.com", "text": "accepted"},
        )
    [sent] = sandbox.admin.wait_for_sent(1)
    assert sent["text"] == "accepted"


async def test_after_send_on_a_label_update(contract: Contract, sandbox: Any) -> None:
    message_id = sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox, text="x")[
        "message_id"
    ]
    sandbox.admin.add_fault("messages.update", after_send=True, times=1)
    with pytest.raises(ApiError) as caught:
        await contract.client.inboxes.messages.update(
            sandbox.inbox, message_id, remove_labels="unread", request_options=NO_RETRY
        )
    assert caught.value.status_code == 500
    [change] = sandbox.admin.label_changes()
    assert change["labels_after"] == ["received"]
    message = await contract.client.inboxes.messages.get(sandbox.inbox, message_id)
    assert message.labels == ["received"]


def test_faults_stack(sandbox: Any, raw: Any) -> None:
    admin = sandbox.admin
    latency = admin.add_fault("inboxes.list", latency_ms=50, times=1)
    first = admin.add_fault("inboxes.list", status=503, times=1)
    second = admin.add_fault("inboxes.list", status=500, times=1)
    assert latency["status"] is None
    assert raw.get("/v0/inboxes").status_code == 503
    fired = {f["fault_id"]: f["fired"] for f in admin.faults()}
    assert fired == {latency["fault_id"]: 1, first["fault_id"]: 1, second["fault_id"]: 1}
    assert raw.get("/v0/inboxes").status_code == 200


def test_latency_alone_is_not_an_error_and_wildcards_match(sandbox: Any, raw: Any) -> None:
    sandbox.admin.add_fault("*", latency_ms=10)
    assert raw.get("/v0/inboxes").status_code == 200
    assert raw.get("/v0/webhooks").status_code == 200
    [fault] = sandbox.admin.faults()
    assert fault["fired"] == 2
    sandbox.admin.clear_faults()
    assert sandbox.admin.faults() == []


@pytest.mark.parametrize(
    "fields",
    [
        {"operation": "messages.nope"},
        {"operation": "messages.get", "status": 200},
        {"operation": "messages.get", "rate": 1.5},
        {"operation": "messages.get", "latency_ms": -1},
        {},
    ],
)
def test_fault_validation(sandbox: Any, fields: dict[str, Any]) -> None:
    with pytest.raises(SandboxError) as caught:
        sandbox.admin.add_fault(**fields) if "operation" in fields else sandbox.admin.add_fault("")
    assert caught.value.status == 400
    assert sandbox.admin.faults() == []


def test_reset_answers_requests_in_flight_with_503(sandbox: Any) -> None:
    sandbox.admin.add_fault("inboxes.list", latency_ms=10_000, times=1)
    answers: list[httpx.Response] = []
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}

    def call() -> None:
        with httpx.Client(base_url=sandbox.url, headers=headers, timeout=30) as client:
            answers.append(client.get("/v0/inboxes"))

    caller = threading.Thread(target=call)
    caller.start()
    until_sync(lambda: sandbox.admin.requests()["in_flight"].get("inboxes.list", 0) == 1)
    sandbox.admin.reset()
    caller.join(20)
    [answer] = answers
    assert answer.status_code == 503
    assert strict(ErrorResponse, answer.json()).code == "service_unavailable"
    assert sandbox.admin.requests()["in_flight"] == {}
