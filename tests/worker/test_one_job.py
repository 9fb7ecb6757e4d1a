"""Every path of one job through the worker, against a recording fake AgentMail.

The order of the steps is what makes a reply happen exactly once: decide, reserve the
place in the ledger, label the message ``unreplied``, render, store the reply, send it
under its Idempotency-Key, then relabel and record the send. These tests pin that order
and what each failure leaves behind, in milliseconds; the end-to-end tests
(tests/service/test_exactly_once.py, test_send_window.py) prove the same against the
sandbox over HTTP with real processes.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from prometheus_client import REGISTRY

from handlers.idempotency import reply_key
from handlers.policy import History, PolicyConfig
from handlers.retry import SEND_WINDOW, RetryPolicy
from handlers.suppression import ALL_INBOXES
from service.agentmail_port import ApiFailure
from service.models import AttemptOutcome, Delivery, JobState, MessageRef
from service.store import StoreUnavailable, open_store
from service.templates import LiveTemplates
from tests.support import postgres
from tests.support.fake_agentmail import (
    Call,
    Fail,
    FailAfterSend,
    FakeAgentMail,
    Hang,
    failure,
    in_flight,
    timed_out,
)
from tests.support.workers import make_worker
from tests.worker.conftest import (
    INBOX,
    LEASE,
    MESSAGE_ID,
    START,
    THREAD_ID,
    Harness,
    payload,
)

LABEL = Call("update_labels", INBOX, MESSAGE_ID, add=("unreplied",))
RELABEL = Call("update_labels", INBOX, MESSAGE_ID, add=("replied",), remove=("unreplied",))
#: The steps of a first attempt up to the send.
PREPARE = ["history", "reserve", "update_labels +unreplied", "render", "save_reply", "reply"]
RECORD = {"mark_sent", "update_labels +replied -unreplied"}


def attempts_counted(outcome: str) -> float:
    """``autoreply_job_attempts_total{outcome=...}`` so far."""
    value = REGISTRY.get_sample_value("autoreply_job_attempts_total", {"outcome": outcome})
    return value or 0.0


async def ledger(harness: Harness) -> History:
    """What the policy would see for another message of the thread, from the sender."""
    return await harness.store.history(
        inbox_id=INBOX, thread_id=THREAD_ID, sender="jane@example.com", exclude_job=None
    )


def assert_one_identical_reply_per_key(harness: Harness) -> None:
    """Every reply call carried the same bytes under the same key; one email went out."""
    replies = harness.api.called("reply")
    assert {call.body for call in replies} == {replies[0].body}
    assert {call.idempotency_key for call in replies} == {reply_key(INBOX, MESSAGE_ID)}
    assert len(harness.api.sent) == 1


# -- the happy path ------------------------------------------------------------------


async def test_reply_steps_run_in_order_and_finish_done(harness: Harness) -> None:
    """Decide, reserve, label, render, store, send with the key, relabel + record, done."""
    counted = attempts_counted("replied")
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.REPLIED

    assert harness.journal[:6] == PREPARE
    assert set(harness.journal[6:8]) == RECORD
    assert harness.journal[8:] == ["finish done"]
    [reply] = harness.api.called("reply")
    assert harness.api.calls == [LABEL, reply, RELABEL]
    assert reply.reply is not None
    assert reply.reply.to == "jane@example.com"
    assert reply.idempotency_key == reply_key(INBOX, MESSAGE_ID)
    assert reply.reply.headers["Auto-Submitted"] == "auto-replied"
    job = await harness.job()
    assert (job.state, job.reason, job.attempts) == (JobState.DONE, "replied", 1)
    assert job.reply == reply.reply
    assert job.first_send_at == START
    assert job.sent_message_id == "<sent-1@fake.agentmail.to>"
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"replied"}
    assert (await ledger(harness)).replies_in_thread == 1
    assert harness.attempts[0]["sent_message_id"] == job.sent_message_id
    assert attempts_counted("replied") == counted + 1


# -- not answered ----------------------------------------------------------------------


async def test_policy_skip_touches_nothing_at_agentmail(harness: Harness) -> None:
    """An automatic reply is skipped with the policy's reason: no label, no send."""
    await harness.deliver(payload(headers={"Auto-Submitted": "auto-replied"}))

    assert await harness.run() == AttemptOutcome.SKIPPED

    assert harness.journal == ["history", "finish skipped"]
    assert harness.api.calls == []
    job = await harness.job()
    assert (job.state, job.reason) == (JobState.SKIPPED, "auto_submitted")
    assert harness.attempts[0]["reason"] == "auto_submitted"


