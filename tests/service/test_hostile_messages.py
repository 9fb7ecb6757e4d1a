"""Messages built to break the parsers: a stored job ends at once, with the reason.

The security review's finding: a ``From`` of about 500 ``(`` raised RecursionError in
the standard library's address parser, which the worker took for a transient error and
retried up to 40 times, logging a traceback each time. Input that cannot be parsed is a
permanent failure (dead-lettered on the first attempt, reason recorded, no traceback);
mass mail too large to parse cheaply is skipped with its own reason.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from service.agentmail_api import AgentMailApi
from service.models import Delivery, JobState, MessageRef
from service.store import Store, open_store
from tests.support.waiting import until_awaited
from tests.support.workers import make_worker

INBOX = "support@example.agentmail.to"


def payload(**fields: Any) -> dict[str, Any]:
    """A complete ``message`` object (text and headers present: no fetch needed)."""
    base: dict[str, Any] = {
        "inbox_id": INBOX,
        "message_id": "<hostile@example.com>",
        "thread_id": "thread-hostile",
        "from": "Jane <jane@example.com>",
        "to": [INBOX],
        "subject": "Hello",
        "text": "Hello",
        "labels": ["received"],
        "headers": {},
        "timestamp": "2026-11-30T09:00:00Z",
    }
    return base | fields


async def run_one(store: Store, message: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """Record ``message`` as delivered, let a real worker take it to a final state, and
    return the job and every log line the worker wrote meanwhile."""
    delivery = Delivery(
        svix_id="msg_hostile",
        event_id="evt_hostile",
        event_type="message.received",
        message=MessageRef(
            inbox_id=message["inbox_id"],
            message_id=message["message_id"],
            thread_id=message["thread_id"],
        ),
        message_json=orjson.dumps(message).decode(),
    )
    await store.record_delivery(delivery, now=time.time())
    # No request may reach AgentMail: nothing listens on port 9.
    api = AgentMailApi(api_key="am_unused", base_url="http://127.0.0.1:9", timeout=2)
    worker = make_worker(store, api, concurrency=1)
    job: Any = None

    async def final() -> bool:
        nonlocal job
        job = await store.get_job(INBOX, message["message_id"])
        assert job is not None
        return job.state in (JobState.DONE, JobState.SKIPPED, JobState.DEAD)

    def describe(job: Any, logs: list[Any]) -> str:
        return f"job still {getattr(job, 'state', None)}: {logs}"

    with structlog.testing.capture_logs() as logs:
        await worker.start()
        try:
            await until_awaited(final, within=30, what=lambda: describe(job, logs))
            return job, logs
        finally:
            await worker.stop(5)
            await api.aclose()


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    opened = open_store(f"sqlite:///{tmp_path / 'hostile.db'}")
    await opened.open()
    yield opened
    await opened.close()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"from": "(" * 500 + "jane@example.com"}, "message.from: comments nested over 32 deep"),
        ({"from": "(" * 5000 + "jane@example.com"}, "message.from is over 2048 characters"),
        ({"from": "J" * 3000 + " <jane@example.com>"}, "message.from is over 2048 characters"),
        (
            {"headers": {"Return-Path": "(" * 600 + "<jane@example.com>"}},
            "address: comments nested over 32 deep",
        ),
        ({"to": ["(" * 600 + INBOX]}, "address: comments nested over 32 deep"),
        # The security review: the parser recurses once per ":" too (group syntax).
        ({"from": ":" * 1000 + "jane@example.com"}, "message.from: over 64 colons"),
        ({"from": "a:" * 600 + "jane@example.com"}, "message.from: over 64 colons"),
        ({"to": ["@:" * 600 + INBOX]}, "address: over 64 colons"),
        (
            {"headers": {"Return-Path": "<" + "@" * 20_000 + "jane@example.com>"}},
            "address: over 16384 characters",
        ),
    ],
)
async def test_unparseable_message_is_dead_lettered_on_the_first_attempt(
    store: Store, fields: dict[str, Any], reason: str
) -> None:
    """One attempt, state dead, the parser's reason recorded; no traceback is logged."""
    job, logs = await run_one(store, payload(**fields))
    assert job.state is JobState.DEAD
    assert job.attempts == 1
    assert job.reason == reason
    assert [line["event"] for line in logs if line["log_level"] == "error"] == []
    [attempt] = [line for line in logs if line["event"] == "job_attempt"]
    assert attempt["outcome"] == "dead"


async def test_mass_mail_is_skipped_without_parsing_its_recipients(store: Store) -> None:
    """A 900 KB To list (the review's case held the event loop ~0.5 s) is not parsed:
    the message is skipped as mass mail."""
    recipients = [f"user{i}@example.com" for i in range(40_000)] + [INBOX]
    job, _ = await run_one(store, payload(to=[", ".join(recipients)]))
    assert (job.state, job.reason) == (JobState.SKIPPED, "too_many_recipients")
