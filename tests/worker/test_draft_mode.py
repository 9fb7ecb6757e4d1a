"""Draft mode in the worker, step by step, against the recording fake AgentMail.

In draft mode (``AUTOREPLY_MODE=draft`` or a rule's ``mode``) the reply becomes one reply
draft, created under a ``client_id`` derived from the message after the message is
labelled, and the job waits in ``drafted``. A ``message.sent`` hint or the periodic check
brings it back: the draft still there keeps it waiting; gone and answered by a message
the inbox sent, the job is ``replied`` with one relabel; gone unanswered, it is
``discarded`` and the message stays ``unreplied``. These tests pin each path and what a
failure or a lost lease leaves behind, in milliseconds; tests/service/test_drafts.py
proves the same against the sandbox over HTTP with real processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from handlers.idempotency import draft_client_id
from handlers.modes import ReplyMode
from handlers.policy import History
from handlers.retry import SEND_WINDOW
from service.agentmail_port import ApiFailure
from service.models import AttemptOutcome, JobState
from service.templates import LiveTemplates
from tests.support.fake_agentmail import (
    Call,
    Fail,
    FailAfterSend,
    Hang,
    Step,
    failure,
    timed_out,
)
from tests.worker.conftest import INBOX, LEASE, MESSAGE_ID, START, THREAD_ID, Harness, payload

CHECK = 600.0
CLIENT_ID = draft_client_id(INBOX, MESSAGE_ID)
LABEL = Call("update_labels", INBOX, MESSAGE_ID, add=("unreplied",))
DRAFT_LABEL = Call("update_labels", INBOX, MESSAGE_ID, add=("autoreply-draft",))
#: The one PATCH that marks the message answered once its draft went out.
SENT_RELABEL = Call(
    "update_labels", INBOX, MESSAGE_ID, add=("replied",), remove=("unreplied", "autoreply-draft")
)
#: The steps of a first attempt, up to the job waiting on its draft.
CREATE = [
    "history",
    "reserve",
    "update_labels +unreplied",
    "render",
    "save_reply",
    "update_labels +autoreply-draft",
    "create_draft",
    "await_draft",
]
#: What a draft that went out runs alongside: the ledger and the relabel.
RECORD = {"mark_sent", "update_labels +replied -unreplied -autoreply-draft"}


async def ledger(harness: Harness) -> History:
    """What the policy would see for another message of the thread, from the sender."""
    return await harness.store.history(
        inbox_id=INBOX, thread_id=THREAD_ID, sender="jane@example.com", exclude_job=None
    )


async def drafted(harness: Harness) -> str:
    """Draft mode, the message delivered (and in its thread at AgentMail), its draft
    created and awaiting review; the journal and the calls cleared. Its draft's id."""
    harness.configure(mode=ReplyMode.DRAFT, draft_check_seconds=CHECK)
    message = payload()
    harness.api.add_to_thread(message)
    await harness.deliver(message)
    assert await harness.run() == AttemptOutcome.DRAFTED
    harness.journal.clear()
    harness.api.calls.clear()
    [draft_id] = harness.api.drafts
    return draft_id


async def hint(harness: Harness, sent_id: str) -> None:
    """Intake's part of a ``message.sent`` event in the thread: the job is hinted, due now."""
    await harness.store.note_sent(
        inbox_id=INBOX, thread_id=THREAD_ID, message_id=sent_id, now=harness.clock()
    )


def assert_one_draft(harness: Harness) -> None:
    """Every create asked for the message's draft under its client_id; one draft exists."""
    creates = harness.api.called("create_draft")
    assert creates
    assert {call.client_id for call in creates} == {CLIENT_ID}
    assert {call.body for call in creates} == {creates[0].body}
    assert len(harness.api.created_drafts) == 1


# -- the draft is created ------------------------------------------------------------


