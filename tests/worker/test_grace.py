"""The grace period in the worker, step by step: a delayed message waits in the queue,
then its thread is read, and an answer from anyone but this service skips it.

The end-to-end tests (tests/service/test_grace_e2e.py) prove the same against the
sandbox over HTTP with real processes, restarts and kills.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers.policy import PolicyConfig
from service.models import AttemptOutcome, JobState
from service.store.base import GRACE_PERIOD
from service.templates import LiveTemplates
from tests.support.fake_agentmail import Fail, FailAfterSend, failure
from tests.worker.conftest import INBOX, LEASE, MESSAGE_ID, START, THREAD_ID, Harness, payload

DELAY = timedelta(minutes=5)
#: The steps of the attempt after the delay, up to the send, when nobody answered.
AFTER_DELAY = [
    "history",
    "get_thread",
    "reserve",
    "update_labels +unreplied",
    "render",
    "save_reply",
    "reply",
]


def received(message_id: str = MESSAGE_ID, **fields: Any) -> dict[str, Any]:
    """``payload()`` received at START (the harness clock's start)."""
    when = datetime.fromtimestamp(START, UTC).isoformat()
    return payload(message_id=message_id, timestamp=when) | fields


def sent(message_id: str, in_reply_to: str = MESSAGE_ID) -> dict[str, Any]:
    """A message the inbox sent in the thread (a person's answer, or ours)."""
    return {
        "inbox_id": INBOX,
        "thread_id": THREAD_ID,
        "message_id": message_id,
        "labels": ["sent"],
        "in_reply_to": in_reply_to,
    }


async def test_a_delayed_message_waits_in_the_queue_without_calling_agentmail(
    harness: Harness,
) -> None:
    """First claim within the delay: the job goes back to wait until received + delay."""
    harness.configure(reply_delay=DELAY)
    await harness.deliver(received())

    assert await harness.run() == AttemptOutcome.DEFERRED

    assert harness.journal == ["defer"]
    assert harness.api.calls == []
    job = await harness.job()
    assert (job.state, job.reason, job.attempts) == (JobState.PENDING, GRACE_PERIOD, 0)
    assert await harness.store.next_due() == START + DELAY.total_seconds()
    assert harness.attempts[0]["until"] == "2026-11-29T09:05:00+00:00"
    assert harness.attempts[0]["delay_rule"] is None


async def test_nobody_answered_replies_once_after_the_delay(harness: Harness) -> None:
    """At the end of the delay the thread is read, then the reply goes out as always."""
    harness.configure(reply_delay=DELAY)
    message = received()
    await harness.deliver(message)
    harness.api.add_to_thread(message)
    await harness.run()
    harness.journal.clear()

    assert await harness.run_when_due() == AttemptOutcome.REPLIED

    assert harness.clock.now == START + DELAY.total_seconds()
    assert harness.journal[:7] == AFTER_DELAY
    assert len(harness.api.sent) == 1
    job = await harness.job()
    assert (job.state, job.reason, job.attempts) == (JobState.DONE, "replied", 1)


async def test_an_answer_in_the_thread_skips_without_a_label(harness: Harness) -> None:
    """A person answered during the delay: skipped answered_in_thread, nothing labelled."""
    harness.configure(reply_delay=DELAY)
    message = received()
    await harness.deliver(message)
    harness.api.add_to_thread(message)
    await harness.run()
    harness.api.add_to_thread(sent("<person@agentmail.to>"))
    harness.journal.clear()

    assert await harness.run_when_due() == AttemptOutcome.SKIPPED

    assert harness.journal == ["history", "get_thread", "own_replies", "finish skipped"]
    assert [call.method for call in harness.api.calls] == ["get_thread"]
    assert harness.api.labels[INBOX, MESSAGE_ID] == set()
    job = await harness.job()
    assert (job.state, job.reason) == (JobState.SKIPPED, "answered_in_thread")
    assert "<person@agentmail.to>" in str(harness.attempts[-1]["detail"])


async def test_a_sent_message_before_the_inbound_one_is_no_answer(harness: Harness) -> None:
    """The inbox wrote first and the customer answered: that is not an answer to them."""
    harness.configure(reply_delay=DELAY)
    harness.api.add_to_thread(sent("<outbound@agentmail.to>"))
    message = received()
    harness.api.add_to_thread(message)
    await harness.deliver(message)
    await harness.run()

    assert await harness.run_when_due() == AttemptOutcome.REPLIED


async def test_this_services_own_reply_in_the_thread_is_no_answer(harness: Harness) -> None:
    """With no thread cap, the auto-reply to an earlier message of the thread, sent after
    this one came in, is ours: this message is still answered."""
    policy = PolicyConfig(thread_cap=0, sender_cooldown=timedelta(0))
    harness.configure(reply_delay=DELAY, policy=policy)
    first = received("<first@example.com>")
    later = datetime.fromtimestamp(START + 60, UTC).isoformat()
    second = received("<second@example.com>", timestamp=later, **{"from": "bob@example.com"})
    for message in (first, second):
        # Each arrives at its timestamp (a job is not created before its message came).
        harness.clock.now = datetime.fromisoformat(message["timestamp"]).timestamp()
        await harness.deliver(message)
        harness.api.add_to_thread(message)
        assert await harness.run() == AttemptOutcome.DEFERRED
    assert await harness.run_when_due() == AttemptOutcome.REPLIED
    ours = (await harness.job("<first@example.com>")).sent_message_id
    assert ours is not None
    harness.api.add_to_thread(sent(ours, in_reply_to="<first@example.com>"))

    assert await harness.run_when_due() == AttemptOutcome.REPLIED

    assert len(harness.api.sent) == 2
    assert (await harness.job("<second@example.com>")).reason == "replied"


async def test_our_reply_on_its_way_is_no_answer(harness: Harness) -> None:
    """The first message's reply went out but its answer was lost, so its id is not
    recorded yet: in the thread it answers the first message, whose reply is stored, so
    it is ours and the second message is still answered."""
    policy = PolicyConfig(thread_cap=0, sender_cooldown=timedelta(0))
    harness.configure(reply_delay=DELAY, policy=policy)
    first = received("<first@example.com>")
    later = datetime.fromtimestamp(START + 60, UTC).isoformat()
    second = received("<second@example.com>", timestamp=later, **{"from": "bob@example.com"})
    for message in (first, second):
        # Each arrives at its timestamp (a job is not created before its message came).
        harness.clock.now = datetime.fromisoformat(message["timestamp"]).timestamp()
        await harness.deliver(message)
        harness.api.add_to_thread(message)
        assert await harness.run() == AttemptOutcome.DEFERRED
    harness.api.script("reply", FailAfterSend(failure("reply", 503)))
    assert await harness.run_when_due() == AttemptOutcome.RETRY
    assert (await harness.job("<first@example.com>")).sent_message_id is None
    [on_its_way] = harness.api.sent
    harness.api.add_to_thread(sent("<sent-1@fake.agentmail.to>", "<first@example.com>"))
    assert on_its_way.message_id == "<first@example.com>"
    harness.clock.now = START + 60 + DELAY.total_seconds()
    jobs = await harness.store.claim(
        owner=harness.worker.owner, now=harness.clock(), lease=30, limit=5
    )
    [job] = [j for j in jobs if j.message_id == "<second@example.com>"]

    await harness.worker._run(job)

    assert (await harness.job("<second@example.com>")).reason == "replied"


async def test_a_list_post_is_skipped_at_once_not_after_the_delay(harness: Harness) -> None:
    """What rules a reply out whatever happens (a list post) is decided on the first claim."""
    harness.configure(reply_delay=DELAY)
    await harness.deliver(received(headers={"List-Id": "<news.example.com>"}))

    assert await harness.run() == AttemptOutcome.SKIPPED

    assert harness.journal == ["finish skipped"]
    assert harness.api.calls == []
    assert (await harness.job()).reason == "list_header"


async def test_a_rule_chooses_the_delay_per_message(harness: Harness, tmp_path: Path) -> None:
    """A rule's delay wins over the global one; '0' in a rule answers at once."""
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "rules.toml").write_text(
        '[[rule]]\nname = "vip"\ntemplate = "default"\nsender = "vip.example"\ndelay = "0"\n\n'
        '[[rule]]\nname = "slow"\ntemplate = "default"\nsender = "slow.example"\ndelay = "1h"\n'
    )
    harness.configure(reply_delay=DELAY, templates=LiveTemplates(folder))
    await harness.deliver(received(**{"from": "v@vip.example"}))

    assert await harness.run() == AttemptOutcome.REPLIED
    assert "get_thread" not in harness.journal

    await harness.deliver(received("<slow@example.com>", **{"from": "s@slow.example"}))
    assert await harness.run() == AttemptOutcome.DEFERRED
    assert harness.attempts[-1]["delay_rule"] == "slow"
    assert await harness.store.next_due() == START + 3600


