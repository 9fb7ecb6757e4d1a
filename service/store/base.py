"""The store's contract: the ``Store`` protocol, its errors and outcomes, and the row
helpers the SQL stores share (the records themselves are in ``service.models``).

Every implementation (SQLite for one replica, PostgreSQL for several) passes the same
contract tests (tests/store/test_store_contract.py). Times are Unix seconds (floats)
supplied by the caller, so tests control them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from handlers.grace import OwnReplies
from handlers.policy import Decision, History, PolicyConfig
from handlers.suppression import (
    ALL_INBOXES,
    TRANSIENT_WINDOW,
    Cause,
    FeedbackKind,
    against_our_reply,
)
from service.models import (
    Delivery,
    Feedback,
    InboxSweep,
    Job,
    JobSource,
    JobState,
    JobSummary,
    PreparedReply,
    QueueStats,
    Suppression,
)


class StoreUnavailable(Exception):
    """The database cannot be reached or written; intake answers 503 so Svix retries."""


class Recorded(enum.Enum):
    """What ``record_delivery`` did with one delivery."""

    #: New delivery, new event, and a new job for its message: answer 202.
    ENQUEUED = "enqueued"
    #: The ``svix-id`` was seen before (a Svix retry or resend).
    DUPLICATE_DELIVERY = "duplicate_delivery"
    #: A new ``svix-id`` carrying an ``event_id`` seen before.
    DUPLICATE_EVENT = "duplicate_event"
    #: A new event for a message that already has its job.
    DUPLICATE_MESSAGE = "duplicate_message"
    #: Recorded for dedupe only; the event type is not one the service acts on, or the
    #: bounce or complaint is about a message that is no reply of ours.
    IGNORED = "ignored"
    #: A new bounce or complaint about one of our replies, recorded against its
    #: recipient (which it may have put on the suppression list).
    FEEDBACK = "feedback"
    #: A bounce or complaint about no reply of ours **yet**: a reply of ours in its
    #: thread is on its way (sent, or a draft a person may have sent) and its sent id is
    #: not recorded yet. Nothing is recorded; the sender should deliver it again later.
    NOT_YET = "not_yet"


@dataclass(frozen=True, slots=True)
class FeedbackOutcome:
    """What ``record_feedback`` did: the outcome, and the addresses it suppressed now
    with their cause (empty when none was suppressed by this event)."""

    recorded: Recorded
    suppressed: tuple[tuple[str, Cause], ...] = ()


#: Columns of ``suppressions`` that ``suppression_from_row`` reads, in order.
SUPPRESSION_COLUMNS = "inbox_id, address, cause, reason, message_id, created_at"

#: Every entry of the suppression list, oldest first (both stores).
LIST_SUPPRESSIONS = (
    f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions"  # noqa: S608 - constant columns
    " ORDER BY created_at, inbox_id, address"
)

# The statements below are written with ``%s`` (PostgreSQL's placeholder); the SQLite
# store replaces it with ``?``. None of them holds a literal ``%``.

#: The suppression entry of a sender (address, inbox id) for the policy: its cause and
#: reason, for the inbox or for every inbox.
SUPPRESSED = f"""SELECT cause, reason FROM suppressions
    WHERE address = %s AND inbox_id IN (%s, '{ALL_INBOXES}')
    ORDER BY created_at LIMIT 1"""  # noqa: S608 - a constant

#: Whether a reply of ours in a thread (inbox id, thread id) may be out without its sent
#: id recorded: prepared and being sent (``running``) or a draft awaiting review that a
#: ``message.sent`` hints was sent (``drafted`` with a ``sent_hint``). A draft nobody has
#: sent is no reply on its way: counting it would answer every bounce in its thread 503
#: for as long as the review takes, longer than Svix retries. Read before our reply is
#: looked up by its sent id, so a sent id recorded in between is seen by that look-up.
REPLY_ON_ITS_WAY = """SELECT 1 FROM jobs WHERE inbox_id = %s AND thread_id = %s
    AND (state = 'running' OR (state = 'drafted' AND sent_hint IS NOT NULL))
    AND sent_message_id IS NULL AND reply IS NOT NULL
    LIMIT 1"""

#: Our reply, by the id it was sent under (inbox id, sent message id).
OUR_REPLY = "SELECT reply FROM jobs WHERE inbox_id = %s AND sent_message_id = %s LIMIT 1"

#: One recipient's feedback about one reply (inbox id, reply's message id, address,
#: kind, event id, detail, now); a second event about the same bounce writes nothing.
INSERT_FEEDBACK = """INSERT INTO feedback (inbox_id, message_id, address, kind, event_id, detail,
        received_at) VALUES (%s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (inbox_id, message_id, address, kind) DO NOTHING"""

#: Transient bounces of distinct replies to an address (inbox id, address, since),
#: not cleared by a removal.
COUNT_TRANSIENT = f"""SELECT count(*) FROM feedback
    WHERE inbox_id = %s AND address = %s AND kind = '{FeedbackKind.TRANSIENT_BOUNCE.value}'
      AND cleared_at IS NULL AND received_at >= %s"""  # noqa: S608 - a constant

#: A suppression from feedback (inbox id, address, cause, reason, message id, event id,
#: now); an address already on the list keeps its entry.
INSERT_SUPPRESSION = """INSERT INTO suppressions
        (inbox_id, address, cause, reason, message_id, event_id, created_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (inbox_id, address) DO NOTHING"""


def feedback_values(
    delivery: Delivery, feedback: Feedback, address: str, now: float
) -> tuple[Any, ...]:
    """The parameters of ``INSERT_FEEDBACK`` for one recipient of ``feedback``."""
    return (
        feedback.inbox_id,
        feedback.message_id,
        address,
        feedback.kind.value,
        delivery.event_id,
        feedback.detail,
        now,
    )


def transient_values(feedback: Feedback, address: str, now: float) -> tuple[Any, ...]:
    """The parameters of ``COUNT_TRANSIENT``: the bounces within ``TRANSIENT_WINDOW``."""
    return (feedback.inbox_id, address, now - TRANSIENT_WINDOW.total_seconds())


def suppression_values(
    delivery: Delivery, feedback: Feedback, address: str, cause: Cause, now: float
) -> tuple[Any, ...]:
    """The parameters of ``INSERT_SUPPRESSION``: ``address`` suppressed by ``feedback``."""
    return (
        feedback.inbox_id,
        address,
        cause.value,
        feedback.detail,
        feedback.message_id,
        delivery.event_id,
        now,
    )


def suppression_from_row(row: tuple[Any, ...]) -> Suppression:
    """A ``Suppression`` from a row of ``SUPPRESSION_COLUMNS``."""
    return Suppression(
        inbox_id=row[0],
        address=row[1],
        cause=row[2],
        reason=row[3],
        message_id=row[4],
        created_at=float(row[5]),
    )


def suppressed_detail(cause: str, reason: str | None) -> str:
    """The detail of a ``suppressed`` skip: the entry's cause and reason."""
    return f"{cause}: {reason}" if reason else cause


def feedback_recipients(feedback: Feedback, reply_json: str | None) -> tuple[str, ...]:
    """Whom a bounce or complaint about our reply is against: the one address the reply
    went to, if the event names it or names nobody (``handlers.suppression.against_our_reply``);
    else nobody. At most one address, however many the event lists.

    Every job that has a ``sent_message_id`` stored its reply before sending it; one
    without (none exists) would be against nobody rather than against whoever the event
    names."""
    if reply_json is None:
        return ()
    return against_our_reply(feedback.recipients, PreparedReply.from_json(reply_json).to)


#: The ``event_id`` of a job the sweep enqueued is this prefix and the message id (e.g.
#: ``sweep:<abc@example.com>``): the column is NOT NULL and logged with every attempt,
#: and no event delivered it. Svix event ids (``evt_...``) never take this form, and no
#: ``events`` row is written for it, so webhook dedupe never sees it.
SWEEP_EVENT_PREFIX = "sweep:"

#: The ``reason`` of a pending job waiting out its grace period (``Store.defer``).
GRACE_PERIOD = "grace_period"

#: The most jobs one ``message.sent`` event hints, and the most it wakes (``note_sent``):
#: a thread mail-bombed into thousands of jobs must not make one event (nor the attempts
#: it wakes) unbounded work. The others lose nothing: a drafted job's periodic check and a
#: waiting job's due time read AgentMail all the same.
NOTE_SENT_LIMIT = 100

#: The name of the sweep's row in the ``leases`` table (see ``Store.try_sweep_lease``).
SWEEP_LEASE = "sweep"


def sweep_event_id(message_id: str) -> str:
    """The ``event_id`` recorded on a job the sweep enqueued (see ``SWEEP_EVENT_PREFIX``)."""
    return SWEEP_EVENT_PREFIX + message_id


#: The columns ``job_from_row`` reads, in order (the SQL stores select exactly these).
JOB_COLUMNS = (
    "id, inbox_id, message_id, event_id, event_type, message_json, state, attempts,"
    " created_at, reply, first_send_at, sent_message_id, coalesce(reason, last_error), source,"
    " draft_id, sent_hint, thread_id"
)

#: The columns ``summary_from_row`` reads, in order.
SUMMARY_COLUMNS = (
    "inbox_id, message_id, state, attempts, reason, last_error,"
    " created_at, updated_at, first_send_at, sent_message_id, source, draft_id"
)


#: Every inbox's sweep state, in the columns ``inbox_sweep`` reads (both stores).
SWEEP_STATES = "SELECT inbox_id, mark, swept_at, findings FROM sweep_marks ORDER BY inbox_id"


def inbox_sweep(row: tuple[Any, ...]) -> InboxSweep:
    """An ``InboxSweep`` from a row of ``SWEEP_STATES``."""
    findings = None if row[3] is None else {k: int(v) for k, v in json.loads(row[3]).items()}
    return InboxSweep(
        inbox_id=row[0],
        mark=float(row[1]),
        swept_at=None if row[2] is None else float(row[2]),
        findings=findings,
    )


def own_replies(rows: Iterable[tuple[Any, ...]]) -> OwnReplies:
    """``OwnReplies`` from rows of (inbound message id, sent message id or None) of the
    jobs of one thread whose reply is stored (shared by the SQL stores)."""
    pairs = list(rows)
    return OwnReplies(
        sent=frozenset(sent for _, sent in pairs if sent is not None),
        sending_to=frozenset(inbound for inbound, sent in pairs if sent is None),
    )


def job_from_row(row: tuple[Any, ...]) -> Job:
    """A ``Job`` from a row of ``JOB_COLUMNS`` (shared by the SQL stores)."""
    return Job(
        id=row[0],
        inbox_id=row[1],
        message_id=row[2],
        event_id=row[3],
        event_type=row[4],
        message_json=row[5],
        state=JobState(row[6]),
        attempts=row[7],
        created_at=row[8],
        reply=None if row[9] is None else PreparedReply.from_json(row[9]),
        first_send_at=row[10],
        sent_message_id=row[11],
        reason=row[12],
        source=JobSource(row[13]),
        draft_id=row[14],
        sent_hint=row[15],
        thread_id=row[16],
    )


def summary_from_row(row: tuple[Any, ...]) -> JobSummary:
    """A ``JobSummary`` from a row of ``SUMMARY_COLUMNS``."""
    return JobSummary(
        inbox_id=row[0],
        message_id=row[1],
        state=JobState(row[2]),
        attempts=row[3],
        reason=row[4],
        last_error=row[5],
        created_at=row[6],
        updated_at=row[7],
        first_send_at=row[8],
        sent_message_id=row[9],
        source=JobSource(row[10]),
        draft_id=row[11],
    )


class Store(Protocol):
    """Durable state shared by intake and the workers.

    Methods that change a claimed job take the worker's ``owner`` token and return
    False, changing nothing, when the job's lease now belongs to someone else.
    """

    async def open(self) -> None:
        """Connect and apply migrations."""

    async def close(self) -> None:
        """Finish pending writes and disconnect."""

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers."""

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` when another process enqueues a job; run until cancelled.

        A latency hint only: the worker polls anyway, so a missed call delays a job by
        at most one poll. A store without notifications (SQLite: one process) returns
        at once. Never raises for an unreachable database: it retries with backoff.
        """

    async def record_delivery(self, delivery: Delivery, *, now: float) -> Recorded:
        """Record the delivery, its event and (for a message) its job, durably.

        The job's source is ``webhook``.
        """

    async def record_feedback(
        self, delivery: Delivery, *, now: float, transient_limit: int
    ) -> FeedbackOutcome:
        """Record a bounce or complaint delivery (``delivery.feedback``) and apply it.

        In one transaction: the delivery and its event, deduplicated as
        ``record_delivery`` does them; then, for a new event about one of **our**
        replies (a job whose ``sent_message_id`` is the message in that inbox), one
        ``feedback`` row for the reply's recipient (``feedback_recipients``: at most one,
        whatever the event lists), and a suppression where
        ``handlers.suppression.suppression_cause`` says so (``transient_limit`` is
        ``AUTOREPLY_TRANSIENT_BOUNCE_LIMIT``). Feedback about a message that is no reply
        of ours, or naming only others than its recipient, is ``IGNORED``; one about no
        reply of ours while a reply of ours in the same thread is on its way without its
        sent id recorded (``REPLY_ON_ITS_WAY``) is ``NOT_YET``, recording nothing, so that
        it is delivered again once that id is known rather than lost; feedback
        already recorded for that reply, address and kind (a second event about one
        bounce) changes nothing; an address already on the list keeps its entry.
        Replicas applying feedback for one address at once are serialised, so transient
        bounces are counted exactly.
        """

    async def add_suppression(
        self, *, inbox_id: str, address: str, reason: str | None, now: float
    ) -> bool:
        """Put ``address`` on the list for ``inbox_id`` (``*``: every inbox), cause
        ``manual``; True if it was added, False if it was there already (kept as it was)."""

    async def remove_suppression(self, *, address: str, inbox_id: str | None, now: float) -> int:
        """Take ``address`` off the list, for ``inbox_id`` only or (None) for every inbox,
        entries for ``*`` included; return how many entries went.

        Its recorded feedback is cleared too, so transient bounces count afresh.
        """

    async def list_suppressions(self) -> list[Suppression]:
        """Every entry of the suppression list, oldest first."""

    async def record_swept(
        self,
        inbox_id: str,
        message_id: str,
        thread_id: str,
        message_json: str,
        event_type: str,
        now: float,
    ) -> bool:
        """Enqueue a message the sweep found, unless it has a job; True if this created one.

        The same deduplication as intake: one job per ``(inbox_id, message_id)``,
        whichever path comes first, so a sweep finding a message a webhook already
        enqueued creates nothing, and a webhook delivery of a message the sweep enqueued
        is answered ``DUPLICATE_MESSAGE``. Only the job is written (source ``sweep``,
        ``event_id`` from ``sweep_event_id``): no ``deliveries`` or ``events`` row, which
        would make a real delivery of that event look like a duplicate. Wakes the
        workers of other replicas like an enqueue by intake.
        """

    async def get_marks(self) -> dict[str, float]:
        """Every inbox's sweep mark (Unix seconds), by inbox id.

        The mark is how far the sweep has fully processed an inbox's received messages:
        the next sweep lists from the mark minus an overlap.
        """

    async def ensure_mark(self, inbox_id: str, now: float) -> float:
        """The inbox's mark, first set to ``now`` if it has none; atomic.

        The first-start rule: a new deployment (or a newly added inbox) starts sweeping
        from the moment it first looks, so it never auto-replies to old mail by surprise.
        Of replicas racing on a missing mark, one sets it and all return that value.
        """

    async def set_mark(self, inbox_id: str, at: float, now: float) -> float:
        """Move the inbox's mark forward to ``at`` (never back); return the mark now.

        A mark only moves forward, so a slow or stale sweeper can never undo another's
        progress, and a sweep over an earlier range (``sweep --since``) takes its own
        starting point instead of moving the mark back. Sets the mark if the inbox had
        none. ``now`` is recorded as when a sweep last set it.
        """

    async def note_sweep(self, inbox_id: str, *, at: float, findings: dict[str, int]) -> None:
        """Record that a sweep went through the whole inbox at ``at``, and its counts.

        Only an inbox that has a mark is noted (every sweep that may move marks sets
        one first); ``autoreply status`` shows the last note beside the mark.
        """

    async def sweep_states(self) -> list[InboxSweep]:
        """Every inbox's mark with its last full sweep and findings, by inbox id."""

    async def try_sweep_lease(self, owner: str, now: float, ttl: float) -> bool:
        """Take or renew the sweep lease until ``now + ttl``; True if ``owner`` holds it.

        One lease for the whole deployment, so exactly one replica (or ``autoreply
        sweep`` process) sweeps at a time. It is free when nobody holds it or the
        holder's lease ran out; its holder renews it by calling again before then. A
        committed row in both databases (an SQLite file can be shared by ``serve`` and a
        CLI process too), so the sweep code is the same on either.
        """

    async def release_sweep_lease(self, owner: str) -> bool:
        """Give the sweep lease back if ``owner`` holds it; True if it did.

        Fenced like job leases: a sweeper whose lease was taken over releases nothing.
        """

    async def claim(self, *, owner: str, now: float, lease: float, limit: int) -> list[Job]:
        """Lease up to ``limit`` due jobs: pending ones, and running ones whose lease ran out."""

    async def save_reply(
        self, job_id: int, *, owner: str, reply: PreparedReply, now: float
    ) -> bool:
        """Store the prepared reply (once; a stored one is kept) and its first-send time."""

    async def reserve(
        self,
        job_id: int,
        *,
        owner: str,
        thread_id: str,
        sender: str,
        policy: PolicyConfig,
        now: float,
    ) -> Decision | None:
        """Check the thread cap and the sender cooldown and reserve the reply, atomically.

        In one step that no other reservation (of any replica) can interleave with: read
        the ledger of the job's inbox for ``thread_id`` and ``sender`` (sent replies and
        reservations of other jobs), apply ``handlers.policy.check_limits``, and if it
        allows the reply, insert the job's reservation into the ledger. Returns that
        decision (``ok``, or a skip with ``thread_cap`` / ``sender_cooldown``), or None,
        changing nothing, when ``owner`` lost the lease. A job that already holds a
        reservation (a retry, or another worker after a crash) gets ``ok`` again: its
        reservation is its own, not a conflict.
        """

    async def mark_sent(
        self,
        job_id: int,
        *,
        owner: str,
        sent_message_id: str,
        thread_id: str,
        sender: str,
        now: float,
    ) -> bool:
        """Record the sent reply on the job and confirm it in the reply ledger.

        The job's reservation becomes the sent reply (its time: ``now``); a job that
        has none (reserved by a version without reservations) gets its ledger row here.
        """

    async def finish(
        self, job_id: int, *, owner: str, state: JobState, reason: str, now: float
    ) -> bool:
        """Move the job to a final state (``done``, ``skipped``, ``dead`` or ``discarded``)
        with a reason.

        A job that ends ``skipped`` or ``dead`` before its reply was stored releases its
        reservation, if it holds one: nothing was sent, and nothing can be sent for it
        later (a requeued job decides again). A ``discarded`` job (its draft deleted
        unsent) always releases it: nothing was sent, and nothing will be. Otherwise,
        once the reply is stored, the reservation counts even if the job dies: the reply
        may have gone out (an attempt whose answer was lost), and ``requeue`` may still
        send it.
        """

    async def retry(
        self, job_id: int, *, owner: str, run_after: float, error: str, now: float
    ) -> bool:
        """Release the job to run again at ``run_after``, noting the error.

        A job retried after its grace period no longer counts as waiting (its ``reason``
        ``GRACE_PERIOD`` is cleared): from then on its age counts from its creation.
        """

    async def defer(self, job_id: int, *, owner: str, run_after: float, now: float) -> bool:
        """Put the claimed job back to wait until ``run_after`` (its grace period).

        Not an attempt: the claim's count is given back, no error is noted, and the
        job's ``reason`` becomes ``GRACE_PERIOD`` while it waits (``autoreply status``
        shows it; a worker claiming it before ``run_after`` knows it was woken early).
        The job waits in the database, so a restart or a crash during the delay loses
        nothing: it is claimed again when it falls due.
        """

    async def own_replies(self, *, inbox_id: str, thread_id: str) -> OwnReplies:
        """This service's replies in a thread of an inbox: those sent (their ids) and
        those on their way (the messages they answer).

        Every reply has a row in the reply ledger, which is indexed by thread, from its
        reservation on; its job holds the stored reply before it is sent and the sent
        message's id after. The grace period asks this to tell the service's own replies
        from a person's answer (``handlers.grace.OwnReplies``).
        """

    async def await_draft(
        self,
        job_id: int,
        *,
        owner: str,
        draft_id: str,
        seen_hint: str | None,
        check_at: float,
        now: float,
    ) -> bool:
        """Draft mode: record the job's draft and let the job wait in ``drafted``.

        The job is claimed again at ``check_at`` (to look at the draft), or at once if a
        ``message.sent`` hint arrived that this attempt did not see: ``seen_hint`` is the
        hint the attempt looked at (None: none), and it is cleared; a newer one stays and
        makes the job due now, so an event landing during the attempt is not lost. The
        lease is released and ``attempts`` restarts (waiting is not failing).
        """

    async def note_sent(self, *, inbox_id: str, thread_id: str, message_id: str, now: float) -> int:
        """A ``message.sent`` event in ``thread_id``: hint every job of that thread whose
        draft awaits review (``drafted``, or being looked at now) with the sent message's
        id and make it due now; and make every job of the thread waiting out its grace
        period due now (its worker reads the thread: an answer ends the wait early,
        otherwise the job waits on). A job whose draft may be being created right now
        (reply stored, no draft id yet) is hinted too, so the draft's send is not missed
        until the next check; it is not counted. At most ``NOTE_SENT_LIMIT`` jobs of each kind, the
        oldest first. Returns how many jobs it hinted or woke (0: about nothing of ours,
        and the event is only recorded)."""

    async def release(self, *, owner: str, now: float) -> int:
        """Give back every lease ``owner`` holds (graceful shutdown); return how many."""

    async def next_due(self) -> float | None:
        """When the earliest pending job or lease falls due, if any."""

    async def history(
        self, *, inbox_id: str, thread_id: str, sender: str, exclude_job: int | None = None
    ) -> History:
        """What the policy needs to know about earlier replies, sent or reserved, and
        whether the sender is on the suppression list for the inbox (or for every inbox).

        ``exclude_job`` leaves that job's own reservation out: a retried job must not
        be skipped because of its own place in the ledger.
        """

    async def stats(self, *, now: float) -> QueueStats:
        """Queue depth by state, when the oldest unfinished job fell due, and how many
        jobs wait out a grace period at ``now`` (``QueueStats``): those whose delay runs
        past it (one whose delay is over is due, even before a worker claims it)."""

    async def get_job(self, inbox_id: str, message_id: str) -> Job | None:
        """The job of one message, if any (inspection and tests)."""

    async def list_jobs(self, *, states: tuple[JobState, ...], limit: int) -> list[JobSummary]:
        """Jobs in ``states``, most recently updated first (``autoreply status``)."""

    async def purge(self, *, before: float, batch: int = 1000) -> int:
        """Delete delivery and event dedupe rows received before ``before``; return how many.

        Runs in batches of at most ``batch`` rows, each its own short transaction, so
        intake is never held up behind it. Jobs and the reply ledger are kept: job
        dedupe and the policy's thread cap and sender cooldown depend on them. So are
        the suppression list and the feedback behind it: an address stays suppressed
        until an operator removes it.
        """

    async def requeue(
        self, *, message_id: str | None, dead: bool, now: float, not_sent_before: float
    ) -> int:
        """Move dead jobs back to pending; return how many moved.

        ``message_id`` picks one message's job (dead or not yet final is refused:
        only dead jobs move), ``dead`` picks every dead job. A job whose first send
        attempt is older than ``not_sent_before`` is left dead: its Idempotency-Key
        may have expired, so sending again could send a second email. The stored
        reply is kept, so a requeued job resends the same bytes under the same key.
        """