async def test_the_reply_becomes_one_draft_after_the_labels_and_the_job_waits(
    harness: Harness,
) -> None:
    """Decide, reserve, label unreplied, render, store, label autoreply-draft, create the
    draft under the message's client_id, record it: the job waits in drafted until the
    next check, and nothing is sent."""
    harness.configure(mode=ReplyMode.DRAFT, draft_check_seconds=CHECK)
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.DRAFTED

    assert harness.journal == CREATE
    [create] = harness.api.called("create_draft")
    assert harness.api.calls == [LABEL, DRAFT_LABEL, create]
    assert create.client_id == CLIENT_ID
    assert create.reply is not None
    assert (create.reply.to, create.reply.mode) == ("jane@example.com", "draft")
    [draft] = harness.api.created_drafts
    assert (draft.in_reply_to, draft.reply) == (MESSAGE_ID, create.reply)
    assert harness.api.sent == []
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"unreplied", "autoreply-draft"}
    job = await harness.job()
    assert (job.state, job.draft_id, job.sent_message_id) == (
        JobState.DRAFTED,
        draft.draft_id,
        None,
    )
    assert job.reply == create.reply
    assert await harness.store.next_due() == START + CHECK
    assert (await ledger(harness)).replies_in_thread == 1
    assert harness.attempts[0]["draft_id"] == draft.draft_id


async def test_a_rule_drafts_what_it_matches_and_the_rest_is_sent(
    harness: Harness, tmp_path: Path
) -> None:
    """A rule's ``mode = "draft"`` over the default send mode: key accounts get a draft,
    everyone else a reply at once."""
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "rules.toml").write_text(
        '[[rule]]\nname = "key accounts"\nsender = "@vip.example"\ntemplate = "default"\n'
        'mode = "draft"\n'
    )
    harness.configure(templates=LiveTemplates(folder))
    vip = payload(message_id="<vip@vip.example>", thread_id="t-vip", **{"from": "ann@vip.example"})
    await harness.deliver(vip)
    assert await harness.run() == AttemptOutcome.DRAFTED
    await harness.deliver()
    assert await harness.run() == AttemptOutcome.REPLIED

    [draft] = harness.api.created_drafts
    assert (draft.in_reply_to, draft.reply.rule, draft.reply.to) == (
        "<vip@vip.example>",
        "key accounts",
        "ann@vip.example",
    )
    [sent] = harness.api.sent
    assert sent.message_id == MESSAGE_ID
    assert (await harness.job("<vip@vip.example>")).state is JobState.DRAFTED
    assert (await harness.job()).state is JobState.DONE


# -- creating it again gives the same draft ------------------------------------------


@pytest.mark.parametrize(
    "step",
    [
        FailAfterSend(failure("create_draft", 500)),
        FailAfterSend(timed_out("create_draft")),
        Hang(skip=LEASE, after_send=True),
    ],
    ids=["500-after-create", "client-timeout-after-create", "attempt-timeout-after-create"],
)
async def test_a_create_whose_answer_was_lost_gets_the_same_draft_back(
    harness: Harness, step: Step
) -> None:
    """The draft was created but the answer lost: the retry looks in the thread for a
    sent reply (none), creates again under the same client_id and gets the same draft
    back. One draft, recorded on the job."""
    harness.configure(mode=ReplyMode.DRAFT)
    harness.api.script("create_draft", step)
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.RETRY
    assert len(harness.api.drafts) == 1
    job = await harness.job()
    assert (job.state, job.draft_id) == (JobState.PENDING, None)
    harness.journal.clear()

    assert await harness.run_when_due() == AttemptOutcome.DRAFTED

    assert harness.journal == [
        "get_thread",
        "update_labels +autoreply-draft",
        "create_draft",
        "await_draft",
    ]
    assert_one_draft(harness)
    [draft_id] = harness.api.drafts
    job = await harness.job()
    assert (job.state, job.draft_id) == (JobState.DRAFTED, draft_id)
    assert harness.journal.count("render") == 0
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"unreplied", "autoreply-draft"}


async def test_a_draft_sent_before_the_retry_is_not_created_again(harness: Harness) -> None:
    """The create's answer was lost, and a reviewer sent that draft before the retry
    (which freed its client_id): the retry finds the sent reply in the thread and the
    job is replied, instead of creating a second draft to be sent again."""
    harness.configure(mode=ReplyMode.DRAFT)
    harness.api.add_to_thread(payload())
    harness.api.script("create_draft", FailAfterSend(failure("create_draft", 502)))
    await harness.deliver()
    assert await harness.run() == AttemptOutcome.RETRY
    [draft_id] = harness.api.drafts
    sent_id = harness.api.send_draft(draft_id)

    assert await harness.run_when_due() == AttemptOutcome.REPLIED

    assert len(harness.api.called("create_draft")) == 1
    assert harness.api.created_drafts[0].draft_id == draft_id
    assert harness.api.drafts == {}
    assert harness.api.calls[-1] == SENT_RELABEL
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"replied"}
    job = await harness.job()
    assert (job.state, job.reason, job.sent_message_id) == (JobState.DONE, "replied", sent_id)