@pytest.mark.parametrize("inbox_id", [INBOX, ALL_INBOXES], ids=["this-inbox", "every-inbox"])
async def test_a_suppressed_sender_is_skipped_with_the_entrys_reason(
    harness: Harness, inbox_id: str
) -> None:
    """Jane is on the suppression list (for this inbox, or for every inbox): her message
    is skipped ``suppressed`` with the entry's cause and reason, nothing reaches
    AgentMail and nothing is reserved. Removed from the list, her next message is
    answered."""
    assert await harness.store.add_suppression(
        inbox_id=inbox_id, address="jane@example.com", reason="asked to be left alone", now=START
    )
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.SKIPPED

    assert harness.journal == ["history", "finish skipped"]
    assert harness.api.calls == []
    job = await harness.job()
    assert (job.state, job.reason) == (JobState.SKIPPED, "suppressed")
    assert harness.attempts[0]["detail"] == "manual: asked to be left alone"
    history = await ledger(harness)
    assert (history.replies_in_thread, history.last_reply_to_sender_at) == (0, None)

    await harness.store.remove_suppression(address="jane@example.com", inbox_id=None, now=START)
    await harness.deliver(payload(message_id="<question-2@example.com>"))
    assert await harness.run() == AttemptOutcome.REPLIED
    assert [call.message_id for call in harness.api.sent] == ["<question-2@example.com>"]


async def test_a_sender_that_is_no_address_is_skipped_without_reading_the_ledger(
    harness: Harness,
) -> None:
    """A NUL in the sender: PostgreSQL cannot compare it, so reading the ledger and the
    suppression list for it failed at every attempt (``store_unavailable``)."""
    await harness.deliver(payload(**{"from": "Jane <ja\x00ne@example.com>"}))

    assert await harness.run() == AttemptOutcome.SKIPPED

    assert harness.journal == ["finish skipped"]
    job = await harness.job()
    assert (job.state, job.reason) == (JobState.SKIPPED, "invalid_sender")


@pytest.mark.postgres
async def test_a_sender_with_a_nul_is_skipped_on_postgresql() -> None:
    """The same on PostgreSQL, where the look-up itself fails."""
    postgres.require_server()
    with postgres.temporary_schema(prefix="nulsender") as url:
        store = open_store(url)
        await store.open()
        try:
            message = payload(**{"from": "ja\x00ne@example.com"})
            await store.record_delivery(
                Delivery(
                    svix_id="msg_1",
                    event_id="evt_1",
                    event_type="message.received",
                    message=MessageRef(inbox_id=INBOX, message_id=MESSAGE_ID, thread_id=THREAD_ID),
                    message_json=orjson.dumps(message).decode(),
                ),
                now=START,
            )
            worker = make_worker(store, FakeAgentMail(), concurrency=1, clock=lambda: START)
            [job] = await store.claim(owner=worker.owner, now=START, lease=LEASE, limit=1)
            await worker._run(job)
            done = await store.get_job(INBOX, MESSAGE_ID)
            assert done is not None
            assert (done.state, done.reason) == (JobState.SKIPPED, "invalid_sender")
        finally:
            await store.close()


@pytest.mark.parametrize(
    ("rival", "reason"),
    [
        (payload(message_id="<other@example.com>", **{"from": "bob@example.com"}), "thread_cap"),
        (payload(message_id="<other@example.com>", thread_id="thread-2"), "sender_cooldown"),
    ],
)
async def test_reservation_taken_since_the_decision_skips(
    harness: Harness, rival: dict[str, object], reason: str
) -> None:
    """Another replica reserves the thread or the sender between this job's decision and
    its reservation: the reservation says no, and nothing reaches AgentMail."""
    await harness.deliver(rival)
    [rival_job] = await harness.other.claim(
        owner="worker-rival", now=harness.clock(), lease=LEASE, limit=1
    )
    await harness.deliver()

    async def rival_reserves() -> None:
        decision = await harness.other.reserve(
            rival_job.id,
            owner="worker-rival",
            thread_id=str(rival["thread_id"]),
            sender=str(rival["from"]).split("<")[-1].rstrip(">"),
            policy=PolicyConfig(),
            now=harness.clock(),
        )
        assert decision is not None
        assert decision.reply

    harness.before("reserve", rival_reserves)

    assert await harness.run() == AttemptOutcome.SKIPPED

    assert harness.journal == ["history", "reserve", "finish skipped"]
    assert harness.api.calls == []
    job = await harness.job()
    assert (job.state, job.reason) == (JobState.SKIPPED, reason)


