"""SQLite store: the embedded default for a single replica.

One writing connection. Operations queue up while a transaction commits; the next
transaction then runs the whole queue and commits once (group commit). WAL mode with
``synchronous=FULL`` fsyncs every commit, so nothing is acknowledged before it is on
disk, but one fsync is shared by every delivery that arrived meanwhile. Deliveries in a
batch are written with one multi-row statement per table. The statements run on the
event loop's thread; only what can block (a BEGIN that must wait for another process,
the COMMIT's fsync) goes to a helper thread. The operators' reads that scan the jobs
table (metrics, status) use a second connection on a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from handlers.grace import OwnReplies
from handlers.policy import Decision, History, PolicyConfig, check_limits
from handlers.suppression import Cause, suppression_cause
from service.models import (
    FINAL_STATES,
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
from service.store import migrations
from service.store.base import (
    COUNT_TRANSIENT,
    GRACE_PERIOD,
    INSERT_FEEDBACK,
    INSERT_SUPPRESSION,
    JOB_COLUMNS,
    LIST_SUPPRESSIONS,
    NOTE_SENT_LIMIT,
    OUR_REPLY,
    REPLY_ON_ITS_WAY,
    SUMMARY_COLUMNS,
    SUPPRESSED,
    SWEEP_LEASE,
    SWEEP_STATES,
    FeedbackOutcome,
    Recorded,
    StoreUnavailable,
    feedback_recipients,
    feedback_values,
    inbox_sweep,
    job_from_row,
    own_replies,
    summary_from_row,
    suppressed_detail,
    suppression_from_row,
    suppression_values,
    sweep_event_id,
    transient_values,
)

T = TypeVar("T")
log = structlog.get_logger(__name__)

#: Most operations run in one transaction; bounded so one commit stays short.
MAX_BATCH = 512
#: How long BEGIN waits for another process's write (``autoreply requeue``, ``migrate``).
BUSY_TIMEOUT_MS = 5000


@dataclass
class _Op:
    fn: Callable[[sqlite3.Connection], Any] | None
    future: asyncio.Future[Any]
    #: Set for ``record_delivery``: such operations are written together (see
    #: ``_record_many``) instead of one by one.
    delivery: Delivery | None = None
    now: float = 0.0
    result: Any = None
    error: BaseException | None = field(default=None)


class SQLiteStore:
    """``Store`` on one SQLite file (see the module docstring for the write path)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        #: One thread for what may block: opening, BEGIN (another process may hold the
        #: write lock) and COMMIT (the fsync).
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[_Op] = []
        self._flusher: asyncio.Task[None] | None = None
        #: A second connection, on a thread of its own, for the operators' reads that
        #: scan the jobs table (metrics, ``autoreply status``): WAL readers take no lock,
        #: so these hold up neither the event loop nor the batched writes.
        self._reader: sqlite3.Connection | None = None
        self._read_executor: ThreadPoolExecutor | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-read")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, self._connect)
            try:
                reader = await loop.run_in_executor(read_executor, self._connect_reader)
            except BaseException:
                conn.close()
                raise
        except (sqlite3.Error, OSError, migrations.MigrationError) as exc:
            executor.shutdown(wait=False)
            read_executor.shutdown(wait=False)
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        self._conn, self._executor = conn, executor
        self._reader, self._read_executor = reader, read_executor

    async def close(self) -> None:
        conn, executor = self._conn, self._executor
        reader, read_executor = self._reader, self._read_executor
        if conn is None or executor is None or reader is None or read_executor is None:
            return
        if self._flusher is not None:
            await self._flusher
        self._conn = self._executor = self._reader = self._read_executor = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(read_executor, reader.close)
        read_executor.shutdown(wait=True)
        await loop.run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
        migrations.apply_sqlite(conn)
        # From now on BEGIN first tries without waiting, on the event loop (see _begin).
        conn.execute("PRAGMA busy_timeout=0")
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # A reader waits only while another connection recovers the WAL after a crash.
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run read-only ``fn`` on the reader, in one read transaction (one snapshot)."""
        reader, read_executor = self._reader, self._read_executor
        if reader is None or read_executor is None:
            raise StoreUnavailable("store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                read_executor, _in_snapshot, reader, fn
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"read failed: {exc}") from exc

    # -- group commit ------------------------------------------------------------------

    async def _call(
        self,
        fn: Callable[[sqlite3.Connection], T] | None,
        *,
        delivery: Delivery | None = None,
        now: float = 0.0,
    ) -> T:
        if self._conn is None:
            raise StoreUnavailable("store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Op(fn=fn, future=future, delivery=delivery, now=now))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        """Commit what is pending, batch after batch, until nothing is.

        Operations that arrive while a batch commits wait for the next batch: the
        group commit. There is no await between the last check and the return, so an
        operation queued after it always finds this task done and starts a new one.
        """
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            completed = False
            try:
                await self._run_batch(batch)
                completed = True
            except Exception as exc:  # noqa: BLE001 - reported to every caller below
                log.error("store_batch_failed", error=repr(exc))
            finally:
                # Whatever went wrong (even a cancellation), nobody may wait forever.
                if not completed:
                    for op in batch:
                        op.result, op.error = None, StoreUnavailable("commit failed")
                _settle_all(batch)

    async def _run_batch(self, batch: list[_Op]) -> None:
        conn, executor = self._conn, self._executor
        if conn is None or executor is None:
            for op in batch:
                op.result, op.error = None, StoreUnavailable("store is closed")
            return
        loop = asyncio.get_running_loop()
        records = [op for op in batch if op.delivery is not None]
        if conn.in_transaction:  # left open by a batch that was interrupted
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        try:
            # The statements are short and run on the event loop: handing them to a
            # thread cost more in GIL hand-offs than they cost here (measured both
            # per operation and per batch). Only what can block goes to the helper
            # thread: a BEGIN that must wait for another process's write, and the
            # COMMIT of a batch that wrote something (its fsync).
            await _begin(conn, executor, loop)
            changes = conn.total_changes
            if records:
                _isolated(conn, records, _record_many)
            for op in batch:
                if op.fn is not None:
                    _isolated(conn, [op], _run_one)
            if conn.total_changes == changes:
                conn.execute("COMMIT")  # read-only: no page to write, nothing to sync
            else:
                await loop.run_in_executor(executor, conn.execute, "COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            for op in batch:
                op.result, op.error = None, StoreUnavailable(f"commit failed: {exc}")

    # -- Store ------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    async def listen(self, wake: Callable[[], None]) -> None:
        # One process owns the file: intake wakes its own worker directly.
        return

    async def purge(self, *, before: float, batch: int = 1000) -> int:
        total = 0
        for table in ("deliveries", "events"):
            while True:
                # One batch per operation: intake's writes queue between the batches.
                deleted = await self._call(_purge_batch(table, before, batch))
                total += deleted
                if deleted < batch:
                    break
        return total

    async def record_delivery(self, delivery: Delivery, *, now: float) -> Recorded:
        result: Recorded = await self._call(None, delivery=delivery, now=now)
        return result

    async def record_feedback(
        self, delivery: Delivery, *, now: float, transient_limit: int
    ) -> FeedbackOutcome:
        feedback = delivery.feedback
        if feedback is None:
            raise ValueError("record_feedback needs a delivery with feedback")

        # One operation of the single writer: the look-up of our reply, the dedupe
        # inserts and the suppression are one transaction no other write interleaves with
        # (a sent id cannot be recorded between the look-up and REPLY_ON_ITS_WAY).
        def record(conn: sqlite3.Connection) -> FeedbackOutcome:
            ours = conn.execute(
                OUR_REPLY.replace("%s", "?"), (feedback.inbox_id, feedback.message_id)
            ).fetchone()
            if ours is None and feedback.thread_id is not None:
                on_its_way = conn.execute(
                    REPLY_ON_ITS_WAY.replace("%s", "?"), (feedback.inbox_id, feedback.thread_id)
                ).fetchone()
                if on_its_way is not None:
                    return FeedbackOutcome(Recorded.NOT_YET)
            if not _inserted_one(conn, _INSERT_DELIVERIES, _delivery_values(delivery, now)):
                return FeedbackOutcome(Recorded.DUPLICATE_DELIVERY)
            if not _inserted_one(conn, _INSERT_EVENTS, _event_values(delivery, now)):
                return FeedbackOutcome(Recorded.DUPLICATE_EVENT)
            addresses = () if ours is None else feedback_recipients(feedback, ours[0])
            if not addresses:
                return FeedbackOutcome(Recorded.IGNORED)
            suppressed = []
            for address in addresses:
                cause = _apply_feedback(conn, delivery, feedback, address, now, transient_limit)
                if cause is not None:
                    suppressed.append((address, cause))
            return FeedbackOutcome(Recorded.FEEDBACK, tuple(suppressed))

        return await self._call(record)

    async def add_suppression(
        self, *, inbox_id: str, address: str, reason: str | None, now: float
    ) -> bool:
        return await self._update(
            """INSERT INTO suppressions (inbox_id, address, cause, reason, created_at)
               VALUES (?, ?, 'manual', ?, ?) ON CONFLICT (inbox_id, address) DO NOTHING""",
            (inbox_id, address, reason, now),
        )

    async def remove_suppression(self, *, address: str, inbox_id: str | None, now: float) -> int:
        def remove(conn: sqlite3.Connection) -> int:
            removed = conn.execute(
                "DELETE FROM suppressions WHERE address = ? AND (? IS NULL OR inbox_id = ?)",
                (address, inbox_id, inbox_id),
            ).rowcount
            conn.execute(
                """UPDATE feedback SET cleared_at = ? WHERE address = ?
                   AND (? IS NULL OR inbox_id = ?) AND cleared_at IS NULL""",
                (now, address, inbox_id, inbox_id),
            )
            return int(removed)

        return await self._call(remove)

    async def list_suppressions(self) -> list[Suppression]:
        def listing(conn: sqlite3.Connection) -> list[Suppression]:
            rows = conn.execute(LIST_SUPPRESSIONS).fetchall()
            return [suppression_from_row(row) for row in rows]

        return await self._read(listing)

    async def record_swept(
        self,
        inbox_id: str,
        message_id: str,
        thread_id: str,
        message_json: str,
        event_type: str,
        now: float,
    ) -> bool:
        params = (
            inbox_id,
            message_id,
            thread_id,
            sweep_event_id(message_id),
            event_type,
            message_json,
            now,
            now,
            now,
        )
        # One operation of the single writer: it and any intake batch are serialised,
        # and the unique key decides which of them creates the job.
        return await self._call(lambda conn: conn.execute(_INSERT_SWEPT, params).rowcount == 1)

    async def get_marks(self) -> dict[str, float]:
        def marks(conn: sqlite3.Connection) -> dict[str, float]:
            rows = conn.execute("SELECT inbox_id, mark FROM sweep_marks").fetchall()
            return {inbox_id: float(mark) for inbox_id, mark in rows}

        return await self._call(marks)

    async def ensure_mark(self, inbox_id: str, now: float) -> float:
        return await self._mark(_ENSURE_MARK, (inbox_id, now, now))

    async def note_sweep(self, inbox_id: str, *, at: float, findings: dict[str, int]) -> None:
        params = (at, json.dumps(findings, sort_keys=True), inbox_id)
        await self._call(
            lambda conn: conn.execute(
                "UPDATE sweep_marks SET swept_at = ?, findings = ? WHERE inbox_id = ?", params
            )
        )

    async def sweep_states(self) -> list[InboxSweep]:
        def states(conn: sqlite3.Connection) -> list[InboxSweep]:
            rows = conn.execute(SWEEP_STATES).fetchall()
            return [inbox_sweep(row) for row in rows]

        return await self._call(states)

    async def set_mark(self, inbox_id: str, at: float, now: float) -> float:
        return await self._mark(_SET_MARK, (inbox_id, at, now))

    async def _mark(self, sql: str, params: tuple[Any, ...]) -> float:
        def mark(conn: sqlite3.Connection) -> float:
            row = conn.execute(sql, params).fetchone()
            assert row is not None  # an upsert always returns its row
            return float(row[0])

        return await self._call(mark)

    async def try_sweep_lease(self, owner: str, now: float, ttl: float) -> bool:
        params = (SWEEP_LEASE, owner, now + ttl, now)
        return await self._call(
            lambda conn: conn.execute(_TAKE_LEASE, params).fetchone() is not None
        )

    async def release_sweep_lease(self, owner: str) -> bool:
        return await self._update(
            "DELETE FROM leases WHERE name = ? AND owner = ?", (SWEEP_LEASE, owner)
        )

    async def claim(self, *, owner: str, now: float, lease: float, limit: int) -> list[Job]:
        # Two LIMITed scans, one per index, instead of one scan with an OR: SQLite
        # cannot use an index for the OR and would sort every due job (milliseconds
        # per claim with a backlog of thousands, holding up every batched commit).
        def claim(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                f"""UPDATE jobs SET state = 'running', lease_owner = ?, lease_until = ?,
                       attempts = attempts + 1, updated_at = ?
                    WHERE id IN (
                        SELECT id FROM (
                            SELECT * FROM (
                                SELECT id, run_after AS due FROM jobs
                                WHERE state = 'pending' AND run_after <= ?
                                ORDER BY run_after, id LIMIT ?)
                            UNION ALL
                            SELECT * FROM (
                                SELECT id, lease_until AS due FROM jobs
                                WHERE state = 'running' AND lease_until <= ?
                                ORDER BY lease_until, id LIMIT ?)
                            UNION ALL
                            SELECT * FROM (
                                SELECT id, run_after AS due FROM jobs
                                WHERE state = 'drafted' AND run_after <= ?
                                ORDER BY run_after, id LIMIT ?))
                        ORDER BY due, id LIMIT ?)
                    RETURNING {JOB_COLUMNS}""",  # noqa: S608 - constant column list
                (owner, now + lease, now, now, limit, now, limit, now, limit, limit),
            ).fetchall()
            return sorted((job_from_row(row) for row in rows), key=lambda job: job.id)

        return await self._call(claim)

    async def save_reply(
        self, job_id: int, *, owner: str, reply: PreparedReply, now: float
    ) -> bool:
        return await self._update(
            """UPDATE jobs SET reply = coalesce(reply, ?),
                   first_send_at = coalesce(first_send_at, ?), updated_at = ?
               WHERE id = ? AND lease_owner = ? AND state = 'running'""",
            (reply.to_json(), now, now, job_id, owner),
        )

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
        # One operation of the single writer, inside its write transaction (BEGIN
        # IMMEDIATE also keeps out other processes on the file): nothing can come between
        # the ledger read and the insert.
        def reserve(conn: sqlite3.Connection) -> Decision | None:
            row = conn.execute(
                """SELECT inbox_id, EXISTS (SELECT 1 FROM replies WHERE job_id = jobs.id)
                   FROM jobs WHERE id = ? AND lease_owner = ? AND state = 'running'""",
                (job_id, owner),
            ).fetchone()
            if row is None:
                return None
            inbox_id, own = row
            if own:
                return Decision(reply=True, reason="ok", detail="reserved before")
            decision = check_limits(
                policy,
                _history(conn, inbox_id, thread_id, sender, exclude_job=job_id),
                now=datetime.fromtimestamp(now, UTC),
            )
            if decision.reply:
                conn.execute(
                    """INSERT INTO replies (job_id, inbox_id, thread_id, sender, sent_at, state)
                       VALUES (?, ?, ?, ?, ?, 'reserved')""",
                    (job_id, inbox_id, thread_id, sender.lower(), now),
                )
            return decision

        return await self._call(reserve)

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
        def mark(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                """UPDATE jobs SET sent_message_id = ?, updated_at = ?
                   WHERE id = ? AND lease_owner = ? AND state = 'running'
                   RETURNING inbox_id""",
                (sent_message_id, now, job_id, owner),
            )
            row = cursor.fetchone()
            if row is None:
                return False
            conn.execute(_CONFIRM, (job_id, row[0], thread_id, sender.lower(), now))
            return True

        return await self._call(mark)

    async def finish(
        self, job_id: int, *, owner: str, state: JobState, reason: str, now: float
    ) -> bool:
        if state not in FINAL_STATES:
            raise ValueError(f"{state} is not a final state")

        def finish(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                """UPDATE jobs SET state = ?, reason = ?, lease_owner = NULL,
                       lease_until = NULL, updated_at = ?
                   WHERE id = ? AND lease_owner = ? AND state = 'running'
                   RETURNING reply IS NULL""",
                (state.value, reason, now, job_id, owner),
            ).fetchone()
            if row is None:
                return False
            if (state is not JobState.DONE and row[0]) or state is JobState.DISCARDED:
                # Nothing was sent and nothing will be: give the place back.
                conn.execute(
                    "DELETE FROM replies WHERE job_id = ? AND state = 'reserved'", (job_id,)
                )
            return True

        return await self._call(finish)

    async def retry(
        self, job_id: int, *, owner: str, run_after: float, error: str, now: float
    ) -> bool:
        return await self._update(
            """UPDATE jobs SET state = 'pending', run_after = ?, last_error = ?,
                   reason = CASE WHEN reason = ? THEN NULL ELSE reason END,
                   lease_owner = NULL, lease_until = NULL, updated_at = ?
               WHERE id = ? AND lease_owner = ? AND state = 'running'""",
            (run_after, error, GRACE_PERIOD, now, job_id, owner),
        )

    async def defer(self, job_id: int, *, owner: str, run_after: float, now: float) -> bool:
        return await self._update(
            """UPDATE jobs SET state = 'pending', run_after = ?, reason = ?,
                   attempts = max(attempts - 1, 0), lease_owner = NULL, lease_until = NULL,
                   updated_at = ?
               WHERE id = ? AND lease_owner = ? AND state = 'running'""",
            (run_after, GRACE_PERIOD, now, job_id, owner),
        )

    async def own_replies(self, *, inbox_id: str, thread_id: str) -> OwnReplies:
        def own(conn: sqlite3.Connection) -> OwnReplies:
            return own_replies(conn.execute(_OWN_REPLIES, (inbox_id, thread_id)).fetchall())

        return await self._read(own)

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
        return await self._update(
            _AWAIT_DRAFT, (draft_id, seen_hint, now, check_at, seen_hint, now, job_id, owner)
        )

    async def note_sent(self, *, inbox_id: str, thread_id: str, message_id: str, now: float) -> int:
        def note(conn: sqlite3.Connection) -> int:
            drafts = conn.execute(
                _NOTE_SENT, (message_id, now, now, inbox_id, thread_id, NOTE_SENT_LIMIT)
            )
            waiting = conn.execute(
                _WAKE_WAITING, (now, now, inbox_id, thread_id, now, NOTE_SENT_LIMIT)
            )
            conn.execute(_HINT_PREPARING, (message_id, inbox_id, thread_id, NOTE_SENT_LIMIT))
            return drafts.rowcount + waiting.rowcount

        return await self._call(note)

    async def release(self, *, owner: str, now: float) -> int:
        def release(conn: sqlite3.Connection) -> int:
            return conn.execute(
                """UPDATE jobs SET state = 'pending', attempts = max(attempts - 1, 0),
                       lease_owner = NULL, lease_until = NULL, updated_at = ?
                   WHERE lease_owner = ? AND state = 'running'""",
                (now, owner),
            ).rowcount

        return await self._call(release)

    async def next_due(self) -> float | None:
        def next_due(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                """SELECT min(t) FROM (
                       SELECT min(run_after) AS t FROM jobs WHERE state IN ('pending', 'drafted')
                       UNION ALL
                       SELECT min(lease_until) FROM jobs WHERE state = 'running')"""
            ).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._call(next_due)

    async def history(
        self, *, inbox_id: str, thread_id: str, sender: str, exclude_job: int | None = None
    ) -> History:
        return await self._call(
            lambda conn: _history(conn, inbox_id, thread_id, sender, exclude_job=exclude_job)
        )

    async def stats(self, *, now: float) -> QueueStats:
        def stats(conn: sqlite3.Connection) -> QueueStats:
            counts = dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state"))
            oldest, waiting = conn.execute(
                _UNFINISHED, (GRACE_PERIOD, GRACE_PERIOD, now)
            ).fetchone()
            suppressions = dict(
                conn.execute("SELECT cause, count(*) FROM suppressions GROUP BY cause")
            )
            return QueueStats(
                by_state={state.value: int(counts.get(state.value, 0)) for state in JobState},
                oldest_pending_created_at=oldest,
                suppressions={cause: int(count) for cause, count in suppressions.items()},
                waiting=int(waiting or 0),
            )

        return await self._read(stats)

    async def get_job(self, inbox_id: str, message_id: str) -> Job | None:
        def get(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE inbox_id = ? AND message_id = ?",  # noqa: S608
                (inbox_id, message_id),
            ).fetchone()
            return None if row is None else job_from_row(row)

        return await self._read(get)

    async def list_jobs(self, *, states: tuple[JobState, ...], limit: int) -> list[JobSummary]:
        marks = ", ".join("?" for _ in states)

        def list_jobs(conn: sqlite3.Connection) -> list[JobSummary]:
            rows = conn.execute(
                f"""SELECT {SUMMARY_COLUMNS}
                    FROM jobs WHERE state IN ({marks})
                    ORDER BY updated_at DESC, id DESC LIMIT ?""",  # noqa: S608 - placeholders only
                (*[s.value for s in states], limit),
            ).fetchall()
            return [summary_from_row(row) for row in rows]

        return await self._read(list_jobs)

    async def requeue(
        self, *, message_id: str | None, dead: bool, now: float, not_sent_before: float
    ) -> int:
        if message_id is None and not dead:
            return 0

        def requeue(conn: sqlite3.Connection) -> int:
            return conn.execute(
                """UPDATE jobs SET state = 'pending', run_after = ?, attempts = 0,
                       reason = NULL, lease_owner = NULL, lease_until = NULL, updated_at = ?
                   WHERE state = 'dead'
                     AND (? IS NULL OR message_id = ?)
                     AND (first_send_at IS NULL OR first_send_at >= ?)""",
                (now, now, message_id, message_id, not_sent_before),
            ).rowcount

        return await self._call(requeue)

    async def _update(self, sql: str, params: tuple[Any, ...]) -> bool:
        return await self._call(lambda conn: conn.execute(sql, params).rowcount == 1)


#: ``stats``: when the oldest unfinished job fell due (a job waiting out its grace period
#: falls due at its ``run_after``), and how many wait so, their delay not yet over.
_UNFINISHED = """SELECT min(CASE WHEN reason = ? THEN run_after ELSE created_at END),
        sum(state = 'pending' AND reason = ? AND run_after > ?)
    FROM jobs WHERE state IN ('pending', 'running')"""

#: ``own_replies``: through the ledger's thread index, the jobs whose reply is stored.
_OWN_REPLIES = """SELECT jobs.message_id, jobs.sent_message_id
    FROM replies JOIN jobs ON jobs.id = replies.job_id
    WHERE replies.inbox_id = ? AND replies.thread_id = ? AND jobs.reply IS NOT NULL"""

#: ``await_draft``: the job waits in ``drafted`` until its check, or at once when a
#: ``message.sent`` hint came that the attempt did not see (the seen one is cleared).
_AWAIT_DRAFT = """UPDATE jobs SET state = 'drafted', draft_id = ?,
        run_after = CASE WHEN sent_hint IS NOT NULL AND sent_hint IS NOT ? THEN ? ELSE ? END,
        sent_hint = CASE WHEN sent_hint IS ? THEN NULL ELSE sent_hint END,
        attempts = 0, lease_owner = NULL, lease_until = NULL, updated_at = ?
    WHERE id = ? AND lease_owner = ? AND state = 'running'"""

#: ``note_sent``: hint the thread's jobs whose draft awaits review, and wake them (at
#: most ``NOTE_SENT_LIMIT``, the oldest first).
_NOTE_SENT = """UPDATE jobs SET sent_hint = ?, run_after = ?, updated_at = ?
    WHERE id IN (
        SELECT id FROM jobs
        WHERE inbox_id = ? AND thread_id = ? AND draft_id IS NOT NULL
          AND state IN ('drafted', 'running')
        ORDER BY id LIMIT ?)"""

#: ``note_sent``: hint the thread's jobs whose reply is stored and whose draft may be
#: being created now (no id recorded yet): ``await_draft`` then makes them due at once.
#: Not counted: a running send-mode job is hinted too, harmlessly, and its own reply's
#: event stays ``ignored``.
_HINT_PREPARING = """UPDATE jobs SET sent_hint = ?
    WHERE id IN (
        SELECT id FROM jobs
        WHERE inbox_id = ? AND thread_id = ? AND state = 'running' AND draft_id IS NULL
          AND reply IS NOT NULL AND sent_message_id IS NULL
        ORDER BY id LIMIT ?)"""

#: ``note_sent``: the jobs of the thread waiting out a grace period are due now (the
#: reason is written out so that the partial index ``jobs_waiting`` serves it; at most
#: ``NOTE_SENT_LIMIT``, the oldest first).
_WAKE_WAITING = """UPDATE jobs SET run_after = ?, updated_at = ?
    WHERE id IN (
        SELECT id FROM jobs
        WHERE inbox_id = ? AND thread_id = ? AND state = 'pending'
          AND reason = 'grace_period' AND run_after > ?
        ORDER BY id LIMIT ?)"""

#: ``record_swept``: the job alone (no delivery or event row), deduplicated like intake's.
_INSERT_SWEPT = """INSERT INTO jobs (inbox_id, message_id, thread_id, event_id, event_type,
        message_json, state, attempts, run_after, created_at, updated_at, source)
    VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, 'sweep')
    ON CONFLICT (inbox_id, message_id) DO NOTHING"""

#: ``ensure_mark``: insert ``now`` unless there is a mark; either way return the mark
#: (the no-op update makes the upsert return the existing row).
_ENSURE_MARK = """INSERT INTO sweep_marks (inbox_id, mark, updated_at) VALUES (?, ?, ?)
    ON CONFLICT (inbox_id) DO UPDATE SET mark = sweep_marks.mark
    RETURNING mark"""

#: ``set_mark``: the greater of the stored mark and the new one.
_SET_MARK = """INSERT INTO sweep_marks (inbox_id, mark, updated_at) VALUES (?, ?, ?)
    ON CONFLICT (inbox_id) DO UPDATE SET mark = max(sweep_marks.mark, excluded.mark),
        updated_at = excluded.updated_at
    RETURNING mark"""

#: ``try_sweep_lease``: take the lease if it is free or ran out, renew it if it is the
#: caller's; a row comes back only if the caller holds it now. Parameters: name, owner,
#: until, now.
_TAKE_LEASE = """INSERT INTO leases (name, owner, lease_until) VALUES (?1, ?2, ?3)
    ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
    WHERE leases.owner = excluded.owner OR leases.lease_until <= ?4
    RETURNING owner"""

#: ``mark_sent``'s ledger write: the job's reservation becomes its sent reply, timed at
#: the send; a job without one (reserved before reservations existed) gets its row.
_CONFIRM = """INSERT INTO replies (job_id, inbox_id, thread_id, sender, sent_at, state)
    VALUES (?, ?, ?, ?, ?, 'sent')
    ON CONFLICT (job_id) DO UPDATE SET state = 'sent', sent_at = excluded.sent_at
    WHERE replies.state = 'reserved'"""


def _history(
    conn: sqlite3.Connection,
    inbox_id: str,
    thread_id: str,
    sender: str,
    *,
    exclude_job: int | None,
) -> History:
    """The ledger for one thread and one sender of an inbox: sent and reserved replies,
    those of ``exclude_job`` left out."""
    exclude = -1 if exclude_job is None else exclude_job
    in_thread = conn.execute(
        "SELECT count(*) FROM replies WHERE inbox_id = ? AND thread_id = ? AND job_id != ?",
        (inbox_id, thread_id, exclude),
    ).fetchone()[0]
    last = conn.execute(
        "SELECT max(sent_at) FROM replies WHERE inbox_id = ? AND sender = ? AND job_id != ?",
        (inbox_id, sender.lower(), exclude),
    ).fetchone()[0]
    entry = conn.execute(SUPPRESSED.replace("%s", "?"), (sender.lower(), inbox_id)).fetchone()
    return History(
        replies_in_thread=int(in_thread),
        last_reply_to_sender_at=None if last is None else datetime.fromtimestamp(last, UTC),
        suppressed=None if entry is None else suppressed_detail(entry[0], entry[1]),
    )


def _inserted_one(conn: sqlite3.Connection, sql: str, values: tuple[Any, ...]) -> bool:
    """Insert one row with a multi-row ``INSERT ... ON CONFLICT DO NOTHING``; True if new."""
    return bool(conn.execute(sql.format(_values(1, len(values))), values).rowcount == 1)


def _delivery_values(d: Delivery, now: float) -> tuple[Any, ...]:
    return (d.svix_id, d.event_id, now)


def _event_values(d: Delivery, now: float) -> tuple[Any, ...]:
    return (d.event_id, d.event_type, now)


def _apply_feedback(
    conn: sqlite3.Connection,
    delivery: Delivery,
    feedback: Feedback,
    address: str,
    now: float,
    transient_limit: int,
) -> Cause | None:
    """Record one recipient's feedback and suppress it if the rules say so; the cause
    when this suppressed the address now, else None."""
    new = conn.execute(
        INSERT_FEEDBACK.replace("%s", "?"), feedback_values(delivery, feedback, address, now)
    ).rowcount
    if not new:
        return None  # this bounce or complaint of this reply is known: nothing changes
    transient = conn.execute(
        COUNT_TRANSIENT.replace("%s", "?"), transient_values(feedback, address, now)
    ).fetchone()[0]
    cause = suppression_cause(feedback.kind, transient_bounces=transient, limit=transient_limit)
    if cause is None:
        return None
    added = conn.execute(
        INSERT_SUPPRESSION.replace("%s", "?"),
        suppression_values(delivery, feedback, address, cause, now),
    ).rowcount
    return cause if added else None


def _enable_wal(conn: sqlite3.Connection, *, patience: float = 10.0) -> None:
    """Switch to WAL, retrying while another process does the same on a new file.

    Changing the journal mode needs an exclusive lock, and SQLite answers "database is
    locked" at once, without the busy timeout, when two connections try together (two
    replicas, or ``autoreply migrate`` starting next to ``serve``). Once the file is in
    WAL mode it stays so, and this returns at the first attempt.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


