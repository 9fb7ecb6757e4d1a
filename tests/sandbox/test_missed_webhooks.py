"""The admin verbs that create each missed-webhook situation: a disabled webhook, a deleted
one, deliveries dropped for a while, and a moved clock. No timing assertions: absence of
a delivery is read from the sandbox's own delivery log, which is written synchronously
when an event fans out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from agentmail.errors import NotFoundError

from service.sandbox import Clock, SandboxError
from tests.sandbox.conftest import NO_RETRY, create_webhook

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def inject(sandbox: Any, subject: str) -> Any:
    return sandbox.admin.inject(from_="jane@example.com", inbox_id=sandbox.inbox, subject=subject)


def of_webhook(sandbox: Any, webhook_id: str) -> list[Any]:
    return [d for d in sandbox.admin.deliveries() if d["webhook_id"] == webhook_id]


async def test_disabled_webhook_gets_nothing(
    sandbox: Any, receiver: Any, raw: httpx.Client, agentmail: Any
) -> None:
    webhook = create_webhook(raw, receiver.url)
    receiver.app.default_status = 500  # the first delivery keeps failing, so it stays pending
    failing = inject(sandbox, "before")
    receiver.wait_for(1)

    report = sandbox.admin.disable_webhook(webhook["webhook_id"])
    assert report["enabled"] is False
    assert (await agentmail.webhooks.get(webhook["webhook_id"])).enabled is False
    [pending] = of_webhook(sandbox, webhook["webhook_id"])
    assert pending["delivery_id"] == failing["deliveries"][0]["delivery_id"]
    assert pending["state"] == "cancelled"

    during = inject(sandbox, "while disabled")
    assert during["deliveries"] == []

    # Enabled again: later events arrive, the ones from the disabled period never do.
    await agentmail.webhooks.update(webhook["webhook_id"], enabled=True)
    receiver.app.default_status = 200
    after = inject(sandbox, "after")
    reports = sandbox.admin.wait_for_deliveries()
    mine = [d for d in reports if d["webhook_id"] == webhook["webhook_id"]]
    assert [d["message_id"] for d in mine] == [failing["message_id"], after["message_id"]]
    assert mine[-1]["state"] == "succeeded"
    delivered = {r.json()["message"]["message_id"] for r in receiver.received}
    assert during["message_id"] not in delivered


async def test_deleted_webhook_is_gone(
    sandbox: Any, receiver: Any, raw: httpx.Client, agentmail: Any
) -> None:
    scoped = create_webhook(raw, receiver.url, inbox=sandbox.inbox, client_id="hook-1")
    org = create_webhook(raw, f"{receiver.base_url}/org")

    sandbox.admin.delete_webhook(scoped["webhook_id"])
    listed = await agentmail.inboxes.webhooks.list(sandbox.inbox)
    assert listed.webhooks == []
    with pytest.raises(NotFoundError):
        await agentmail.inboxes.webhooks.get(
            sandbox.inbox, scoped["webhook_id"], request_options=NO_RETRY
        )
    assert [w.webhook_id for w in (await agentmail.webhooks.list()).webhooks] == [org["webhook_id"]]
    assert [w["webhook_id"] for w in sandbox.admin.webhooks()] == [org["webhook_id"]]

    result = inject(sandbox, "after delete")
    assert [d["webhook_id"] for d in result["deliveries"]] == [org["webhook_id"]]
    # Its client_id is free again, as after a REST delete.
    again = create_webhook(raw, receiver.url, inbox=sandbox.inbox, client_id="hook-1")
    assert again["webhook_id"] != scoped["webhook_id"]

    with pytest.raises(SandboxError) as caught:
        sandbox.admin.delete_webhook(scoped["webhook_id"])
    assert caught.value.status == 404


def test_dropped_deliveries_are_never_delivered(
    sandbox: Any, receiver: Any, raw: httpx.Client
) -> None:
    dropped = create_webhook(raw, f"{receiver.base_url}/dropped")
    steady = create_webhook(raw, f"{receiver.base_url}/steady")

    report = sandbox.admin.drop_deliveries(dropped["webhook_id"], seconds=600)
    assert report["dropping"] is True
    assert report["drop_until"] is not None
    lost = inject(sandbox, "lost")
    states = {
        ref["webhook_id"]: sandbox.admin.delivery(ref["delivery_id"]) for ref in lost["deliveries"]
    }
    assert states[dropped["webhook_id"]]["state"] == "dropped"
    assert states[dropped["webhook_id"]]["attempts"] == []

    # The window ends by the sandbox clock; what was dropped stays dropped.
    sandbox.admin.advance_clock(601)
    [hook] = [w for w in sandbox.admin.webhooks() if w["webhook_id"] == dropped["webhook_id"]]
    assert hook["dropping"] is False
    kept = inject(sandbox, "kept")
    reports = sandbox.admin.wait_for_deliveries()
    mine = [d for d in reports if d["webhook_id"] == dropped["webhook_id"]]
    assert [(d["message_id"], d["state"]) for d in mine] == [
        (lost["message_id"], "dropped"),
        (kept["message_id"], "succeeded"),
    ]
    arrivals = receiver.wait_for(3)
    by_path = sorted((r.path, r.json()["message"]["subject"]) for r in arrivals)
    assert by_path == [("/dropped", "kept"), ("/steady", "kept"), ("/steady", "lost")]
    assert steady["webhook_id"] in {d["webhook_id"] for d in reports}


def test_drop_until_stopped_ends_pending_retries(
    sandbox: Any, receiver: Any, raw: httpx.Client
) -> None:
    webhook = create_webhook(raw, receiver.url)
    receiver.app.default_status = 500
    failing = inject(sandbox, "failing")
    receiver.wait_for(1)

    report = sandbox.admin.drop_deliveries(webhook["webhook_id"])
    assert report["dropping"] is True
    assert report["drop_until"] is None  # until stopped
    assert sandbox.admin.delivery(failing["deliveries"][0]["delivery_id"])["state"] == "dropped"
    sandbox.admin.advance_clock(86_400)
    assert inject(sandbox, "still dropped")["deliveries"] != []
    assert {d["state"] for d in of_webhook(sandbox, webhook["webhook_id"])} == {"dropped"}

    assert sandbox.admin.stop_dropping(webhook["webhook_id"])["dropping"] is False
    receiver.app.default_status = 200
    back = inject(sandbox, "back")
    reports = sandbox.admin.wait_for_deliveries()
    assert [d["state"] for d in reports if d["message_id"] == back["message_id"]] == ["succeeded"]

    with pytest.raises(SandboxError) as caught:
        sandbox.admin.drop_deliveries("ep_missing", seconds=1)
    assert caught.value.status == 404


async def test_clock_moves_message_timestamps(sandbox_factory: Any) -> None:
    sandbox = sandbox_factory(clock=Clock(lambda: T0))
    assert sandbox.admin.clock()["now"] == "2026-03-01T12:00:00.000Z"
    first = inject(sandbox, "first")
    moved = sandbox.admin.advance_clock(3600)
    assert moved["now"] == "2026-03-01T13:00:00.000Z"
    assert moved["offset_seconds"] == 3600
    second = inject(sandbox, "second")
    set_to = sandbox.admin.set_clock(datetime(2026, 2, 1, 8, 30))  # naive means UTC
    assert set_to["now"] == "2026-02-01T08:30:00.000Z"
    earlier = inject(sandbox, "earlier")
    assert sandbox.admin.set_clock("2026-03-02T00:00:00+01:00")["now"] == (
        "2026-03-01T23:00:00.000Z"
    )

    async with httpx.AsyncClient() as http:
        client = sandbox.sdk(httpx_client=http)
        messages = client.inboxes.messages
        stamps = {
            m: (await messages.get(sandbox.inbox, r["message_id"])).timestamp
            for m, r in (("first", first), ("second", second), ("earlier", earlier))
        }
        assert stamps == {
            "first": T0,
            "second": T0 + timedelta(hours=1),
            "earlier": datetime(2026, 2, 1, 8, 30, tzinfo=UTC),
        }
        listed = await messages.list(sandbox.inbox, after=datetime(2026, 2, 15, tzinfo=UTC))
        assert [m.subject for m in listed.messages] == ["second", "first"]
        listed = await messages.list(sandbox.inbox)
        assert [m.subject for m in listed.messages] == ["second", "first", "earlier"]


def test_bad_clock_moves_are_400(sandbox: Any) -> None:
    for body in ({}, {"advance_seconds": 1, "now": "2026-01-01T00:00:00Z"}, {"now": "soon"}):
        answer = httpx.post(f"{sandbox.url}/_sandbox/clock", json=body)
        assert answer.status_code == 400, body
        assert answer.json()["code"] == "validation_error"
