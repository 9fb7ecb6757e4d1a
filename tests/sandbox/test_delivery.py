"""The webhook sender: signatures, payloads, retries on Svix's schedule, storms, redelivery.

Every delivery is checked by the receiver with the real ``svix`` library. Timing checks
are lower bounds only (gaps at least the scaled schedule), never upper bounds.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from agentmail.events.types.message_received_event import MessageReceivedEvent
from agentmail.events.types.message_sent_event import MessageSentEvent
from agentmail.messages.types.message import Message
from agentmail.threads.types.thread_item import ThreadItem

from service.sandbox.delivery import RETRY_SCHEDULE
from service.sandbox.events import PAYLOAD_CAP_BYTES
from tests.sandbox.conftest import create_webhook, strict
from tests.support.receiver import Received, verify
from tests.support.waiting import until_sync


def assert_event(event: dict[str, Any]) -> MessageReceivedEvent:
    """A strictly valid message.received* envelope (message and thread checked too)."""
    strict(Message, event["message"])
    strict(ThreadItem, event["thread"])
    parsed = strict(MessageReceivedEvent, event)
    assert parsed.type == "event"
    assert parsed.event_id.startswith("evt_")
    return parsed


def assert_gaps(arrivals: list[Received], scale: float) -> None:
    """Each retry came no sooner than the scaled Svix delay after the previous attempt."""
    for index in range(1, len(arrivals)):
        gap = arrivals[index].arrived - arrivals[index - 1].arrived
        assert gap >= RETRY_SCHEDULE[index] * scale * 0.99, (index, gap)


def test_delivery_is_signed_and_shaped(sandbox: Any, receiver: Any, raw: httpx.Client) -> None:
    webhook = create_webhook(raw, receiver.url, headers={"X-Tenant": "t1"})
    result = sandbox.admin.inject(
        from_="Jane <jane@example.com>",
        to=sandbox.inbox,
        subject="Hi",
        text="Hello",
        headers={"Auto-Submitted": "auto-generated", "List-Id": "<x.example.com>"},
    )
    [request] = receiver.wait_for(1)
    event = assert_event(verify(request, webhook["secret"]))
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-tenant"] == "t1"
    assert request.svix_id.startswith("msg_")
    assert request.svix_id == result["deliveries"][0]["svix_id"]
    assert event.event_type == "message.received"
    assert event.event_id == result["event_id"]
    assert event.message.message_id == result["message_id"]
    assert event.message.labels == ["received", "unread"]
    assert event.message.headers is not None
    assert event.message.headers["Auto-Submitted"] == "auto-generated"
    assert event.thread.thread_id == result["thread_id"]
    assert event.thread.message_count == 1
    [report] = sandbox.admin.wait_for_deliveries()
    assert report["state"] == "succeeded"
    assert [a["status"] for a in report["attempts"]] == [200]
    assert report["event_id"] == result["event_id"]


def test_wrong_secret_does_not_verify(sandbox: Any, receiver: Any, raw: httpx.Client) -> None:
    create_webhook(raw, receiver.url)
    other = create_webhook(raw, "http://127.0.0.1:9/other", ["message.sent"])
    sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox, text="x")
    [request] = receiver.wait_for(1)
    with pytest.raises(Exception, match="signature"):
        verify(request, other["secret"])


def test_retries_keep_svix_id_and_resign(sandbox_factory: Any, receiver: Any) -> None:
    scale = 1e-4
    box = sandbox_factory(time_scale=scale)
    headers = {"Authorization": f"Bearer {box.api_key}"}
    with httpx.Client(base_url=box.url, headers=headers) as client:
        webhook = create_webhook(client, receiver.url)
    receiver.script(500, 503, 302)
    box.admin.inject(from_="a@example.com", to=box.inbox, text="x")
    [report] = box.admin.wait_for_deliveries(timeout=30)
    requests = receiver.received
    assert [r.answered for r in requests] == [500, 503, 302, 200]
    assert len({r.svix_id for r in requests}) == 1
    assert len({r.body for r in requests}) == 1
    for request in requests:
        assert_event(verify(request, webhook["secret"]))
    assert report["state"] == "succeeded"
    assert [a["status"] for a in report["attempts"]] == [500, 503, 302, 200]
    assert_gaps(requests, scale)


def test_failing_receiver_gets_exactly_eight_attempts(sandbox_factory: Any, receiver: Any) -> None:
    scale = 1e-5
    box = sandbox_factory(time_scale=scale)
    receiver.app.default_status = 500
    headers = {"Authorization": f"Bearer {box.api_key}"}
    with httpx.Client(base_url=box.url, headers=headers) as client:
        webhook = create_webhook(client, receiver.url)
    box.admin.inject(from_="a@example.com", to=box.inbox, text="x")
    [report] = box.admin.wait_for_deliveries(timeout=60)
    assert report["state"] == "failed"
    assert len(report["attempts"]) == len(RETRY_SCHEDULE) == 8
    requests = receiver.received
    assert len(requests) == 8
    assert len({r.svix_id for r in requests}) == 1
    for request in requests:
        verify(request, webhook["secret"])
    assert_gaps(requests, scale)


def test_unreachable_url_fails_with_errors(sandbox_factory: Any) -> None:
    box = sandbox_factory(time_scale=1e-5)
    headers = {"Authorization": f"Bearer {box.api_key}"}
    with httpx.Client(base_url=box.url, headers=headers) as client:
        create_webhook(client, "http://127.0.0.1:9/closed")
    box.admin.inject(from_="a@example.com", to=box.inbox, text="x")
    [report] = box.admin.wait_for_deliveries(timeout=60)
    assert report["state"] == "failed"
    assert all(a["status"] is None and a["error"] for a in report["attempts"])


def test_slow_receiver_times_out_then_retry_succeeds(sandbox_factory: Any, receiver: Any) -> None:
    box = sandbox_factory(attempt_timeout=0.3)
    receiver.script((200, 1.5))
    headers = {"Authorization": f"Bearer {box.api_key}"}
    with httpx.Client(base_url=box.url, headers=headers) as client:
        create_webhook(client, receiver.url)
    box.admin.inject(from_="a@example.com", to=box.inbox, text="x")
    [report] = box.admin.wait_for_deliveries(timeout=30)
    first, second = report["attempts"]
    assert first["status"] is None
    assert "timeout" in (first["error"] or "")
    assert second["status"] == 200
    assert report["state"] == "succeeded"


def test_duplicate_storm(sandbox: Any, receiver: Any, raw: httpx.Client) -> None:
    webhook = create_webhook(raw, receiver.url)
    result = sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox, text="x", copies=5)
    assert len(result["deliveries"]) == 5
    assert len({d["delivery_id"] for d in result["deliveries"]}) == 5
    requests = receiver.wait_for(5)
    assert len({r.svix_id for r in requests}) == 1
    events = [verify(r, webhook["secret"]) for r in requests]
    assert {e["event_id"] for e in events} == {result["event_id"]}
    reports = sandbox.admin.wait_for_deliveries()
    assert [r["state"] for r in reports] == ["succeeded"] * 5


def test_redelivery(sandbox: Any, receiver: Any, raw: httpx.Client) -> None:
    webhook = create_webhook(raw, receiver.url)
    result = sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox, text="x")
    [original] = receiver.wait_for(1)
    delivery_id = result["deliveries"][0]["delivery_id"]

    same = sandbox.admin.redeliver(delivery_id, copies=2)
    assert same["event_id"] == result["event_id"]
    new_svix = sandbox.admin.redeliver(delivery_id, new_svix_id=True)
    new_event = sandbox.admin.redeliver(delivery_id, new_event_id=True)
    requests = receiver.wait_for(5)
    by_svix: dict[str, list[dict[str, Any]]] = {}
    for request in requests:
        by_svix.setdefault(request.svix_id, []).append(verify(request, webhook["secret"]))
    assert len(by_svix[original.svix_id]) == 3
    assert same["deliveries"][0]["svix_id"] == original.svix_id
    [renamed] = by_svix[new_svix["deliveries"][0]["svix_id"]]
    assert renamed["event_id"] == result["event_id"]
    assert renamed == original.json()
    [second_event] = by_svix[new_event["deliveries"][0]["svix_id"]]
    assert second_event["event_id"] == new_event["event_id"] != result["event_id"]
    assert second_event["message"] == original.json()["message"]


@pytest.mark.parametrize(
    "variant",
    ["message.received.spam", "message.received.blocked", "message.received.unauthenticated"],
)
def test_variants_go_only_to_webhooks_listing_them(
    sandbox: Any, receiver: Any, raw: httpx.Client, variant: str
) -> None:
    plain = create_webhook(raw, f"{receiver.base_url}/plain")
    special = create_webhook(raw, f"{receiver.base_url}/special", [variant])
    both = create_webhook(raw, f"{receiver.base_url}/both", ["message.received", variant])
    flagged = sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox, event_type=variant)
    assert {d["webhook_id"] for d in flagged["deliveries"]} == {
        special["webhook_id"],
        both["webhook_id"],
    }
    normal = sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox)
    assert {d["webhook_id"] for d in normal["deliveries"]} == {
        plain["webhook_id"],
        both["webhook_id"],
    }
    requests = receiver.wait_for(4)
    variant_events = [r.json() for r in requests if r.json()["event_type"] == variant]
    assert len(variant_events) == 2
    for event in variant_events:
        parsed = assert_event(event)
        assert variant.rsplit(".", 1)[1] in parsed.message.labels


def test_scope_and_enabled(sandbox_factory: Any, receiver: Any) -> None:
    box = sandbox_factory(inboxes=["a@agentmail.to", "b@agentmail.to"])
    headers = {"Authorization": f"Bearer {box.api_key}"}
    base = receiver.base_url
    with httpx.Client(base_url=box.url, headers=headers) as client:
        everything = create_webhook(client, f"{base}/all")
        only_b = create_webhook(client, f"{base}/b", inbox_ids=["b@agentmail.to"])
        by_pod = create_webhook(client, f"{base}/pod", pod_ids=["pod_sandbox"])
        scoped_a = create_webhook(client, f"{base}/a", inbox="a@agentmail.to")
        disabled = create_webhook(client, f"{base}/off")
        client.patch(f"/v0/webhooks/{disabled['webhook_id']}", json={"enabled": False})
    to_a = box.admin.inject(from_="x@example.com", to="a@agentmail.to")
    to_b = box.admin.inject(from_="x@example.com", to="b@agentmail.to")
    assert {d["webhook_id"] for d in to_a["deliveries"]} == {
        everything["webhook_id"],
        by_pod["webhook_id"],
        scoped_a["webhook_id"],
    }
    assert {d["webhook_id"] for d in to_b["deliveries"]} == {
        everything["webhook_id"],
        only_b["webhook_id"],
        by_pod["webhook_id"],
    }
    # One event is one Svix message: every webhook gets the same svix-id.
    assert len({d["svix_id"] for d in to_a["deliveries"]}) == 1
    box.admin.wait_for_deliveries()


def test_oversized_payload_omits_bodies(sandbox: Any, receiver: Any, raw: httpx.Client) -> None:
    webhook = create_webhook(raw, receiver.url)
    big = "x" * 600_000
    result = sandbox.admin.inject(
        from_="a@example.com", to=sandbox.inbox, subject="Big", text=big, html=f"<p>{big}</p>"
    )
    [request] = receiver.wait_for(1)
    assert len(request.body) <= PAYLOAD_CAP_BYTES
    event = verify(request, webhook["secret"])
    assert_event(event)
    for key in ("text", "html", "extracted_text", "extracted_html"):
        assert key not in event["message"]
    assert event["message"]["subject"] == "Big"
    stored = raw.get(f"/v0/inboxes/{sandbox.inbox}/messages/{result['message_id']}").json()
    assert stored["text"] == big


def test_html_only_payload(sandbox: Any, receiver: Any, raw: httpx.Client) -> None:
    webhook = create_webhook(raw, receiver.url)
    sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox, html="<b>hi</b>")
    [request] = receiver.wait_for(1)
    message = verify(request, webhook["secret"])["message"]
    assert message["html"] == "<b>hi</b>"
    assert "text" not in message
    assert "preview" not in message


def test_message_sent_event(sandbox: Any, receiver: Any, raw: httpx.Client) -> None:
    webhook = create_webhook(raw, receiver.url, ["message.sent"])
    inbound = sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox, text="x")
    assert inbound["deliveries"] == []
    answer = raw.post(
        f"/v0/inboxes/{sandbox.inbox}/messages/{inbound['message_id']}/reply",
        json={"text": "ok", "cc": ["c@example.com"]},
    ).json()
    [request] = receiver.wait_for(1)
    event = strict(MessageSentEvent, verify(request, webhook["secret"]))
    assert event.send.message_id == answer["message_id"]
    assert event.send.thread_id == answer["thread_id"]
    assert event.send.recipients == ["a@example.com", "c@example.com"]
    assert "message" not in json.loads(request.body)


def test_deleting_the_webhook_stops_retries(sandbox: Any, receiver: Any, raw: httpx.Client) -> None:
    webhook = create_webhook(raw, receiver.url)
    receiver.app.default_status = 500
    sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox, text="x")
    receiver.wait_for(2)
    assert raw.delete(f"/v0/webhooks/{webhook['webhook_id']}").status_code == 204
    [report] = sandbox.admin.wait_for_deliveries(timeout=30)
    assert report["state"] == "cancelled"
    assert len(report["attempts"]) < 8


def test_reset_cancels_and_clears(sandbox: Any, receiver: Any, raw: httpx.Client) -> None:
    create_webhook(raw, receiver.url)
    receiver.app.default_status = 500
    raw.post("/v0/inboxes", json={"username": "extra"})
    sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox, text="x")
    sandbox.admin.add_fault("inboxes.list", status=500, rate=0.0)
    sandbox.admin.advance_clock(3600)
    receiver.wait_for(1)
    sandbox.admin.reset()
    assert sandbox.admin.deliveries() == []
    assert sandbox.admin.faults() == []
    assert sandbox.admin.sent() == []
    assert sandbox.admin.requests() == {"operations": {}, "in_flight": {}}
    assert [i["inbox_id"] for i in raw.get("/v0/inboxes").json()["inboxes"]] == [sandbox.inbox]
    assert raw.get("/v0/webhooks").json()["webhooks"] == []
    assert sandbox.admin.info()["inboxes"] == [sandbox.inbox]
    count = len(receiver.received)
    until_sync(lambda: sandbox.app_state.deliverer.running == 0, what="delivery tasks to end")
    assert len(receiver.received) == count