async def test_without_a_delay_the_thread_is_never_read(harness: Harness) -> None:
    """Delay 0 (the default): the job is decided at once and no thread is read."""
    await harness.deliver(received())

    assert await harness.run() == AttemptOutcome.REPLIED

    assert "get_thread" not in harness.journal
    assert "defer" not in harness.journal


async def test_the_sender_cooldown_applies_after_the_delay_not_before(harness: Harness) -> None:
    """Two messages from Jane in two threads during one delay: the first is answered when
    its delay is over, the second is then within the cooldown."""
    harness.configure(reply_delay=DELAY)
    first = received("<first@example.com>")
    later = datetime.fromtimestamp(START + 60, UTC).isoformat()
    second = received("<second@example.com>", timestamp=later, thread_id="thread-2")
    for message in (first, second):
        # Each arrives at its timestamp (a job is not created before its message came).
        harness.clock.now = datetime.fromisoformat(message["timestamp"]).timestamp()
        await harness.deliver(message)
        assert await harness.run() == AttemptOutcome.DEFERRED

    assert await harness.run_when_due() == AttemptOutcome.REPLIED
    assert await harness.run_when_due() == AttemptOutcome.SKIPPED

    assert (await harness.job("<second@example.com>")).reason == "sender_cooldown"
    assert len(harness.api.sent) == 1