async def test_dry_run_renders_but_sends_labels_and_reserves_nothing(harness: Harness) -> None:
    """``AUTOREPLY_DRY_RUN``: decided and rendered, skipped as ``dry_run``, ledger untouched."""
    harness.configure(dry_run=True)
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.DRY_RUN

    assert harness.journal == ["history", "render", "finish skipped"]
    assert harness.api.calls == []
    job = await harness.job()
    assert (job.state, job.reason, job.reply) == (JobState.SKIPPED, "dry_run", None)
    assert await ledger(harness) == History()
    assert harness.attempts[0]["to"] == "jane@example.com"


# -- what the payload needs --------------------------------------------------------------


async def test_incomplete_payload_is_fetched_before_deciding(harness: Harness) -> None:
    """No body in the payload (over AgentMail's 1 MB cap): get the message, then go on."""
    harness.api.add_message(payload(text="x" * 2_000_000))
    await harness.deliver(payload(text=None))

    assert await harness.run() == AttemptOutcome.REPLIED

    assert harness.journal[:2] == ["get_message", "history"]
    assert harness.api.calls[0] == Call("get_message", INBOX, MESSAGE_ID)
    assert [call.method for call in harness.api.calls[1:]] == [
        "update_labels",
        "reply",
        "update_labels",
    ]


async def test_unparseable_payload_is_dead_at_once(harness: Harness) -> None:
    """A message the parser refuses is a permanent failure: dead, with the reason."""
    await harness.deliver(payload(**{"from": ""}))

    assert await harness.run() == AttemptOutcome.DEAD

    assert harness.journal == ["finish dead"]
    assert harness.api.calls == []
    job = await harness.job()
    assert (job.state, job.reason, job.attempts) == (
        JobState.DEAD,
        "message.from must be a non-empty string",
        1,
    )


async def test_template_error_is_dead_and_leaves_the_message_unreplied(
    harness: Harness, tmp_path: Path
) -> None:
    """A template that cannot render: dead with the file and line, labelled ``unreplied``
    for a person to see, nothing sent, the reservation given back."""
    folder = tmp_path / "templates" / "default"
    folder.mkdir(parents=True)
    (folder / "body.txt").write_text("Hello {{ nobody }}\n")
    harness.configure(templates=LiveTemplates(folder.parent))
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.DEAD

    assert harness.journal == [*PREPARE[:4], "finish dead"]
    assert harness.api.calls == [LABEL]
    job = await harness.job()
    assert job.state is JobState.DEAD
    assert job.reason == f"{folder / 'body.txt'}:1: 'nobody' is undefined"
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"unreplied"}
    assert await ledger(harness) == History()


# -- AgentMail failures --------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        failure("reply", 503),
        failure("reply", 429, retry_after=120),
        failure("reply", 408),
        timed_out("reply"),
        in_flight(),
    ],
    ids=["503", "429", "408", "client-timeout", "409-in-flight"],
)
async def test_transient_failure_retries_with_the_stored_reply(
    harness: Harness, error: ApiFailure
) -> None:
    """The retry resends the stored bytes under the same key, without deciding or
    rendering again; Retry-After is waited for."""
    harness.api.script("reply", Fail(error))
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.RETRY

    job = await harness.job()
    assert (job.state, job.attempts, job.sent_message_id) == (JobState.PENDING, 1, None)
    assert job.reply is not None
    assert job.first_send_at == START
    assert harness.api.sent == []
    assert harness.attempts[0]["error"] == error.reason
    due = await harness.store.next_due()
    assert due is not None
    assert due - START >= (error.retry_after or 0)

    assert await harness.run_when_due() == AttemptOutcome.REPLIED

    assert harness.journal[6:7] == ["retry"]
    assert harness.journal[7] == "reply"
    assert set(harness.journal[8:10]) == RECORD
    assert harness.journal[10:] == ["finish done"]
    assert harness.journal.count("render") == 1
    assert_one_identical_reply_per_key(harness)
    assert harness.api.called("reply")[0].reply == job.reply
    job = await harness.job()
    assert (job.state, job.attempts) == (JobState.DONE, 2)


async def test_answer_lost_after_sending_returns_the_original_on_retry(harness: Harness) -> None:
    """The send happened but its answer was lost (a 500 after sending): the retry gets
    the original message back under the same key, and no second email goes out."""
    harness.api.script("reply", FailAfterSend(failure("reply", 500)))
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.RETRY
    assert len(harness.api.sent) == 1
    assert await harness.run_when_due() == AttemptOutcome.REPLIED

    assert_one_identical_reply_per_key(harness)
    job = await harness.job()
    assert job.sent_message_id == "<sent-1@fake.agentmail.to>"
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"replied"}


