"""Bounces and complaints: the sandbox reports them as AgentMail does, shaped as the SDK's
``MessageBouncedEvent`` / ``MessageComplainedEvent`` and signed like every delivery."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from agentmail.events.types.bounce import Bounce
from agentmail.events.types.complaint import Complaint
from agentmail.events.types.message_bounced_event import MessageBouncedEvent
from agentmail.events.types.message_complained_event import MessageComplainedEvent
from agentmail.events.types.recipient import Recipient

from service.cli import main
from service.sandbox import SandboxError
from tests.sandbox.conftest import create_webhook, strict
from tests.support.receiver import verify

FEEDBACK = ["message.bounced", "message.complained"]


def a_reply(sandbox: Any, raw: httpx.Client, sender: str = "jane@example.com") -> dict[str, Any]:
    """Inject a message from ``sender`` and reply to it as the service would; the reply."""
    inbound = sandbox.admin.inject(from_=f"Jane <{sender}>", to=sandbox.inbox, text="hi")
    answer = raw.post(
        f"/v0/inboxes/{sandbox.inbox}/messages/{inbound['message_id']}/reply", json={"text": "ok"}
    )
    assert answer.status_code == 200, answer.text
    reply: dict[str, Any] = answer.json()
    return reply


def test_a_bounce_is_a_message_bounced_event(
    sandbox: Any, receiver: Any, raw: httpx.Client
) -> None:
    webhook = create_webhook(raw, receiver.url, FEEDBACK)
    reply = a_reply(sandbox, raw)
    result = sandbox.admin.bounce(sandbox.inbox, reply["message_id"])
    [request] = receiver.wait_for(1)
    raw_event = verify(request, webhook["secret"])
    strict(Bounce, raw_event["bounce"])
    strict(Recipient, raw_event["bounce"]["recipients"][0])
    event = strict(MessageBouncedEvent, raw_event)
    assert event.event_type == "message.bounced"
    assert event.event_id == result["event_id"]
    assert request.svix_id == result["deliveries"][0]["svix_id"]
    assert event.bounce.inbox_id == sandbox.inbox
    assert event.bounce.message_id == reply["message_id"]
    assert event.bounce.thread_id == reply["thread_id"]
    assert (event.bounce.type, event.bounce.sub_type) == ("Permanent", "General")
    assert [(r.address, r.status) for r in event.bounce.recipients] == [
        ("jane@example.com", "bounced")
    ]
    assert result["recipients"] == ["jane@example.com"]


def test_a_transient_bounce_names_its_type(sandbox: Any, receiver: Any, raw: httpx.Client) -> None:
    webhook = create_webhook(raw, receiver.url, FEEDBACK)
    reply = a_reply(sandbox, raw)
    sandbox.admin.bounce(
        sandbox.inbox, reply["message_id"], type_="Transient", sub_type="MailboxFull"
    )
    [request] = receiver.wait_for(1)
    event = strict(MessageBouncedEvent, verify(request, webhook["secret"]))
    assert (event.bounce.type, event.bounce.sub_type) == ("Transient", "MailboxFull")


def test_a_complaint_is_a_message_complained_event(
    sandbox: Any, receiver: Any, raw: httpx.Client
) -> None:
    webhook = create_webhook(raw, receiver.url, FEEDBACK)
    reply = a_reply(sandbox, raw)
    result = sandbox.admin.complain(sandbox.inbox, reply["message_id"])
    [request] = receiver.wait_for(1)
    raw_event = verify(request, webhook["secret"])
    strict(Complaint, raw_event["complaint"])
    event = strict(MessageComplainedEvent, raw_event)
    assert event.event_id == result["event_id"]
    assert event.complaint.message_id == reply["message_id"]
    assert (event.complaint.type, event.complaint.sub_type) == ("abuse", "spam")
    assert event.complaint.recipients == ["jane@example.com"]


def test_only_subscribed_webhooks_get_feedback(
    sandbox: Any, receiver: Any, raw: httpx.Client
) -> None:
    """A webhook for message.received alone is not sent bounces."""
    create_webhook(raw, receiver.url, ["message.received"])
    reply = a_reply(sandbox, raw)
    receiver.wait_for(1)  # the inbound message
    result = sandbox.admin.bounce(sandbox.inbox, reply["message_id"])
    assert result["deliveries"] == []


def test_refusals(sandbox: Any, raw: httpx.Client) -> None:
    """Unknown messages are 404; a received message, a stranger as recipient, or a
    status on a complaint are 422/400 with the reason."""
    reply = a_reply(sandbox, raw)
    inbound = sandbox.admin.inject(from_="b@example.com", to=sandbox.inbox, text="x")
    with pytest.raises(SandboxError) as missing:
        sandbox.admin.bounce(sandbox.inbox, "<nope@example.com>")
    assert missing.value.status == 404
    with pytest.raises(SandboxError) as received:
        sandbox.admin.bounce(sandbox.inbox, inbound["message_id"])
    assert received.value.status == 422
    assert "was not sent" in str(received.value)
    with pytest.raises(SandboxError) as stranger:
        sandbox.admin.complain(sandbox.inbox, reply["message_id"], recipients=["x@example.org"])
    assert stranger.value.status == 422
    assert "not a recipient" in str(stranger.value)
    answer = raw.post(
        "/_sandbox/complaint",
        json={"inbox_id": sandbox.inbox, "message_id": reply["message_id"], "status": "x"},
    )
    assert answer.status_code == 400
    assert "status" in answer.text


def test_bounce_and_complain_verbs(
    sandbox: Any, raw: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    reply = a_reply(sandbox, raw)
    url = ["--url", sandbox.url]
    assert main(["sandbox", "bounce", sandbox.inbox, reply["message_id"], *url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("message.bounced evt_")
    assert f"for {reply['message_id']} (jane@example.com), 0 deliveries" in out
    args = ["sandbox", "complain", sandbox.inbox, reply["message_id"], "--type", "fraud"]
    assert main([*args, "--json", *url]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["event_type"] == "message.complained"
    assert main(["sandbox", "bounce", sandbox.inbox, "<nope@x>", *url]) == 1
    assert capsys.readouterr().err.startswith("error: HTTP 404")
