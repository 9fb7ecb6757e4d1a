"""Rules with time conditions and ``action = "skip"`` in the worker: the rule is chosen
on when AgentMail received the message (its ``timestamp``), not on when the job runs, and
a skip rule finishes the job ``rule:<name>`` before anything reaches AgentMail or the
ledger, counted and logged like any other skip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from handlers.policy import History
from service.models import AttemptOutcome, JobState
from service.templates import LiveTemplates
from tests.worker.conftest import INBOX, MESSAGE_ID, START, THREAD_ID, Harness, payload

RULES = """\
[[rule]]
name = "partner tickets"
sender = "@tickets.partner.example"
action = "skip"

[[rule]]
name = "after hours"
timezone = "Europe/Berlin"
weekly = ["Mon-Thu 18:00-09:00", "Fri 18:00 - Mon 09:00"]
template = "closed"
"""


@pytest.fixture
def timed(harness: Harness, tmp_path: Path) -> Harness:
    """The harness with office hours in Berlin and a skip rule."""
    root = tmp_path / "templates"
    for name, body in {
        "closed": 'Closed, back {{ window.end.strftime("%A %H:%M %Z") }}.\n',
        "default": "We are open.\n",
    }.items():
        (root / name).mkdir(parents=True)
        (root / name / "body.txt").write_text(body)
    (root / "rules.toml").write_text(RULES)
    harness.configure(templates=LiveTemplates(root))
    return harness


def skipped(reason: str) -> float:
    value = REGISTRY.get_sample_value("autoreply_replies_skipped_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize(
    ("timestamp", "text"),
    [
        ("2026-11-27T17:30:00Z", "Closed, back Monday 09:00 CET.\n"),  # Fri 18:30 in Berlin
        ("2026-11-30T08:00:00Z", "We are open.\n"),  # Mon 09:00 in Berlin
    ],
)
async def test_the_received_time_chooses_the_template(
    timed: Harness, timestamp: str, text: str
) -> None:
    """The worker's clock (a day and a half later: Sunday dawn or Tuesday night, both
    closed) plays no part: the message's timestamp does, read in the rule's zone, and
    the window gives the reopening time."""
    timed.clock.now = datetime.fromisoformat(timestamp).timestamp()
    await timed.deliver(payload(timestamp=timestamp))
    timed.clock.now += 36 * 3600

    assert await timed.run() == AttemptOutcome.REPLIED

    [reply] = timed.api.called("reply")
    assert reply.reply is not None
    assert reply.reply.text == text
    job = await timed.job()
    assert job.reply is not None
    assert job.reply.rule == ("after hours" if "Closed" in text else None)


async def test_a_skip_rule_answers_nothing_and_records_its_name(timed: Harness) -> None:
    """Skipped ``rule:partner tickets``: no label, no reply, no place in the ledger; the
    metric and the job's log line carry the reason."""
    before = skipped("rule:partner tickets")
    await timed.deliver(payload(**{"from": "Desk <desk@tickets.partner.example>"}))

    assert await timed.run() == AttemptOutcome.SKIPPED

    assert timed.journal == ["history", "finish skipped"]
    assert timed.api.calls == []
    job = await timed.job()
    assert (job.state, job.reason) == (JobState.SKIPPED, "rule:partner tickets")
    assert skipped("rule:partner tickets") == before + 1
    assert timed.attempts[0]["reason"] == "rule:partner tickets"
    assert (
        await timed.store.history(
            inbox_id=INBOX, thread_id=THREAD_ID, sender="desk@tickets.partner.example"
        )
        == History()
    )
    assert job.message_id == MESSAGE_ID


async def test_loop_protection_keeps_its_reason_over_a_skip_rule(timed: Harness) -> None:
    """An auto-reply from the partner is ``auto_submitted``, the stronger signal."""
    await timed.deliver(
        payload(
            **{"from": "desk@tickets.partner.example"},
            headers={"Auto-Submitted": "auto-replied"},
        )
    )
    assert await timed.run() == AttemptOutcome.SKIPPED
    assert (await timed.job()).reason == "auto_submitted"