async def test_in_flight_conflict_is_retried_until_the_original_answers(
    harness: Harness,
) -> None:
    """A send whose answer timed out is still in progress at AgentMail when the retry
    comes (409); the retry after that gets the original message."""
    harness.api.script("reply", FailAfterSend(timed_out("reply")), Fail(in_flight()))
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.RETRY
    assert await harness.run_when_due() == AttemptOutcome.RETRY
    assert await harness.run_when_due() == AttemptOutcome.REPLIED

    assert len(harness.api.called("reply")) == 3
    assert_one_identical_reply_per_key(harness)
    assert (await harness.job()).sent_message_id == "<sent-1@fake.agentmail.to>"


@pytest.mark.parametrize("after_send", [False, True], ids=["before-send", "after-send"])
async def test_attempt_that_outlives_its_budget_is_retried(
    harness: Harness, after_send: bool
) -> None:
    """A reply that never answers: the attempt gives up before its lease ends and the
    job is retried; whether or not that send went out, one email in the end."""
    harness.api.script("reply", Hang(skip=LEASE, after_send=after_send))
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.RETRY
    assert harness.attempts[0]["error"] == "attempt timed out"
    assert (await harness.job()).state is JobState.PENDING
    assert await harness.run_when_due() == AttemptOutcome.REPLIED

    assert_one_identical_reply_per_key(harness)


async def test_permanent_failure_is_dead_with_the_reason(harness: Harness) -> None:
    """A 422 for the reply: dead at once with AgentMail's answer, still ``unreplied``."""
    harness.api.script("reply", Fail(failure("reply", 422)))
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.DEAD

    assert harness.journal == [*PREPARE, "finish dead"]
    assert harness.api.calls[-1].method == "reply"
    job = await harness.job()
    assert (job.state, job.reason) == (JobState.DEAD, "reply: HTTP 422")
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"unreplied"}
    # The reply was stored: it may have gone out, so its place in the ledger stays.
    assert (await ledger(harness)).replies_in_thread == 1


async def test_permanent_failure_to_label_is_dead_before_rendering(harness: Harness) -> None:
    """The first label change refused (403): dead, nothing rendered or sent, the
    reservation given back."""
    harness.api.script("update_labels", Fail(failure("update_labels", 403)))
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.DEAD

    assert harness.journal == [*PREPARE[:3], "finish dead"]
    job = await harness.job()
    assert (job.state, job.reason, job.reply) == (JobState.DEAD, "update labels: HTTP 403", None)
    assert await ledger(harness) == History()


async def test_no_attempts_left_is_dead_as_given_up(harness: Harness) -> None:
    """A transient failure on the last allowed attempt: dead, ``gave up: <error>``."""
    harness.configure(retry=RetryPolicy(max_attempts=1))
    harness.api.script("reply", Fail(failure("reply", 503)))
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.DEAD

    job = await harness.job()
    assert (job.state, job.reason) == (JobState.DEAD, "gave up: reply: HTTP 503")


# -- the sender's place when a job dies ------------------------------------------------

#: Jane again, a minute after her first message (the cooldown is a day), in a new
#: thread: only her cooldown can hold this one back.
SECOND = payload(message_id="<question-2@example.com>", thread_id="thread-2")


@pytest.mark.parametrize("death", ["label refused", "template error"])
async def test_a_job_dead_before_its_reply_is_stored_gives_the_senders_place_back(
    harness: Harness, tmp_path: Path, death: str
) -> None:
    """Jane's first message dies for good before its reply is stored (the first label
    change refused, or a template that cannot render): nothing was sent to her, so her
    next message, well within the cooldown, is answered."""
    folder = tmp_path / "templates" / "default"
    if death == "label refused":
        harness.api.script("update_labels", Fail(failure("update_labels", 403)))
    else:
        folder.mkdir(parents=True)
        (folder / "body.txt").write_text("Hello {{ nobody }}\n")
        harness.configure(templates=LiveTemplates(folder.parent))
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.DEAD
    assert (await harness.job()).reply is None

    if death == "template error":  # fixed by the operator
        (folder / "body.txt").write_text("Hello {{ sender.name }}\n")
        assert harness.worker.templates.reload() is None
    harness.clock.now += 60
    await harness.deliver(SECOND)

    assert await harness.run() == AttemptOutcome.REPLIED
    assert [call.message_id for call in harness.api.sent] == [SECOND["message_id"]]
    second = await harness.job(SECOND["message_id"])
    assert (second.state, second.reason) == (JobState.DONE, "replied")


