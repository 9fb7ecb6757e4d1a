"""Mail between two sandbox inboxes is delivered inbound, so two bots can write to each other."""

from __future__ import annotations

from typing import Any

import httpx

from tests.sandbox.conftest import create_webhook
from tests.support.receiver import verify

A, B = "alpha@agentmail.to", "beta@agentmail.to"


def test_two_inboxes_write_to_each_other(sandbox_factory: Any, receiver: Any) -> None:
    box = sandbox_factory(inboxes=[A, B])
    headers = {"Authorization": f"Bearer {box.api_key}"}
    with httpx.Client(base_url=box.url, headers=headers) as api:
        hook_a = create_webhook(api, f"{receiver.base_url}/a", inbox=A)
        hook_b = create_webhook(api, f"{receiver.base_url}/b", inbox=B)
        first = api.post(
            f"/v0/inboxes/{A}/messages/send",
            json={
                "to": [B],
                "subject": "Ping",
                "text": "ping",
                "headers": {"Auto-Submitted": "auto-replied"},
            },
        ).json()

        [arrived_b] = receiver.wait_for(1)
        assert arrived_b.path == "/b"
        event = verify(arrived_b, hook_b["secret"])
        inbound = event["message"]
        assert inbound["inbox_id"] == B
        assert inbound["message_id"] == first["message_id"]
        assert inbound["from"] == A
        assert inbound["labels"] == ["received", "unread"]
        assert inbound["headers"]["Auto-Submitted"] == "auto-replied"
        assert inbound["thread_id"] != first["thread_id"]

        reply = api.post(
            f"/v0/inboxes/{B}/messages/{inbound['message_id']}/reply", json={"text": "pong"}
        ).json()
        assert reply["thread_id"] == inbound["thread_id"]

        arrived_a = receiver.wait_for(2)[1]
        assert arrived_a.path == "/a"
        back = verify(arrived_a, hook_a["secret"])["message"]
        assert back["inbox_id"] == A
        assert back["subject"] == "Re: Ping"
        assert back["in_reply_to"] == first["message_id"]
        # The answer joins the thread of A's original message.
        assert back["thread_id"] == first["thread_id"]
        thread = api.get(f"/v0/inboxes/{A}/threads/{first['thread_id']}").json()
        assert [m["labels"][0] for m in thread["messages"]] == ["sent", "received"]

    sent = box.admin.sent()
    assert [(s["inbox_id"], s["operation"]) for s in sent] == [
        (A, "messages.send"),
        (B, "messages.reply"),
    ]


def test_mail_to_outside_addresses_is_only_sent(sandbox: Any, receiver: Any) -> None:
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}
    with httpx.Client(base_url=sandbox.url, headers=headers) as api:
        create_webhook(api, receiver.url)
        api.post(
            f"/v0/inboxes/{sandbox.inbox}/messages/send",
            json={"to": "someone@example.com", "text": "x"},
        )
        listed = api.get(f"/v0/inboxes/{sandbox.inbox}/messages").json()
    assert [m["labels"] for m in listed["messages"]] == [["sent"]]
    assert sandbox.admin.deliveries() == []