# -- losing the lease ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "calls"),
    [
        ("reserve", []),
        ("save_reply", ["update_labels"]),
        ("await_draft", ["update_labels", "update_labels", "create_draft"]),
    ],
)
async def test_lease_lost_before_a_creating_step_stops_there_and_one_draft_results(
    harness: Harness, step: str, calls: list[str]
) -> None:
    """Another worker takes the job just before ``step``: the attempt stops there and
    records nothing more. When that worker's lease runs out too, the job is drafted with
    one draft (a draft created but not recorded is the same draft created again)."""
    harness.configure(mode=ReplyMode.DRAFT)
    harness.before(step, harness.steal_lease)
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.LEASE_LOST

    assert [call.method for call in harness.api.calls] == calls
    assert harness.journal[-1] == step
    job = await harness.job()
    assert (job.state, job.attempts, job.draft_id) == (JobState.RUNNING, 2, None)
    assert (job.reply is None) == (step in ("reserve", "save_reply"))

    harness.clock.now += 2 * LEASE + 2
    assert await harness.run() == AttemptOutcome.DRAFTED

    assert_one_draft(harness)
    [draft_id] = harness.api.drafts
    assert (await harness.job()).draft_id == draft_id
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"unreplied", "autoreply-draft"}


@pytest.mark.parametrize(
    ("draft", "step", "outcome", "state"),
    [
        ("kept", "await_draft", AttemptOutcome.WAITING, JobState.DRAFTED),
        ("sent", "mark_sent", AttemptOutcome.REPLIED, JobState.DONE),
        ("sent", "finish", AttemptOutcome.REPLIED, JobState.DONE),
        ("deleted", "finish", AttemptOutcome.DISCARDED, JobState.DISCARDED),
    ],
    ids=["waiting-await_draft", "sent-mark_sent", "sent-finish", "deleted-finish"],
)
async def test_lease_lost_while_looking_at_the_draft_is_settled_by_the_next_worker(
    harness: Harness, draft: str, step: str, outcome: AttemptOutcome, state: JobState
) -> None:
    """The check of a waiting draft loses its lease just before ``step``: it stops
    there, and the next worker settles the job the same way; the message ends with the
    labels of that outcome and nothing is sent or drafted again."""
    draft_id = await drafted(harness)
    sent_id = None
    if draft == "sent":
        sent_id = harness.api.send_draft(draft_id)
    elif draft == "deleted":
        harness.api.delete_draft(draft_id)
    harness.before(step, harness.steal_lease)
    harness.clock.now += CHECK

    assert await harness.run() == AttemptOutcome.LEASE_LOST

    job = await harness.job()
    assert (job.state, job.attempts) == (JobState.RUNNING, 2)
    harness.clock.now += 2 * LEASE + 2
    assert await harness.run() == outcome

    job = await harness.job()
    assert (job.state, job.draft_id, job.sent_message_id) == (state, draft_id, sent_id)
    labels = {
        JobState.DRAFTED: {"unreplied", "autoreply-draft"},
        JobState.DONE: {"replied"},
        JobState.DISCARDED: {"unreplied"},
    }
    assert harness.api.labels[INBOX, MESSAGE_ID] == labels[state]
    assert len(harness.api.created_drafts) == 1
    assert harness.api.sent == []


async def test_a_sent_event_while_the_draft_is_created_is_not_missed(harness: Harness) -> None:
    """A reviewer sends the draft the moment it appears, and its message.sent event is
    noted before the job records the draft: the job is due again at once (not at the
    next check), finds the draft sent, and is replied."""
    harness.configure(mode=ReplyMode.DRAFT, draft_check_seconds=CHECK)
    harness.api.add_to_thread(payload())
    await harness.deliver()
    sent: list[str] = []

    async def reviewer_sends_it() -> None:
        [draft_id] = harness.api.drafts
        sent.append(harness.api.send_draft(draft_id))
        await hint(harness, sent[0])

    harness.before("await_draft", reviewer_sends_it)
    assert await harness.run() == AttemptOutcome.DRAFTED
    assert await harness.store.next_due() == START

    assert await harness.run() == AttemptOutcome.REPLIED

    job = await harness.job()
    assert (job.state, job.reason, job.sent_message_id) == (JobState.DONE, "replied", sent[0])
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"replied"}


# -- the job waits on its draft ------------------------------------------------------


