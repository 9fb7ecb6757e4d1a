"""Intake of the event types besides received mail: verified and deduplicated alike.

A real ``autoreply serve`` over HTTP, a real SQLite file. Bounces and complaints go to
the suppression list (tests/service/test_suppression_e2e.py has what they do there);
here: they are verified, recorded once by ``event_id`` and answered, and a type the
service does not act on is recorded and answered 200 ``ignored``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.intake import (
    WEBHOOK_PATH,
    bounce_event,
    complaint_event,
    intake_service,
    message_event,
    signed_headers,
)
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.slow


@pytest.fixture(name="service", scope="module")
def _service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = intake_service(tmp_path_factory.mktemp("events"))
    yield service
    service.stop()


def events(service: ServiceProcess) -> dict[str, str]:
    """Every recorded event: its id and type."""
    path = Path(service.env["AUTOREPLY_DATABASE_URL"].removeprefix("sqlite:///"))
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT event_id, event_type FROM events").fetchall())


def deliver(service: ServiceProcess, event: dict[str, object], msg_id: str) -> httpx.Response:
    body = json.dumps(event).encode()
    return httpx.post(
        service.url + WEBHOOK_PATH,
        content=body,
        headers=signed_headers(body, msg_id=msg_id),
        timeout=10,
    )


def outcome(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.headers["autoreply-outcome"]


def test_a_bounce_is_recorded_once(service: ServiceProcess) -> None:
    """A bounce of a message that is no reply of ours: recorded, acknowledged; its
    retry (same svix-id) and a second event id-copy under a new svix-id are duplicates."""
    event = bounce_event(11, message_id="<not-ours@agentmail.to>")
    assert outcome(deliver(service, event, "msg_b11")) == (200, "ignored")
    assert outcome(deliver(service, event, "msg_b11")) == (200, "duplicate")
    assert outcome(deliver(service, event, "msg_b11_again")) == (200, "duplicate")
    assert events(service)["evt_bounce_11"] == "message.bounced"


def test_a_complaint_is_recorded(service: ServiceProcess) -> None:
    event = complaint_event(12, message_id="<not-ours@agentmail.to>")
    assert outcome(deliver(service, event, "msg_c12")) == (200, "ignored")
    assert events(service)["evt_complaint_12"] == "message.complained"


def test_a_type_not_acted_on_is_recorded_and_ignored(service: ServiceProcess) -> None:
    sent = {
        "type": "event",
        "event_type": "message.delivered",
        "event_id": "evt_delivered_13",
        "delivery": {},
    }
    assert outcome(deliver(service, sent, "msg_d13")) == (200, "ignored")
    assert outcome(deliver(service, sent, "msg_d13")) == (200, "duplicate")
    assert events(service)["evt_delivered_13"] == "message.delivered"


def test_a_malformed_bounce_is_refused_with_the_field(service: ServiceProcess) -> None:
    event = bounce_event(14)
    event["bounce"] = {**event["bounce"], "recipients": None}  # type: ignore[dict-item]
    response = deliver(service, event, "msg_b14")
    assert response.status_code == 400
    assert "bounce.recipients" in response.json()["reason"]
    assert "evt_bounce_14" not in events(service)


def test_bounces_for_another_inbox_are_ignored_unrecorded(tmp_path: Path) -> None:
    """AUTOREPLY_INBOX_IDS scopes feedback as it scopes received mail."""
    service = intake_service(tmp_path, AUTOREPLY_INBOX_IDS="other@agentmail.to")
    try:
        response = deliver(service, bounce_event(15), "msg_b15")
        assert outcome(response) == (200, "ignored")
        assert "evt_bounce_15" not in events(service)
    finally:
        service.stop()


def test_with_suppression_off_bounces_are_not_acted_on(tmp_path: Path) -> None:
    """AUTOREPLY_SUPPRESSION=false: a bounce, even one the service could not read, is
    recorded and ignored like any type the service does not act on."""
    service = intake_service(tmp_path, AUTOREPLY_SUPPRESSION="false")
    try:
        broken = {"type": "event", "event_type": "message.bounced", "event_id": "evt_b16"}
        assert outcome(deliver(service, broken, "msg_b16")) == (200, "ignored")
        assert events(service)["evt_b16"] == "message.bounced"
    finally:
        service.stop()


def test_a_bounce_before_our_reply_s_sent_id_is_recorded_is_asked_for_again(
    service: ServiceProcess,
) -> None:
    """A worker stopped right after sending: its job still runs under a lease, its reply
    stored, no sent id. A bounce in that thread is 503 with the reason and nothing
    recorded (it was 200 ignored: lost); Svix's retry, once the sent id is recorded, is
    taken (202) and suppresses."""
    assert outcome(deliver(service, message_event(21), "msg_m21")) == (202, "accepted")
    path = Path(service.env["AUTOREPLY_DATABASE_URL"].removeprefix("sqlite:///"))
    reply = {
        "to": "jane@example.com",
        "text": "Thanks",
        "html": None,
        "headers": {},
        "idempotency_key": "autoreply-21",
        "template": "default",
        "rule": None,
    }
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE jobs SET state = 'running', lease_owner = 'stopped', lease_until = 9e12,"
            " reply = ? WHERE message_id = '<m21@example.com>'",
            (json.dumps(reply),),
        )
    bounce = bounce_event(21, message_id="<reply21@agentmail.to>")
    bounce["bounce"] = {**bounce["bounce"], "thread_id": "thd_21"}  # type: ignore[dict-item]
    early = deliver(service, bounce, "msg_b21")
    assert outcome(early) == (503, "unavailable")
    assert "on its way" in early.json()["reason"]
    assert "evt_bounce_21" not in events(service)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE jobs SET sent_message_id = '<reply21@agentmail.to>'"
            " WHERE message_id = '<m21@example.com>'"
        )
    assert outcome(deliver(service, bounce, "msg_b21")) == (202, "accepted")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT address, cause FROM suppressions").fetchall() == [
            ("jane@example.com", "bounce")
        ]
