"""The admin clients (sync and async) and the admin API's own validation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.sandbox import AsyncSandboxClient, SandboxClient, SandboxError
from tests.sandbox.conftest import create_webhook


async def test_async_client_matches_the_sync_one(
    sandbox: Any, receiver: Any, raw: httpx.Client, admin_async: AsyncSandboxClient
) -> None:
    create_webhook(raw, receiver.url)
    result = await admin_async.inject(
        from_="a@example.com", to=sandbox.inbox, subject="s", text="t", copies=2
    )
    reports = await admin_async.wait_for_deliveries()
    assert {r["delivery_id"] for r in reports} == {d["delivery_id"] for d in result["deliveries"]}
    assert reports == sandbox.admin.deliveries()
    one = await admin_async.delivery(reports[0]["delivery_id"])
    assert one == reports[0]
    again = await admin_async.redeliver(reports[0]["delivery_id"], new_svix_id=True)
    assert again["event_id"] == result["event_id"]
    path = f"/v0/inboxes/{sandbox.inbox}/messages/{result['message_id']}"
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}
    async with httpx.AsyncClient(base_url=sandbox.url, headers=headers) as api:
        await api.post(f"{path}/reply", json={"text": "r"})
        assert await admin_async.wait_for_sent(1) == sandbox.admin.sent()
        await api.patch(path, json={"add_labels": "done"})
    assert await admin_async.label_changes() == sandbox.admin.label_changes()
    assert await admin_async.requests() == sandbox.admin.requests()
    fault = await admin_async.add_fault("messages.get", status=500, rate=0.5, times=3)
    assert await admin_async.faults() == [fault]
    await admin_async.clear_faults()
    clock = await admin_async.advance_clock(10)
    assert clock["offset_seconds"] == 10
    assert (await admin_async.info())["inboxes"] == [sandbox.inbox]
    await admin_async.reset()
    assert await admin_async.sent() == []


def test_errors_are_sandbox_errors(sandbox: Any) -> None:
    with pytest.raises(SandboxError) as missing:
        sandbox.admin.delivery("dlv_nope")
    assert missing.value.status == 404
    with pytest.raises(SandboxError) as bad:
        sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox, event_type="message.sent")
    assert bad.value.status == 400
    with pytest.raises(SandboxError) as nowhere:
        sandbox.admin.inject(from_="a@example.com", to="someone@example.com")
    assert nowhere.value.status == 400
    with pytest.raises(SandboxError) as unknown:
        sandbox.admin.inject(inbox_id="nobody@agentmail.to")
    assert unknown.value.status == 404


def test_unreachable_sandbox() -> None:
    with SandboxClient("http://127.0.0.1:9") as client, pytest.raises(SandboxError) as caught:
        client.sent()
    assert caught.value.status is None
    assert "not reachable" in str(caught.value)


def test_wait_for_deliveries_times_out(sandbox_factory: Any) -> None:
    box = sandbox_factory(time_scale=1.0)
    headers = {"Authorization": f"Bearer {box.api_key}"}
    with httpx.Client(base_url=box.url, headers=headers) as client:
        create_webhook(client, "http://127.0.0.1:9/closed")
    box.admin.inject(from_="a@example.com", to=box.inbox)
    with pytest.raises(TimeoutError, match="pending"):
        box.admin.wait_for_deliveries(timeout=0.2)
    with pytest.raises(TimeoutError):
        box.admin.wait_for_sent(1, timeout=0.1)


def test_inject_defaults_and_threading(sandbox: Any, raw: httpx.Client) -> None:
    first = sandbox.admin.inject(inbox_id=sandbox.inbox)
    message = raw.get(f"/v0/inboxes/{sandbox.inbox}/messages/{first['message_id']}").json()
    assert message["to"] == [sandbox.inbox]
    assert message["from"] == "sender@example.com"
    follow = sandbox.admin.inject(
        to=f"Demo <{sandbox.inbox.upper()}>", in_reply_to=first["message_id"]
    )
    assert follow["inbox_id"] == sandbox.inbox
    assert follow["thread_id"] == first["thread_id"]
    with pytest.raises(SandboxError) as duplicate:
        sandbox.admin.inject(inbox_id=sandbox.inbox, message_id=first["message_id"])
    assert duplicate.value.status == 409


def test_clock_moves_timestamps(sandbox: Any, raw: httpx.Client) -> None:
    before = sandbox.admin.inject(inbox_id=sandbox.inbox)
    sandbox.admin.advance_clock(86_400)
    after = sandbox.admin.inject(inbox_id=sandbox.inbox)
    path = f"/v0/inboxes/{sandbox.inbox}/messages/"
    t1 = raw.get(path + before["message_id"]).json()["timestamp"]
    t2 = raw.get(path + after["message_id"]).json()["timestamp"]
    assert t1[:10] != t2[:10]
    bad = httpx.post(f"{sandbox.url}/_sandbox/clock", json={})
    assert bad.status_code == 400