async def test_a_draft_still_there_at_its_check_keeps_the_job_waiting(harness: Harness) -> None:
    """The periodic check finds the draft awaiting review: nothing else is asked or
    changed, and the job waits until the next check."""
    draft_id = await drafted(harness)

    assert await harness.run_when_due() == AttemptOutcome.WAITING

    assert harness.clock.now == START + CHECK
    assert harness.journal == ["draft_exists", "await_draft"]
    assert harness.api.calls == [Call("draft_exists", INBOX, draft_id)]
    job = await harness.job()
    assert (job.state, job.draft_id) == (JobState.DRAFTED, draft_id)
    assert await harness.store.next_due() == START + 2 * CHECK
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"unreplied", "autoreply-draft"}
    assert harness.attempts[-1]["draft_id"] == draft_id


async def test_a_person_answering_in_their_own_words_does_not_settle_the_draft(
    harness: Harness,
) -> None:
    """A person answers the message directly while the draft waits: the sent event wakes
    the job, the draft is still there, so the job keeps waiting on it and the person's
    message is not recorded as the reply."""
    draft_id = await drafted(harness)
    person = {
        "inbox_id": INBOX,
        "thread_id": THREAD_ID,
        "message_id": "<person@agentmail.to>",
        "labels": ["sent"],
        "in_reply_to": MESSAGE_ID,
    }
    harness.api.add_message(person)
    harness.api.add_to_thread(person)
    harness.clock.now += 60
    await hint(harness, "<person@agentmail.to>")

    assert await harness.run() == AttemptOutcome.WAITING

    job = await harness.job()
    assert (job.state, job.draft_id, job.sent_message_id, job.sent_hint) == (
        JobState.DRAFTED,
        draft_id,
        None,
        None,
    )
    assert draft_id in harness.api.drafts
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"unreplied", "autoreply-draft"}


# -- the draft is sent or deleted ----------------------------------------------------


async def test_a_sent_draft_is_replied_with_one_relabel_on_its_sent_event(
    harness: Harness,
) -> None:
    """A reviewer sends the draft; its message.sent event makes the job due at once: the
    draft is gone, the hinted message answers ours, and one PATCH relabels the message
    replied (unreplied and autoreply-draft removed) as the ledger records the send."""
    draft_id = await drafted(harness)
    harness.clock.now += 60
    sent_id = harness.api.send_draft(draft_id)
    await hint(harness, sent_id)

    assert await harness.run() == AttemptOutcome.REPLIED

    assert harness.journal[:2] == ["draft_exists", "get_message"]
    assert set(harness.journal[2:4]) == RECORD
    assert harness.journal[4:] == ["finish done"]
    assert harness.api.calls == [
        Call("draft_exists", INBOX, draft_id),
        Call("get_message", INBOX, sent_id),
        SENT_RELABEL,
    ]
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"replied"}
    job = await harness.job()
    assert (job.state, job.reason, job.sent_message_id) == (JobState.DONE, "replied", sent_id)
    assert harness.attempts[-1]["sent_message_id"] == sent_id
    assert harness.attempts[-1]["draft_id"] == draft_id
    assert (await ledger(harness)).replies_in_thread == 1
    assert len(harness.api.created_drafts) == 1
    assert harness.api.sent == []


async def test_a_sent_draft_without_its_event_is_found_by_the_periodic_check(
    harness: Harness,
) -> None:
    """The message.sent event never came: at the next check the draft is gone, and the
    reply it became is found in the thread; one relabel, replied."""
    draft_id = await drafted(harness)
    sent_id = harness.api.send_draft(draft_id)

    assert await harness.run_when_due() == AttemptOutcome.REPLIED

    assert harness.journal[:2] == ["draft_exists", "get_thread"]
    assert set(harness.journal[2:4]) == RECORD
    assert harness.journal[4:] == ["finish done"]
    assert harness.api.called("update_labels") == [SENT_RELABEL]
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"replied"}
    job = await harness.job()
    assert (job.state, job.reason, job.sent_message_id) == (JobState.DONE, "replied", sent_id)