async def test_a_cooldown_that_ends_during_the_delay_does_not_skip(harness: Harness) -> None:
    """Jane was answered almost a day ago: at arrival the cooldown would skip her new
    message, but it is judged when the delay is over, and by then it has passed."""
    harness.clock.now = START - 86_400 + 100
    await harness.deliver(received("<yesterday@example.com>", thread_id="thread-0"))
    assert await harness.run() == AttemptOutcome.REPLIED
    harness.configure(reply_delay=DELAY)
    harness.clock.now = START
    await harness.deliver(received())

    assert await harness.run() == AttemptOutcome.DEFERRED
    assert await harness.run_when_due() == AttemptOutcome.REPLIED

    assert len(harness.api.sent) == 2


async def test_a_sent_event_in_the_thread_settles_the_wait_early(harness: Harness) -> None:
    """message.sent in the thread wakes the waiting job (Store.note_sent): it reads the
    thread at once, and the person's answer ends it before its delay is over."""
    harness.configure(reply_delay=DELAY)
    message = received()
    await harness.deliver(message)
    harness.api.add_to_thread(message)
    assert await harness.run() == AttemptOutcome.DEFERRED
    harness.api.add_to_thread(sent("<person@agentmail.to>"))
    harness.clock.now = START + 30
    assert (
        await harness.store.note_sent(
            inbox_id=INBOX, thread_id=THREAD_ID, message_id="<person@agentmail.to>", now=START + 30
        )
        == 1
    )

    assert await harness.run() == AttemptOutcome.SKIPPED

    job = await harness.job()
    assert (job.state, job.reason) == (JobState.SKIPPED, "answered_in_thread")
    assert harness.clock.now < START + DELAY.total_seconds()


async def test_woken_early_without_an_answer_waits_out_its_delay(harness: Harness) -> None:
    """A sent event that is not an answer (an earlier message's auto-reply, say) wakes the
    job; it finds no answer and goes back to wait until its delay is over."""
    harness.configure(reply_delay=DELAY)
    message = received()
    await harness.deliver(message)
    harness.api.add_to_thread(message)
    assert await harness.run() == AttemptOutcome.DEFERRED
    harness.clock.now = START + 30
    await harness.store.note_sent(
        inbox_id=INBOX, thread_id=THREAD_ID, message_id="<other@x>", now=START + 30
    )

    assert await harness.run() == AttemptOutcome.DEFERRED
    assert await harness.store.next_due() == START + DELAY.total_seconds()
    assert await harness.run_when_due() == AttemptOutcome.REPLIED
    assert [c.method for c in harness.api.calls].count("get_thread") == 2