async def test_a_skip_rule_skips_at_once_even_with_a_grace_period(timed: Harness) -> None:
    """With a delay configured, a skip rule's message is not held for the delay: what
    the rules already rule out is decided on the first claim, like a list post."""
    timed.configure(templates=timed.worker.templates, reply_delay=timedelta(minutes=10))
    await timed.deliver(
        payload(
            **{"from": "desk@tickets.partner.example"},
            timestamp=datetime.fromtimestamp(START, UTC).isoformat(),
        )
    )

    assert await timed.run() == AttemptOutcome.SKIPPED

    assert timed.journal == ["finish skipped"]
    assert (await timed.job()).reason == "rule:partner tickets"


@pytest.mark.parametrize(
    ("received", "outcome"),
    [
        (datetime(2026, 11, 28, 22, 0, tzinfo=UTC), AttemptOutcome.DEFERRED),  # Sat 23:00
        (datetime(2026, 11, 28, 12, 0, tzinfo=UTC), AttemptOutcome.REPLIED),  # Sat 13:00
    ],
)
async def test_a_rule_delay_follows_the_received_time(
    harness: Harness, tmp_path: Path, received: datetime, outcome: str
) -> None:
    """A rule's delay applies when its time condition held at the message's receipt:
    at night, wait an hour for a person; by day, no rule matches and it is answered at
    once (no global delay)."""
    root = tmp_path / "templates"
    (root / "default").mkdir(parents=True)
    (root / "default" / "body.txt").write_text("Thanks.\n")
    (root / "rules.toml").write_text(
        '[[rule]]\nname = "night"\ntimezone = "Europe/Berlin"\n'
        'weekly = "daily 20:00-08:00"\ntemplate = "default"\ndelay = "1h"\n'
    )
    harness.configure(templates=LiveTemplates(root))
    harness.clock.now = received.timestamp()
    await harness.deliver(payload(timestamp=received.isoformat()))

    assert await harness.run() == outcome
    if outcome == AttemptOutcome.DEFERRED:
        assert harness.attempts[0]["delay_rule"] == "night"
        assert await harness.store.next_due() == received.timestamp() + 3600


async def test_a_timestamp_from_the_future_is_read_as_when_we_learnt_of_the_message(
    timed: Harness,
) -> None:
    """Stamped Tuesday 13:00 in Berlin (open) but delivered on Sunday (closed): AgentMail
    had received the message when it told us, so the rule is chosen on Sunday."""
    await timed.deliver(payload(timestamp="2026-12-01T12:00:00Z"))  # clock: START, Sunday

    assert await timed.run() == AttemptOutcome.REPLIED

    [reply] = timed.api.called("reply")
    assert reply.reply is not None
    assert reply.reply.text == "Closed, back Monday 09:00 CET.\n"


@pytest.mark.parametrize(
    "timestamp",
    [
        "9999-12-31T23:59:59+00:00",  # a window searched 400 days on runs off the calendar
        "9999-12-31T23:59:59-23:59",  # past Python's last instant in UTC
        "0001-01-01T00:00:00+23:59",  # before its first
        "1900-01-01T00:00:00Z",
    ],
)
async def test_a_timestamp_off_the_calendar_is_dead_with_the_reason(
    timed: Harness, timestamp: str
) -> None:
    """A timestamp no mail can carry fails the job with its reason, at once: not an
    internal error retried until it gives up."""
    await timed.deliver(payload(timestamp=timestamp))

    assert await timed.run() == AttemptOutcome.DEAD

    assert timed.api.calls == []
    job = await timed.job()
    assert (job.state, job.reason, job.attempts) == (
        JobState.DEAD,
        "message.timestamp is out of range (years 1970 to 2999)",
        1,
    )