async def test_a_job_dead_after_its_reply_is_stored_keeps_the_senders_place(
    harness: Harness,
) -> None:
    """Jane's first message dies after its reply was stored (AgentMail refuses the send
    for good): that reply may have gone out and ``requeue`` may still send it, so her
    next message within the cooldown is skipped as ``sender_cooldown``, unanswered."""
    harness.api.script("reply", Fail(failure("reply", 422)))
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.DEAD
    assert (await harness.job()).reply is not None

    harness.clock.now += 60
    await harness.deliver(SECOND)

    assert await harness.run() == AttemptOutcome.SKIPPED
    second = await harness.job(SECOND["message_id"])
    assert (second.state, second.reason) == (JobState.SKIPPED, "sender_cooldown")
    assert [call.message_id for call in harness.api.called("reply")] == [MESSAGE_ID]
    assert harness.api.sent == []


# -- the Idempotency-Key's window ----------------------------------------------------


async def test_retry_run_after_the_send_window_is_dead_not_resent(harness: Harness) -> None:
    """A retry that runs late (downtime, backlog) past the key's window: dead with the
    reason, no second send."""
    harness.api.script("reply", Fail(failure("reply", 503)))
    await harness.deliver()
    assert await harness.run() == AttemptOutcome.RETRY

    harness.clock.now = START + SEND_WINDOW + 3600
    assert await harness.run() == AttemptOutcome.DEAD

    assert len(harness.api.called("reply")) == 1
    job = await harness.job()
    assert (job.state, job.reason) == (JobState.DEAD, "send window passed; not resending")
    assert harness.attempts[-1]["reason"] == "send_window_passed"


async def test_retry_that_would_fall_outside_the_window_is_dead(harness: Harness) -> None:
    """Still inside the window the reply is resent; when that fails too and the next try
    would come after the window, the job is dead-lettered instead of scheduled."""
    harness.api.script("reply", Fail(failure("reply", 503)), Fail(failure("reply", 503)))
    await harness.deliver()
    assert await harness.run() == AttemptOutcome.RETRY

    harness.clock.now = START + SEND_WINDOW - 1
    assert await harness.run() == AttemptOutcome.DEAD

    assert len(harness.api.called("reply")) == 2
    job = await harness.job()
    assert (job.state, job.reason) == (JobState.DEAD, "gave up: reply: HTTP 503")


# -- losing the lease ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "calls"),
    [
        ("reserve", []),
        ("save_reply", ["update_labels"]),
        ("mark_sent", ["update_labels", "reply", "update_labels"]),
        ("finish", ["update_labels", "reply", "update_labels"]),
    ],
)
async def test_lease_lost_before_a_step_stops_the_attempt_there(
    harness: Harness, step: str, calls: list[str]
) -> None:
    """Another worker takes the job just before ``step``: the step changes nothing, the
    attempt stops, and the job stays with the other worker; when that one's lease runs
    out too, the job completes with one email."""
    harness.before(step, harness.steal_lease)
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.LEASE_LOST

    assert [call.method for call in harness.api.calls] == calls
    stopped_at = harness.journal.index(step if step != "finish" else "finish done")
    # Nothing after the lost step but what ran alongside it (the relabel and mark_sent).
    assert set(harness.journal[stopped_at + 1 :]) <= RECORD
    job = await harness.job()
    assert (job.state, job.attempts) == (JobState.RUNNING, 2)
    assert (job.reply is None) == (step in ("reserve", "save_reply"))
    assert (job.sent_message_id is None) == (step != "finish")

    harness.clock.now += 2 * LEASE + 2
    assert await harness.run() == AttemptOutcome.REPLIED
    assert len(harness.api.sent) == 1


async def test_lease_lost_before_scheduling_the_retry(harness: Harness) -> None:
    """The send failed and the job was taken meanwhile: no retry is scheduled by us."""
    harness.api.script("reply", Fail(failure("reply", 503)))
    harness.before("retry", harness.steal_lease)
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.LEASE_LOST

    assert harness.journal[-1] == "retry"
    job = await harness.job()
    assert (job.state, job.attempts) == (JobState.RUNNING, 2)


async def test_store_unavailable_leaves_the_job_to_its_lease(harness: Harness) -> None:
    """The store cannot be written: nothing is recorded, the job stays claimed until its
    lease runs out and it is claimed again."""

    async def store_down() -> None:
        raise StoreUnavailable("disk I/O error")

    harness.before("save_reply", store_down)
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.STORE_UNAVAILABLE

    assert harness.api.sent == []
    job = await harness.job()
    assert (job.state, job.reply) == (JobState.RUNNING, None)
    harness.clock.now += LEASE + 1
    assert await harness.run() == AttemptOutcome.REPLIED
    assert len(harness.api.sent) == 1
