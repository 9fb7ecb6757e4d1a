"""Bad deliveries get a clear 4xx with a reason and leave nothing behind.

The service runs as a real ``autoreply serve`` process with a configured secret; each
request is sent over HTTP and the SQLite file is inspected afterwards.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.intake import SECRET, WEBHOOK_PATH, intake_service, message_event, signed_headers
from tests.support.service_process import ServiceProcess

#: Every test talks to a real `autoreply serve` process.
pytestmark = pytest.mark.slow

OTHER_SECRET = "whsec_" + "dGhpcyBpcyBhbm90aGVyIHNlY3JldCEh"
PATH = WEBHOOK_PATH


def event(**overrides: object) -> dict[str, object]:
    return message_event(1, **overrides)


def signed(
    body: bytes, *, secret: str = SECRET, msg_id: str = "msg_1", at: datetime | None = None
) -> dict[str, str]:
    return signed_headers(body, secret=secret, msg_id=msg_id, at=at)


@pytest.fixture(name="service", scope="module")
def _service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = intake_service(tmp_path_factory.mktemp("rejects"))
    yield service
    service.stop()


def rows(service: ServiceProcess, table: str) -> int:
    path = Path(service.env["AUTOREPLY_DATABASE_URL"].removeprefix("sqlite:///"))
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


def post(service: ServiceProcess, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(service.url + PATH, content=body, headers=headers, timeout=10)


GOOD = json.dumps(event()).encode()


Headers = Callable[[], dict[str, str]]


def _without(name: str) -> Headers:
    def build() -> dict[str, str]:
        headers = signed(GOOD)
        del headers[name]
        return headers

    return build


def _with(name: str, value: str) -> Headers:
    return lambda: {**signed(GOOD), name: value}


def _signed_at(minutes: int, body: bytes = GOOD, secret: str = SECRET) -> Headers:
    return lambda: signed(body, secret=secret, at=datetime.now(UTC) + timedelta(minutes=minutes))


#: Headers are built when the test runs, never at collection: in a long suite a
#: timestamp taken at import is minutes stale by the time the request is sent.
CASES: list[tuple[str, bytes, Headers, int]] = [
    ("missing svix-id", GOOD, _without("svix-id"), 401),
    ("missing svix-timestamp", GOOD, _without("svix-timestamp"), 401),
    ("missing svix-signature", GOOD, _without("svix-signature"), 401),
    ("wrong secret", GOOD, _signed_at(0, secret=OTHER_SECRET), 401),
    ("tampered body", GOOD.replace(b"Hello", b"Hellp"), _signed_at(0), 401),
    ("10 min old", GOOD, _signed_at(-10), 401),
    ("10 min ahead", GOOD, _signed_at(10), 401),
    ("signature garbage", GOOD, _with("svix-signature", "garbage"), 401),
    ("signature v1,", GOOD, _with("svix-signature", "v1,"), 401),
    ("signature v1,!!!", GOOD, _with("svix-signature", "v1,!!!"), 401),
    ("signature bad base64", GOOD, _with("svix-signature", "v1,abc"), 401),
    ("signature empty", GOOD, _with("svix-signature", ""), 401),
    ("timestamp not a number", GOOD, _with("svix-timestamp", "soon"), 401),
    ("non-UTF-8 body", b"\xff\xfe{}", _signed_at(0, body=b"{}"), 400),
]


SIGNED_CASES: list[tuple[str, bytes, int]] = [
    ("not JSON", b"{not json", 400),
    ("JSON array", b"[1, 2]", 400),
    (
        "missing event_id",
        json.dumps({k: v for k, v in event().items() if k != "event_id"}).encode(),
        400,
    ),
    (
        "missing event_type",
        json.dumps({k: v for k, v in event().items() if k != "event_type"}).encode(),
        400,
    ),
    ("message.received without message", json.dumps(event(message=None)).encode(), 400),
    ("message without message_id", json.dumps(event(message={"inbox_id": "a"})).encode(), 400),
    ("lone surrogate in event_id", b'{"event_id":"\\ud800","event_type":"message.received"}', 400),
]


@pytest.mark.parametrize(("name", "body", "headers", "status"), CASES, ids=[c[0] for c in CASES])
def test_unverifiable_deliveries_are_refused(
    service: ServiceProcess, name: str, body: bytes, headers: Headers, status: int
) -> None:
    """Forged, stale, malformed or undecodable deliveries: 401/400 and nothing recorded."""
    response = post(service, body, headers())
    assert response.status_code == status, response.text
    reason = response.json()["reason"]
    assert reason
    assert response.headers["autoreply-outcome"] == "rejected"
    logged = delivery_lines(service)[-1]
    assert (logged["outcome"], logged["status"], logged["reason"]) == ("rejected", status, reason)
    assert rows(service, "deliveries") == 0
    assert rows(service, "jobs") == 0


@pytest.mark.parametrize(("name", "body", "status"), SIGNED_CASES, ids=[c[0] for c in SIGNED_CASES])
def test_correctly_signed_but_unusable_bodies_are_400(
    service: ServiceProcess, name: str, body: bytes, status: int
) -> None:
    """A signed body the service cannot use is a 400 with the reason, not a 500."""
    response = post(service, body, signed(body))
    assert response.status_code == status, response.text
    assert response.json()["reason"]
    assert rows(service, "jobs") == 0


def test_oversized_body_is_413(service: ServiceProcess) -> None:
    """A 2 MiB body is refused before it is read into memory or verified."""
    body = b'{"pad":"' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = post(service, body, signed(body))
    assert response.status_code == 413
    assert rows(service, "jobs") == 0


def test_wrong_method_is_405(service: ServiceProcess) -> None:
    """Only POST is a delivery."""
    response = httpx.get(service.url + PATH, timeout=10)
    assert response.status_code == 405
    assert rows(service, "deliveries") == 0


def test_other_event_types_are_acknowledged_and_ignored(service: ServiceProcess) -> None:
    """Events the service does not act on get 200 so Svix stops retrying; nothing enqueued."""
    body = json.dumps(
        {"type": "event", "event_type": "message.sent", "event_id": "evt_sent", "send": {}}
    ).encode()
    response = post(service, body, signed(body, msg_id="msg_sent"))
    assert response.status_code == 200
    assert response.headers["autoreply-outcome"] == "ignored"
    assert rows(service, "jobs") == 0


def test_rotated_secrets_are_all_accepted(tmp_path: Path) -> None:
    """During rotation both the old and the new secret verify."""
    service = intake_service(
        tmp_path, AUTOREPLY_WEBHOOK_SECRET=f"{SECRET},{OTHER_SECRET}", AUTOREPLY_DRY_RUN="1"
    )
    try:
        first = json.dumps(event(event_id="evt_a")).encode()
        second = json.dumps(
            event(event_id="evt_b", message={**event()["message"], "message_id": "<m2@x>"})  # type: ignore[dict-item]
        ).encode()
        assert post(service, first, signed(first, msg_id="msg_a")).status_code == 202
        assert (
            post(service, second, signed(second, secret=OTHER_SECRET, msg_id="msg_b")).status_code
            == 202
        )
    finally:
        service.stop()


def test_acknowledgements_name_their_outcome(service: ServiceProcess) -> None:
    """202 for a new delivery, 200 for its retry; the header says which, the body is empty.
    (Last in the module: it leaves a job behind in the shared service.)"""
    body = json.dumps(event()).encode()
    before = len(delivery_lines(service))
    first = post(service, body, signed(body))
    retry = post(service, body, signed(body))
    assert (first.status_code, first.headers["autoreply-outcome"]) == (202, "accepted")
    assert (retry.status_code, retry.headers["autoreply-outcome"]) == (200, "duplicate")
    assert first.content == retry.content == b""
    assert rows(service, "jobs") == 1
    # At INFO the retry is logged; the accepted delivery is left to its job's lines.
    logged = delivery_lines(service)[before:]
    assert [(line["outcome"], line["status"]) for line in logged] == [("duplicate", 200)]


def delivery_lines(service: ServiceProcess) -> list[dict[str, object]]:
    found = []
    for text in service.log().splitlines():
        with contextlib.suppress(ValueError):
            line = json.loads(text)
            if isinstance(line, dict) and line.get("event") == "delivery":
                found.append(line)
    return found