async def test_a_timestamp_in_the_future_waits_no_longer_than_the_delay(
    harness: Harness,
) -> None:
    """A message stamped a year ahead of the worker's clock (AgentMail's clock skewed,
    or a broken timestamp) waits its delay from when its job was created, not from the
    timestamp: it is answered after the delay, not a year later."""
    harness.configure(reply_delay=DELAY)
    ahead = datetime.fromtimestamp(START + 365 * 86_400, UTC).isoformat()
    message = received(timestamp=ahead)
    await harness.deliver(message)
    harness.api.add_to_thread(message)

    assert await harness.run() == AttemptOutcome.DEFERRED
    assert await harness.store.next_due() == START + DELAY.total_seconds()
    assert await harness.run_when_due() == AttemptOutcome.REPLIED
    assert harness.clock.now == START + DELAY.total_seconds()


async def test_a_failed_thread_read_is_retried_not_skipped(harness: Harness) -> None:
    """The thread cannot be read when the delay is over (429, then 503): the job is
    retried, not answered blindly nor skipped, and answered once the read succeeds; a
    person's answer found by that read still wins."""
    harness.configure(reply_delay=DELAY)
    message = received()
    await harness.deliver(message)
    harness.api.add_to_thread(message)
    assert await harness.run() == AttemptOutcome.DEFERRED
    harness.api.script(
        "get_thread",
        Fail(failure("get_thread", 429, retry_after=5)),
        Fail(failure("get_thread", 503)),
    )

    assert await harness.run_when_due() == AttemptOutcome.RETRY
    assert await harness.run_when_due() == AttemptOutcome.RETRY
    assert harness.api.sent == []
    harness.api.add_to_thread(sent("<person@agentmail.to>"))
    assert await harness.run_when_due() == AttemptOutcome.SKIPPED

    job = await harness.job()
    assert (job.state, job.reason) == (JobState.SKIPPED, "answered_in_thread")
    assert [c.method for c in harness.api.calls].count("get_thread") == 3


async def test_a_message_received_long_before_its_delay_ended_does_not_wait(
    harness: Harness,
) -> None:
    """Delivered a day late (a backlog, a sweep, a webhook outage): its delay ended long
    ago, so it is decided on its first claim, after one thread read, with no wait."""
    harness.configure(reply_delay=DELAY)
    message = received(timestamp=datetime.fromtimestamp(START - 86_400, UTC).isoformat())
    await harness.deliver(message)
    harness.api.add_to_thread(message)

    assert await harness.run() == AttemptOutcome.REPLIED

    assert "defer" not in harness.journal
    assert [c.method for c in harness.api.calls].count("get_thread") == 1


async def _woken_early(harness: Harness) -> None:
    """The job waits out its delay and a sent event (no answer) wakes it early."""
    assert await harness.run() == AttemptOutcome.DEFERRED
    harness.clock.now = START + 30
    await harness.store.note_sent(
        inbox_id=INBOX, thread_id=THREAD_ID, message_id="<other@x>", now=START + 30
    )


@pytest.mark.parametrize("woken_early", [False, True], ids=["first-claim", "woken-early"])
async def test_lease_lost_before_deferring_leaves_the_wait_to_the_next_worker(
    harness: Harness, woken_early: bool
) -> None:
    """Another worker takes the job just before it is put back to wait (on its first
    claim, or when woken early with no answer): the deferral changes nothing, nothing
    reaches AgentMail but the thread read, and the job stays with the other worker. When
    that lease runs out, the job waits out its delay and is answered once."""
    harness.configure(reply_delay=DELAY)
    message = received()
    await harness.deliver(message)
    harness.api.add_to_thread(message)
    if woken_early:
        await _woken_early(harness)
    harness.before("defer", harness.steal_lease)
    harness.journal.clear()

    assert await harness.run() == AttemptOutcome.LEASE_LOST

    assert harness.journal[-1] == "defer"
    assert [c.method for c in harness.api.calls] == (["get_thread"] if woken_early else [])
    job = await harness.job()
    assert job.state is JobState.RUNNING

    harness.clock.now += 2 * LEASE + 2
    assert harness.clock.now < START + DELAY.total_seconds()
    assert await harness.run() == AttemptOutcome.DEFERRED
    assert await harness.store.next_due() == START + DELAY.total_seconds()
    assert await harness.run_when_due() == AttemptOutcome.REPLIED

    assert len(harness.api.sent) == 1
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"replied"}
    job = await harness.job()
    assert (job.state, job.reason) == (JobState.DONE, "replied")
