"""Smoke: the fixtures start a sandbox, the SDK reaches it, a delivery arrives."""

from __future__ import annotations

from typing import Any

from tests.support.receiver import verify


async def test_inject_reaches_receiver(sandbox: Any, receiver: Any, agentmail: Any) -> None:
    webhook = await agentmail.webhooks.create(url=receiver.url, event_types=["message.received"])
    result = sandbox.admin.inject(from_="jane@example.com", to=sandbox.inbox, text="hi")
    [request] = receiver.wait_for(1)
    event = verify(request, webhook.secret)
    assert event["message"]["message_id"] == result["message_id"]
