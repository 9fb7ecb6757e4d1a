"""``AUTOREPLY_MAX_AGE`` in the worker: a message too old when its job is decided is
skipped ``too_old`` before anything reaches AgentMail or the ledger, whatever brought
the job in (a late webhook retry, a requeue, the catch-up sweep)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from handlers.policy import History, PolicyConfig
from service.models import AttemptOutcome, JobSource, JobState
from tests.support.fake_agentmail import Fail, failure
from tests.worker.conftest import INBOX, MESSAGE_ID, START, THREAD_ID, Harness, payload

DAY = 86_400.0
#: Just past the default max age (3 days) of ``message()``'s timestamp, which is START.
TOO_LATE = START + 3 * DAY + 1


def message(**fields: Any) -> dict[str, Any]:
    """``payload()`` received at START."""
    return payload(timestamp=datetime.fromtimestamp(START, UTC).isoformat()) | fields


async def ledger(harness: Harness) -> History:
    """What the policy would see for another message of the thread, from the sender."""
    return await harness.store.history(
        inbox_id=INBOX, thread_id=THREAD_ID, sender="jane@example.com"
    )


async def sweep(harness: Harness, message: dict[str, object]) -> None:
    """Enqueue ``message`` as the sweep does, at the clock's time."""
    assert await harness.store.record_swept(
        INBOX, MESSAGE_ID, THREAD_ID, orjson.dumps(message).decode(), "message.received",
        harness.clock(),
    )  # fmt: skip


async def test_a_late_webhook_delivery_is_skipped_too_old(harness: Harness) -> None:
    """A Svix retry that lands days after the message: skipped, nothing called or reserved."""
    harness.clock.now = TOO_LATE
    await harness.deliver(message())

    assert await harness.run() == AttemptOutcome.SKIPPED

    assert harness.journal == ["history", "finish skipped"]
    assert harness.api.calls == []
    job = await harness.job()
    assert (job.state, job.reason) == (JobState.SKIPPED, "too_old")
    assert harness.attempts[0]["reason"] == "too_old"
    assert await ledger(harness) == History()


async def test_a_message_within_the_max_age_is_answered(harness: Harness) -> None:
    """Exactly three days late is still in time."""
    harness.clock.now = START + 3 * DAY
    await harness.deliver(message())

    assert await harness.run() == AttemptOutcome.REPLIED


async def test_no_max_age_answers_late_messages(harness: Harness) -> None:
    """``AUTOREPLY_MAX_AGE=0`` turns the check off."""
    harness.configure(policy=PolicyConfig(max_age=timedelta(0)))
    harness.clock.now = START + 30 * DAY
    await harness.deliver(message())

    assert await harness.run() == AttemptOutcome.REPLIED


async def test_a_requeued_job_past_the_max_age_is_skipped_too_old(harness: Harness) -> None:
    """A job that died before its reply was stored, requeued days later, decides again:
    the message is too old by now, so it is skipped without a call."""
    harness.api.script("update_labels", Fail(failure("update_labels", 403)))
    await harness.deliver(message())
    assert await harness.run() == AttemptOutcome.DEAD
    calls = len(harness.api.calls)

    harness.clock.now = TOO_LATE
    assert (
        await harness.store.requeue(
            message_id=MESSAGE_ID, dead=False, now=harness.clock(), not_sent_before=0
        )
        == 1
    )
    assert await harness.run() == AttemptOutcome.SKIPPED

    assert len(harness.api.calls) == calls
    job = await harness.job()
    assert (job.state, job.reason) == (JobState.SKIPPED, "too_old")


async def test_a_swept_message_is_judged_by_its_timestamp(harness: Harness) -> None:
    """The sweep finds a message four days old: enqueued, then skipped too old."""
    harness.clock.now = START + 4 * DAY
    await sweep(harness, message())

    assert await harness.run() == AttemptOutcome.SKIPPED

    job = await harness.job()
    assert (job.source, job.state, job.reason) == (JobSource.SWEEP, JobState.SKIPPED, "too_old")
    assert harness.api.calls == []


async def test_a_swept_message_in_time_is_answered_once(harness: Harness) -> None:
    """A message the webhook missed, found an hour later, gets its one reply; its
    webhook arriving afterwards is a duplicate."""
    harness.clock.now = START + 3600
    await sweep(harness, message())

    assert await harness.run() == AttemptOutcome.REPLIED

    await harness.deliver(message())
    job = await harness.job()
    assert (job.source, job.state) == (JobSource.SWEEP, JobState.DONE)
    assert len(harness.api.sent) == 1
    assert await harness.store.claim(owner="x", now=harness.clock(), lease=30, limit=5) == []


async def test_without_a_timestamp_the_job_dates_the_message(harness: Harness) -> None:
    """A payload without ``timestamp`` is at least as old as its job: a job enqueued more
    than the max age ago is skipped; a fresh one is answered."""
    await sweep(harness, message(timestamp=None))
    harness.clock.now = TOO_LATE

    assert await harness.run() == AttemptOutcome.SKIPPED

    job = await harness.job()
    assert job.reason == "too_old"
    assert harness.api.calls == []