async def _begin(
    conn: sqlite3.Connection, executor: ThreadPoolExecutor, loop: asyncio.AbstractEventLoop
) -> None:
    """Take the write lock: at once, on the loop, when it is free (always, unless another
    process is writing); else on the helper thread, waiting up to ``BUSY_TIMEOUT_MS``."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
            raise
        await loop.run_in_executor(executor, _begin_waiting, conn)


def _begin_waiting(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        conn.execute("PRAGMA busy_timeout=0")


def _in_snapshot(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.execute("COMMIT")


def _settle_all(ops: list[_Op]) -> None:
    for op in ops:
        if op.future.cancelled():
            continue
        if op.error is not None:
            op.future.set_exception(op.error)
        else:
            op.future.set_result(op.result)


def _isolated(
    conn: sqlite3.Connection, ops: list[_Op], work: Callable[[sqlite3.Connection, list[_Op]], None]
) -> None:
    """Run ``work`` inside a savepoint: if it fails, it leaves no half-write and its
    operations get the error, while the rest of the batch commits."""
    conn.execute("SAVEPOINT op")
    try:
        work(conn, ops)
    except Exception as exc:  # noqa: BLE001 - handed back to the awaiting callers
        conn.execute("ROLLBACK TO op")
        error = StoreUnavailable(str(exc)) if isinstance(exc, sqlite3.Error) else exc
        for op in ops:
            op.result, op.error = None, error
    conn.execute("RELEASE op")


def _run_one(conn: sqlite3.Connection, ops: list[_Op]) -> None:
    [op] = ops
    assert op.fn is not None
    op.result = op.fn(conn)


def _values(rows: int, columns: int) -> str:
    row = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([row] * rows)


_INSERT_DELIVERIES = (
    "INSERT INTO deliveries (svix_id, event_id, received_at) VALUES {}"
    " ON CONFLICT (svix_id) DO NOTHING"
)
_INSERT_EVENTS = (
    "INSERT INTO events (event_id, event_type, received_at) VALUES {}"
    " ON CONFLICT (event_id) DO NOTHING"
)
_INSERT_JOBS = (
    "INSERT INTO jobs (inbox_id, message_id, thread_id, event_id, event_type, message_json,"
    " state, attempts, run_after, created_at, updated_at, source) VALUES {}"
    " ON CONFLICT (inbox_id, message_id) DO NOTHING"
)

_Item = tuple[_Op, Delivery]


def _delivery_row(op: _Op, d: Delivery) -> tuple[Any, ...]:
    return (d.svix_id, d.event_id, op.now)


def _event_row(op: _Op, d: Delivery) -> tuple[Any, ...]:
    return (d.event_id, d.event_type, op.now)


def _job_row(op: _Op, d: Delivery) -> tuple[Any, ...]:
    m = d.message
    assert m is not None
    return (
        m.inbox_id,
        m.message_id,
        m.thread_id,
        d.event_id,
        d.event_type,
        d.message_json,
        "pending",
        0,
        op.now,
        op.now,
        op.now,
        JobSource.WEBHOOK.value,
    )


def _has_job(d: Delivery) -> bool:
    return d.message is not None and d.message_json is not None


def _record_many(conn: sqlite3.Connection, ops: list[_Op]) -> None:
    """Record every delivery of the batch with three multi-row INSERTs.

    One statement per table for the whole batch, not three per delivery: per-statement
    overhead was the larger part of a delivery's cost. Nearly every delivery is new, so
    the batch is first written as if all were (``_record_all_new``); only a batch that
    held a duplicate is rolled back and written again to learn which ones were
    (``_record_each``).
    """
    items = [(op, op.delivery) for op in ops if op.delivery is not None]
    if not _record_all_new(conn, items):
        _record_each(conn, items)


def _record_all_new(conn: sqlite3.Connection, items: list[_Item]) -> bool:
    """Insert every row; True when every one was inserted (no key was taken before or
    twice in the batch), else roll back and return False.

    Counting inserted rows is cheaper than ``RETURNING`` them, which hands each row back
    through Python, and a full count says all there is to know: every delivery is new.
    """
    with_jobs = [(op, d) for op, d in items if _has_job(d)]
    conn.execute("SAVEPOINT all_new")
    complete = (
        _insert(conn, _INSERT_DELIVERIES, [_delivery_row(op, d) for op, d in items]) == len(items)
        and _insert(conn, _INSERT_EVENTS, [_event_row(op, d) for op, d in items]) == len(items)
        and _insert(conn, _INSERT_JOBS, [_job_row(op, d) for op, d in with_jobs]) == len(with_jobs)
    )
    if not complete:
        conn.execute("ROLLBACK TO all_new")
    conn.execute("RELEASE all_new")
    if not complete:
        return False
    for op, d in items:
        op.result = Recorded.ENQUEUED if _has_job(d) else Recorded.IGNORED
    return True


def _record_each(conn: sqlite3.Connection, items: list[_Item]) -> None:
    """Record a batch that holds duplicates, learning each delivery's outcome.

    ``RETURNING`` names the rows actually inserted; of several operations carrying the
    same key in one batch, the first one counts as new and the rest as duplicates.
    """
    new = _inserted(
        conn, _INSERT_DELIVERIES + " RETURNING svix_id", [_delivery_row(op, d) for op, d in items]
    )
    fresh = []
    for op, d in items:
        if _take(new, d.svix_id):
            fresh.append((op, d))
        else:
            op.result = Recorded.DUPLICATE_DELIVERY
    new = _inserted(
        conn, _INSERT_EVENTS + " RETURNING event_id", [_event_row(op, d) for op, d in fresh]
    )
    jobs = []
    for op, d in fresh:
        if not _take(new, d.event_id):
            op.result = Recorded.DUPLICATE_EVENT
        elif not _has_job(d):
            op.result = Recorded.IGNORED
        else:
            jobs.append((op, d))
    new = _inserted(
        conn,
        _INSERT_JOBS + " RETURNING inbox_id || char(0) || message_id",
        [_job_row(op, d) for op, d in jobs],
    )
    for op, d in jobs:
        assert d.message is not None
        if _take(new, f"{d.message.inbox_id}\0{d.message.message_id}"):
            op.result = Recorded.ENQUEUED
        else:
            op.result = Recorded.DUPLICATE_MESSAGE


def _take(keys: set[str], key: str) -> bool:
    """Whether ``key`` was inserted and not yet claimed by an earlier operation."""
    if key in keys:
        keys.discard(key)
        return True
    return False


def _insert(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> int:
    """Run a multi-row ``INSERT``; return how many rows it inserted."""
    if not rows:
        return 0
    statement = sql.format(_values(len(rows), len(rows[0])))
    return conn.execute(statement, [value for row in rows for value in row]).rowcount


def _inserted(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> set[str]:
    """Run a multi-row ``INSERT ... RETURNING key``; return the keys it inserted."""
    if not rows:
        return set()
    statement = sql.format(_values(len(rows), len(rows[0])))
    params = [value for row in rows for value in row]
    return {row[0] for row in conn.execute(statement, params)}


def _purge_batch(table: str, before: float, batch: int) -> Callable[[sqlite3.Connection], int]:
    """Delete up to ``batch`` rows of ``table`` received before ``before``."""
    sql = (
        f"DELETE FROM {table} WHERE rowid IN"  # noqa: S608 - table is one of two constants
        f" (SELECT rowid FROM {table} WHERE received_at < ? LIMIT ?)"
    )
    return lambda conn: conn.execute(sql, (before, batch)).rowcount