async def test_a_deleted_draft_discards_the_job_and_the_message_stays_unreplied(
    harness: Harness,
) -> None:
    """The reviewer deleted the draft: at the next check it is gone and nothing answers
    the message in the thread. Only the draft label comes off (the message stays
    unreplied for a person to see), the job ends discarded, its place in the ledger is
    given back, and nothing is drafted or sent again."""
    draft_id = await drafted(harness)
    harness.api.delete_draft(draft_id)

    assert await harness.run_when_due() == AttemptOutcome.DISCARDED

    assert harness.journal == [
        "draft_exists",
        "get_thread",
        "update_labels -autoreply-draft",
        "finish discarded",
    ]
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"unreplied"}
    job = await harness.job()
    assert (job.state, job.reason, job.sent_message_id) == (
        JobState.DISCARDED,
        "discarded",
        None,
    )
    assert (await ledger(harness)).replies_in_thread == 0
    assert await harness.store.next_due() is None
    assert len(harness.api.created_drafts) == 1
    assert harness.api.sent == []


# -- AgentMail failures --------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [failure("create_draft", 503), failure("create_draft", 429, retry_after=120)],
    ids=["503", "429"],
)
async def test_a_transient_failure_to_create_the_draft_is_retried(
    harness: Harness, error: ApiFailure
) -> None:
    """No draft was made: the job is retried (after Retry-After) with the stored reply,
    the message keeps its labels, and the retry creates the one draft."""
    harness.configure(mode=ReplyMode.DRAFT)
    harness.api.script("create_draft", Fail(error))
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.RETRY

    assert harness.api.drafts == {}
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"unreplied", "autoreply-draft"}
    job = await harness.job()
    assert (job.state, job.draft_id) == (JobState.PENDING, None)
    assert job.reply is not None
    assert harness.attempts[0]["error"] == error.reason
    due = await harness.store.next_due()
    assert due is not None
    assert due - START >= (error.retry_after or 0)

    assert await harness.run_when_due() == AttemptOutcome.DRAFTED

    assert_one_draft(harness)
    assert harness.journal.count("render") == 1
    assert (await harness.job()).state is JobState.DRAFTED


async def test_a_draft_refused_for_good_is_dead_without_the_draft_label(harness: Harness) -> None:
    """AgentMail refuses the draft (400): the job is dead with its answer, and the
    message loses the label saying a draft awaits review; it stays unreplied."""
    harness.configure(mode=ReplyMode.DRAFT)
    harness.api.script("create_draft", Fail(failure("create_draft", 400)))
    await harness.deliver()

    assert await harness.run() == AttemptOutcome.DEAD

    assert harness.journal == [
        *CREATE[:-1],
        "update_labels -autoreply-draft",
        "finish dead",
    ]
    assert harness.api.drafts == {}
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"unreplied"}
    job = await harness.job()
    assert (job.state, job.reason, job.draft_id) == (JobState.DEAD, "create draft: HTTP 400", None)


@pytest.mark.parametrize(
    "step",
    [Fail(failure("draft_exists", 503)), Fail(timed_out("draft_exists")), Hang(skip=LEASE)],
    ids=["503", "client-timeout", "attempt-timeout"],
)
async def test_a_failed_draft_check_is_retried_however_long_the_draft_waited(
    harness: Harness, step: Step
) -> None:
    """The check cannot tell whether the draft is there: retried, not settled blindly.
    A draft may wait for review longer than a reply's Idempotency-Key window: the retry
    comes all the same, and the job goes back to waiting on the same draft."""
    draft_id = await drafted(harness)
    harness.api.script("draft_exists", step)
    harness.clock.now = START + SEND_WINDOW + 86_400

    assert await harness.run() == AttemptOutcome.RETRY

    job = await harness.job()
    assert (job.state, job.draft_id) == (JobState.PENDING, draft_id)
    assert await harness.run_when_due() == AttemptOutcome.WAITING

    job = await harness.job()
    assert (job.state, job.draft_id) == (JobState.DRAFTED, draft_id)
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"unreplied", "autoreply-draft"}
    assert len(harness.api.created_drafts) == 1
    assert harness.api.sent == []


async def test_a_draft_check_refused_for_good_is_dead_and_leaves_the_draft(
    harness: Harness,
) -> None:
    """The check is refused (403): the job is dead with the answer; the draft, which may
    still be there, and the message's labels are left for a person to see."""
    draft_id = await drafted(harness)
    harness.api.script("draft_exists", Fail(failure("draft_exists", 403)))

    assert await harness.run_when_due() == AttemptOutcome.DEAD

    assert harness.journal == ["draft_exists", "finish dead"]
    job = await harness.job()
    assert (job.state, job.reason) == (JobState.DEAD, "get draft: HTTP 403")
    assert draft_id in harness.api.drafts
    assert harness.api.labels[INBOX, MESSAGE_ID] == {"unreplied", "autoreply-draft"}
