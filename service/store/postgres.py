"""PostgreSQL store: several replicas share deduplication, the job queue and the reply ledger.

Why it stays exactly-once across replicas:

* **Dedupe by constraints.** Deliveries, events and jobs have unique keys; intake inserts
  with ``ON CONFLICT DO NOTHING`` in one statement (data-modifying CTEs), never reads
  first. Two replicas receiving the same event at the same moment race in the database,
  and exactly one insert wins; the other waits for its commit and reports a duplicate.
* **Claims with SKIP LOCKED.** ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP
  LOCKED LIMIT n) RETURNING ...`` leases due jobs, and running jobs whose lease ran out,
  in one short statement; concurrent claimers skip each other's rows instead of waiting.
* **Fencing.** Every change to a claimed job names its ``lease_owner``; a worker whose
  lease was taken over changes nothing.
* **Short transactions.** Connections are in autocommit mode and every operation is one
  statement, so a transaction never outlives a round trip and no AgentMail call ever
  happens inside one (the worker alternates store calls and API calls). The one
  exception is ``reserve``: a few statements in one transaction under advisory locks on
  the sender and the thread, so the thread cap and the sender cooldown hold when
  replicas decide at once; it too ends before the worker calls AgentMail.

LISTEN/NOTIFY is only a wake-up hint: the enqueue statement notifies, each replica keeps
one listening connection (``listen``) that wakes its worker, and the worker polls anyway.

Failures: any psycopg error (connection refused, lost, pool timeout, ...) and any
operation that outlasts ``operation_timeout`` surface as ``StoreUnavailable``, so intake
answers 503 (Svix retries) and the worker backs off. The pool checks connections before
handing them out (see ``_check``) and replaces broken ones, so the store recovers by
itself when the database returns.

The schema goes into the first existing schema of the connection's ``search_path``
(``public`` by default); pick another with libpq's ``options`` parameter, e.g.
``postgresql://app@db/mail?options=-csearch_path%3Dautoreply``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from handlers.grace import OwnReplies
from handlers.policy import Decision, History, PolicyConfig, check_limits
from handlers.suppression import Cause, suppression_cause
from service.models import (
    FINAL_STATES,
    Delivery,
    Feedback,
    InboxSweep,
    Job,
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
Conn = psycopg.AsyncConnection[Any]
log = structlog.get_logger(__name__)

#: Seconds after its last operation during which a pooled connection is handed out
#: without a round trip to check it (see ``PostgresStore._check``).
RECHECK_AFTER = 1.0

#: The NOTIFY channel; the payload is the schema, so deployments sharing one database
#: in different schemas do not wake each other.
CHANNEL = "autoreply_jobs"

_RECORD_MESSAGE = f"""
WITH d AS (
    INSERT INTO deliveries (svix_id, event_id, received_at)
    VALUES (%(svix_id)s, %(event_id)s, %(now)s)
    ON CONFLICT (svix_id) DO NOTHING
    RETURNING 1
), e AS (
    INSERT INTO events (event_id, event_type, received_at)
    SELECT %(event_id)s, %(event_type)s, %(now)s WHERE EXISTS (SELECT FROM d)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
), j AS (
    INSERT INTO jobs (inbox_id, message_id, thread_id, event_id, event_type,
                      message_json, state, attempts, run_after, created_at, updated_at,
                      source)
    SELECT %(inbox_id)s, %(message_id)s, %(thread_id)s, %(event_id)s, %(event_type)s,
           %(message_json)s, 'pending', 0, %(now)s, %(now)s, %(now)s, 'webhook'
    WHERE EXISTS (SELECT FROM e)
    ON CONFLICT (inbox_id, message_id) DO NOTHING
    RETURNING pg_notify('{CHANNEL}', current_schema())
)
SELECT EXISTS (SELECT FROM d), EXISTS (SELECT FROM e), EXISTS (SELECT FROM j)
"""  # noqa: S608 - the channel is a constant

_RECORD_EVENT = """
WITH d AS (
    INSERT INTO deliveries (svix_id, event_id, received_at)
    VALUES (%(svix_id)s, %(event_id)s, %(now)s)
    ON CONFLICT (svix_id) DO NOTHING
    RETURNING 1
), e AS (
    INSERT INTO events (event_id, event_type, received_at)
    SELECT %(event_id)s, %(event_type)s, %(now)s WHERE EXISTS (SELECT FROM d)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT FROM d), EXISTS (SELECT FROM e), false
"""

#: ``record_swept``: the job alone (no delivery or event row), deduplicated like intake's
#: by the unique key, and a wake-up for the other replicas' workers when it is new.
_RECORD_SWEPT = f"""
WITH j AS (
    INSERT INTO jobs (inbox_id, message_id, thread_id, event_id, event_type,
                      message_json, state, attempts, run_after, created_at, updated_at,
                      source)
    VALUES (%(inbox_id)s, %(message_id)s, %(thread_id)s, %(event_id)s, %(event_type)s,
            %(message_json)s, 'pending', 0, %(now)s, %(now)s, %(now)s, 'sweep')
    ON CONFLICT (inbox_id, message_id) DO NOTHING
    RETURNING pg_notify('{CHANNEL}', current_schema())
)
SELECT EXISTS (SELECT FROM j)
"""  # noqa: S608 - the channel is a constant

#: ``ensure_mark``: insert ``now`` unless there is a mark; either way return the mark.
#: The no-op update (not DO NOTHING) makes a replica that lost the race wait for the
#: winner's row and return it: with DO NOTHING, a read in the same statement would not
#: see a row committed after the statement began.
_ENSURE_MARK = """
INSERT INTO sweep_marks (inbox_id, mark, updated_at) VALUES (%s, %s, %s)
ON CONFLICT (inbox_id) DO UPDATE SET mark = sweep_marks.mark
RETURNING mark
"""

#: ``set_mark``: the greater of the stored mark and the new one.
_SET_MARK = """
INSERT INTO sweep_marks (inbox_id, mark, updated_at) VALUES (%s, %s, %s)
ON CONFLICT (inbox_id) DO UPDATE SET mark = greatest(sweep_marks.mark, excluded.mark),
    updated_at = excluded.updated_at
RETURNING mark
"""

#: ``try_sweep_lease``: take the lease if it is free or ran out, renew it if it is the
#: caller's; a row comes back only if the caller holds it now. Concurrent callers are
#: serialised on the row: the loser re-checks the winner's committed row and gets none.
_TAKE_LEASE = """
INSERT INTO leases (name, owner, lease_until) VALUES (%(name)s, %(owner)s, %(until)s)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
WHERE leases.owner = excluded.owner OR leases.lease_until <= %(now)s
RETURNING owner
"""

#: Two locking scans, each walking its partial index in order and stopping after
#: ``limit`` rows, so a claim costs the same with ten jobs waiting or a hundred thousand:
#: running jobs whose lease ran out (rare: a worker died), then due pending jobs, oldest
#: first. The outer ``LIMIT`` reads the second scan only as far as needed, so no more
#: rows are locked than claimed. (One scan with ``OR`` would read and sort every due job.)
_CLAIM = f"""
WITH expired AS (
    SELECT id FROM jobs
    WHERE state = 'running' AND lease_until <= %(now)s
    ORDER BY lease_until
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), due AS (
    SELECT id FROM jobs
    WHERE state = 'pending' AND run_after <= %(now)s
    ORDER BY run_after, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), drafted AS (
    SELECT id FROM jobs
    WHERE state = 'drafted' AND run_after <= %(now)s
    ORDER BY run_after, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET state = 'running', lease_owner = %(owner)s, lease_until = %(until)s,
       attempts = attempts + 1, updated_at = %(now)s
WHERE id IN (
    SELECT id FROM expired UNION ALL SELECT id FROM due UNION ALL SELECT id FROM drafted
    LIMIT %(limit)s)
RETURNING {JOB_COLUMNS}
"""  # noqa: S608 - constant column list

#: The job's reservation becomes its sent reply, timed at the send; a job without one
#: (reserved before reservations existed) gets its ledger row here.
_MARK_SENT = """
WITH j AS (
    UPDATE jobs SET sent_message_id = %(sent)s, updated_at = %(now)s
    WHERE id = %(id)s AND lease_owner = %(owner)s AND state = 'running'
    RETURNING id, inbox_id
), r AS (
    INSERT INTO replies (job_id, inbox_id, thread_id, sender, sent_at, state)
    SELECT id, inbox_id, %(thread_id)s, %(sender)s, %(now)s, 'sent' FROM j
    ON CONFLICT (job_id) DO UPDATE SET state = 'sent', sent_at = excluded.sent_at
    WHERE replies.state = 'reserved'
)
SELECT count(*) FROM j
"""

#: A job that ends skipped or dead before its reply was stored gives its reservation
#: back (see ``Store.finish``).
_FINISH = """
WITH j AS (
    UPDATE jobs SET state = %(state)s, reason = %(reason)s, lease_owner = NULL,
           lease_until = NULL, updated_at = %(now)s
    WHERE id = %(id)s AND lease_owner = %(owner)s AND state = 'running'
    RETURNING id, reply IS NULL AS unsent
), r AS (
    DELETE FROM replies
    WHERE job_id IN (SELECT id FROM j WHERE unsent OR %(state)s = 'discarded')
      AND state = 'reserved' AND %(state)s <> 'done'
)
SELECT count(*) FROM j
"""

#: ``await_draft``: the job waits in ``drafted`` until its check, or at once when a
#: ``message.sent`` hint came that the attempt did not see (the seen one is cleared).
_AWAIT_DRAFT = """
UPDATE jobs SET state = 'drafted', draft_id = %(draft_id)s,
       run_after = CASE WHEN sent_hint IS NOT NULL AND sent_hint IS DISTINCT FROM %(seen)s::text
                        THEN %(now)s ELSE %(check_at)s END,
       sent_hint = CASE WHEN sent_hint IS NOT DISTINCT FROM %(seen)s::text
                        THEN NULL ELSE sent_hint END,
       attempts = 0, lease_owner = NULL, lease_until = NULL, updated_at = %(now)s
WHERE id = %(id)s AND lease_owner = %(owner)s AND state = 'running'
"""

#: ``note_sent``: hint the thread's jobs whose draft awaits review, and wake them (the
#: workers of every replica, like an enqueue); at most ``NOTE_SENT_LIMIT`` of each kind,
#: the oldest first. Jobs whose draft may be being created now (reply stored, no draft id
#: yet) are hinted too (``await_draft`` then makes them due at once), but not counted: a
#: running send-mode job is hinted as well, harmlessly, and its own reply's event stays
#: ``ignored``. The conditions are repeated outside the subqueries: a row another
#: transaction changed meanwhile is updated only if it still meets them.
_NOTE_SENT = f"""
WITH j AS (
    UPDATE jobs SET sent_hint = %(message_id)s, run_after = %(now)s, updated_at = %(now)s
    WHERE inbox_id = %(inbox_id)s AND thread_id = %(thread_id)s AND draft_id IS NOT NULL
      AND state IN ('drafted', 'running')
      AND id IN (
          SELECT id FROM jobs
          WHERE inbox_id = %(inbox_id)s AND thread_id = %(thread_id)s
            AND draft_id IS NOT NULL AND state IN ('drafted', 'running')
          ORDER BY id LIMIT %(limit)s)
    RETURNING id
), g AS (
    UPDATE jobs SET run_after = %(now)s, updated_at = %(now)s
    WHERE inbox_id = %(inbox_id)s AND thread_id = %(thread_id)s
      AND state = 'pending' AND reason = 'grace_period' AND run_after > %(now)s
      AND id IN (
          SELECT id FROM jobs
          WHERE inbox_id = %(inbox_id)s AND thread_id = %(thread_id)s
            AND state = 'pending' AND reason = 'grace_period' AND run_after > %(now)s
          ORDER BY id LIMIT %(limit)s)
    RETURNING id
), p AS (
    UPDATE jobs SET sent_hint = %(message_id)s
    WHERE inbox_id = %(inbox_id)s AND thread_id = %(thread_id)s AND state = 'running'
      AND draft_id IS NULL AND reply IS NOT NULL AND sent_message_id IS NULL
      AND id IN (
          SELECT id FROM jobs
          WHERE inbox_id = %(inbox_id)s AND thread_id = %(thread_id)s AND state = 'running'
            AND draft_id IS NULL AND reply IS NOT NULL AND sent_message_id IS NULL
          ORDER BY id LIMIT %(limit)s)
)
SELECT (SELECT count(*) FROM j) + (SELECT count(*) FROM g),
       (SELECT pg_notify('{CHANNEL}', current_schema())
        WHERE EXISTS (SELECT FROM j) OR EXISTS (SELECT FROM g))
"""  # noqa: S608 - a constant channel name

#: What ``reserve`` reads, once it holds the ledger locks: the job (only while leased to
#: the caller), whether it holds a reservation already, and the ledger of its thread and
#: sender without it. A statement of its own, so its snapshot is taken after the locks
#: were granted and includes every reservation committed before.
_LEDGER = """
SELECT j.inbox_id,
       EXISTS (SELECT FROM replies WHERE job_id = j.id),
       (SELECT count(*) FROM replies
        WHERE inbox_id = j.inbox_id AND thread_id = %(thread_id)s AND job_id <> j.id),
       (SELECT max(sent_at) FROM replies
        WHERE inbox_id = j.inbox_id AND sender = %(sender)s AND job_id <> j.id)
FROM jobs j
WHERE j.id = %(id)s AND j.lease_owner = %(owner)s AND j.state = 'running'
"""

#: ``purge`` deletes by key in batches; rows another replica is purging are skipped.
_PURGE = {
    table: (
        f"DELETE FROM {table} WHERE {key} IN ("  # noqa: S608 - constant names
        f"SELECT {key} FROM {table} WHERE received_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)"
    )
    for table, key in (("deliveries", "svix_id"), ("events", "event_id"))
}


class PostgresStore:
    """``Store`` on PostgreSQL, shared by any number of replicas (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        pool_timeout: float = 3.0,
        operation_timeout: float = 10.0,
        open_timeout: float = 10.0,
        listen_probe: float = 30.0,
    ) -> None:
        """``url`` is a libpq URL; the timeouts (seconds) bound every wait on the database.

        ``connect_timeout`` per connection attempt (unless the URL sets one),
        ``pool_timeout`` for a free pooled connection, ``operation_timeout`` for a whole
        operation, ``open_timeout`` for the pool's first connection at startup. The listener
        checks its connection after ``listen_probe`` seconds without a notification.
        """
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.pool_timeout = pool_timeout
        self.operation_timeout = operation_timeout
        self.open_timeout = open_timeout
        self.listen_probe = listen_probe
        self._conninfo = ""
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._abandoned: set[asyncio.Future[Any]] = set()
        #: When each pooled connection last completed an operation (see ``_check``).
        self._used: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._conninfo = _conninfo(self.url, self.connect_timeout)
            # One direct connection first: a database that is down or refuses us fails
            # startup at once with its reason, instead of after the pool's patience.
            async with await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True
            ) as conn:
                applied = await migrations.apply_postgres(conn)
        except (psycopg.Error, migrations.MigrationError) as exc:
            raise StoreUnavailable(f"cannot open PostgreSQL: {_first_line(exc)}") from exc
        if applied:
            log.info("migrations_applied", versions=applied)
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._conninfo,
            min_size=self.min_size,
            max_size=self.max_size,
            kwargs={"autocommit": True},
            open=False,
            check=self._check,
            timeout=self.pool_timeout,
            # Give up a failing reconnection early: the next request starts a fresh one,
            # so the pool is back within seconds of the database.
            reconnect_timeout=self.pool_timeout,
            name="autoreply",
        )
        try:
            await pool.open(wait=True, timeout=self.open_timeout)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreUnavailable(f"cannot open PostgreSQL: {_first_line(exc)}") from exc
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _run(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection; every database failure is StoreUnavailable.

        After ``operation_timeout`` the caller gets StoreUnavailable at once. The attempt
        itself is cancelled in the background: psycopg then asks the server to cancel the
        query, which can take seconds more when the server does not answer at all.
        """
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("store is not open")
        task = asyncio.ensure_future(self._on_connection(pool, fn))
        try:
            async with asyncio.timeout(self.operation_timeout):
                return await asyncio.shield(task)
        except TimeoutError:
            self._abandon(task)
            raise StoreUnavailable(
                f"no answer from PostgreSQL within {self.operation_timeout:g} s"
            ) from None
        except asyncio.CancelledError:
            self._abandon(task)
            raise

    async def _on_connection(
        self, pool: AsyncConnectionPool[Conn], fn: Callable[[Conn], Awaitable[T]]
    ) -> T:
        try:
            async with pool.connection() as conn:
                result = await fn(conn)
                self._used[conn] = time.monotonic()
                return result
        except psycopg.Error as exc:
            raise StoreUnavailable(_first_line(exc)) from exc

    async def _check(self, conn: Conn) -> None:
        """The pool's check before handing out a connection.

        A round trip (an empty query) unless the connection answered within the last
        ``RECHECK_AFTER`` seconds: under load that halves the round trips per operation.
        A connection that broke in that second fails its operation (StoreUnavailable,
        so intake answers 503 and Svix retries) and the pool replaces it.
        """
        if conn.broken:
            raise psycopg.OperationalError("connection is broken")
        if time.monotonic() - self._used.get(conn, -RECHECK_AFTER) >= RECHECK_AFTER:
            await AsyncConnectionPool.check_connection(conn)

    def _abandon(self, task: asyncio.Future[Any]) -> None:
        """Cancel ``task`` without waiting; keep a reference until it is done."""
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(_forget(self._abandoned))

    async def _one(self, sql: str, params: dict[str, Any] | tuple[Any, ...] = ()) -> Any:
        """The first column of the first row of one statement (None without a row)."""

        async def one(conn: Conn) -> Any:
            row = await (await conn.execute(sql, params)).fetchone()
            return None if row is None else row[0]

        return await self._run(one)

    async def _rowcount(self, sql: str, params: dict[str, Any] | tuple[Any, ...]) -> int:
        async def count(conn: Conn) -> int:
            return (await conn.execute(sql, params)).rowcount

        return await self._run(count)

    # -- Store ------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._one("SELECT 1")

    async def listen(self, wake: Callable[[], None]) -> None:
        failures = 0
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo or _conninfo(self.url, self.connect_timeout), autocommit=True
                )
                failures = 0
                async with conn:
                    await self._listen_on(conn, wake)
            except (psycopg.Error, TimeoutError) as exc:
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 10)) * random.uniform(0.5, 1.0)
                log.warning("listen_lost", error=_first_line(exc), retry_in_s=round(delay, 1))
                await asyncio.sleep(delay)

    async def _listen_on(self, conn: Conn, wake: Callable[[], None]) -> None:
        """Wake on each notification for this schema until the connection fails."""
        row = await (await conn.execute("SELECT current_schema()")).fetchone()
        schema = None if row is None else row[0]
        await conn.execute(f"LISTEN {CHANNEL}")
        log.info("listening", channel=CHANNEL, schema=schema)
        # Jobs may have been enqueued while nobody listened.
        wake()
        while True:
            async for notify in conn.notifies(timeout=self.listen_probe):
                if notify.payload == schema:
                    wake()
            # Quiet for a while: make sure the connection is still there.
            async with asyncio.timeout(self.pool_timeout):
                await conn.execute("SELECT 1")

    async def record_delivery(self, delivery: Delivery, *, now: float) -> Recorded:
        message = delivery.message
        params: dict[str, Any] = {
            "svix_id": delivery.svix_id,
            "event_id": delivery.event_id,
            "event_type": delivery.event_type,
            "now": now,
        }
        if message is None or delivery.message_json is None:
            sql = _RECORD_EVENT
        else:
            sql = _RECORD_MESSAGE
            params.update(
                inbox_id=message.inbox_id,
                message_id=message.message_id,
                thread_id=message.thread_id,
                message_json=delivery.message_json,
            )

        async def record(conn: Conn) -> tuple[bool, bool, bool]:
            row = await (await conn.execute(sql, params)).fetchone()
            assert row is not None
            return bool(row[0]), bool(row[1]), bool(row[2])

        new_delivery, new_event, new_job = await self._run(record)
        if not new_delivery:
            return Recorded.DUPLICATE_DELIVERY
        if not new_event:
            return Recorded.DUPLICATE_EVENT
        if sql is _RECORD_EVENT:
            return Recorded.IGNORED
        return Recorded.ENQUEUED if new_job else Recorded.DUPLICATE_MESSAGE

    async def record_feedback(
        self, delivery: Delivery, *, now: float, transient_limit: int
    ) -> FeedbackOutcome:
        """See ``Store.record_feedback``: one short transaction, under an advisory lock
        per recipient (taken in ascending key order, as ``reserve`` takes its locks), so
        replicas counting transient bounces of one address at once see each other's."""
        feedback = delivery.feedback
        if feedback is None:
            raise ValueError("record_feedback needs a delivery with feedback")
        params = {
            "svix_id": delivery.svix_id,
            "event_id": delivery.event_id,
            "event_type": delivery.event_type,
            "now": now,
        }

        async def record(conn: Conn) -> FeedbackOutcome:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                # On its way first, then ours: a sent id committed in between is seen by
                # the second read (the other order could miss it in both).
                on_its_way = None
                if feedback.thread_id is not None:
                    cursor = await conn.execute(
                        REPLY_ON_ITS_WAY, (feedback.inbox_id, feedback.thread_id)
                    )
                    on_its_way = await cursor.fetchone()
                cursor = await conn.execute(OUR_REPLY, (feedback.inbox_id, feedback.message_id))
                ours = await cursor.fetchone()
                if ours is None and on_its_way is not None:
                    return FeedbackOutcome(Recorded.NOT_YET)
                row = await (await conn.execute(_RECORD_EVENT, params)).fetchone()
                assert row is not None
                if not row[0]:
                    return FeedbackOutcome(Recorded.DUPLICATE_DELIVERY)
                if not row[1]:
                    return FeedbackOutcome(Recorded.DUPLICATE_EVENT)
                addresses = () if ours is None else feedback_recipients(feedback, ours[0])
                if not addresses:
                    return FeedbackOutcome(Recorded.IGNORED)
                keys = {_ledger_key("feedback", f"{feedback.inbox_id}\0{a}") for a in addresses}
                for key in sorted(keys):
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                suppressed = []
                for address in addresses:
                    cause = await _apply_feedback(
                        conn, delivery, feedback, address, now, transient_limit
                    )
                    if cause is not None:
                        suppressed.append((address, cause))
                return FeedbackOutcome(Recorded.FEEDBACK, tuple(suppressed))

        return await self._run(record)

    async def add_suppression(
        self, *, inbox_id: str, address: str, reason: str | None, now: float
    ) -> bool:
        added = await self._rowcount(
            """INSERT INTO suppressions (inbox_id, address, cause, reason, created_at)
               VALUES (%s, %s, 'manual', %s, %s) ON CONFLICT (inbox_id, address) DO NOTHING""",
            (inbox_id, address, reason, now),
        )
        return added == 1

    async def remove_suppression(self, *, address: str, inbox_id: str | None, now: float) -> int:
        params = {"address": address, "inbox_id": inbox_id, "now": now}

        async def remove(conn: Conn) -> int:
            async with conn.transaction():
                removed = (
                    await conn.execute(
                        """DELETE FROM suppressions WHERE address = %(address)s
                           AND (%(inbox_id)s::text IS NULL OR inbox_id = %(inbox_id)s)""",
                        params,
                    )
                ).rowcount
                await conn.execute(
                    """UPDATE feedback SET cleared_at = %(now)s WHERE address = %(address)s
                       AND (%(inbox_id)s::text IS NULL OR inbox_id = %(inbox_id)s)
                       AND cleared_at IS NULL""",
                    params,
                )
                return removed

        return await self._run(remove)

    async def list_suppressions(self) -> list[Suppression]:
        async def listing(conn: Conn) -> list[Suppression]:
            cursor = await conn.execute(LIST_SUPPRESSIONS)
            return [suppression_from_row(row) for row in await cursor.fetchall()]

        return await self._run(listing)

    async def record_swept(
        self,
        inbox_id: str,
        message_id: str,
        thread_id: str,
        message_json: str,
        event_type: str,
        now: float,
    ) -> bool:
        params = {
            "inbox_id": inbox_id,
            "message_id": message_id,
            "thread_id": thread_id,
            "event_id": sweep_event_id(message_id),
            "event_type": event_type,
            "message_json": message_json,
            "now": now,
        }
        return bool(await self._one(_RECORD_SWEPT, params))

    async def get_marks(self) -> dict[str, float]:
        async def marks(conn: Conn) -> dict[str, float]:
            cursor = await conn.execute("SELECT inbox_id, mark FROM sweep_marks")
            return {inbox_id: float(mark) for inbox_id, mark in await cursor.fetchall()}

        return await self._run(marks)

    async def ensure_mark(self, inbox_id: str, now: float) -> float:
        return float(await self._one(_ENSURE_MARK, (inbox_id, now, now)))

    async def note_sweep(self, inbox_id: str, *, at: float, findings: dict[str, int]) -> None:
        await self._rowcount(
            "UPDATE sweep_marks SET swept_at = %s, findings = %s WHERE inbox_id = %s",
            (at, json.dumps(findings, sort_keys=True), inbox_id),
        )

    async def sweep_states(self) -> list[InboxSweep]:
        async def states(conn: Conn) -> list[InboxSweep]:
            cursor = await conn.execute(SWEEP_STATES)
            return [inbox_sweep(row) for row in await cursor.fetchall()]

        return await self._run(states)

    async def set_mark(self, inbox_id: str, at: float, now: float) -> float:
        return float(await self._one(_SET_MARK, (inbox_id, at, now)))

    async def try_sweep_lease(self, owner: str, now: float, ttl: float) -> bool:
        params = {"name": SWEEP_LEASE, "owner": owner, "until": now + ttl, "now": now}
        return await self._one(_TAKE_LEASE, params) is not None

    async def release_sweep_lease(self, owner: str) -> bool:
        deleted = await self._rowcount(
            "DELETE FROM leases WHERE name = %s AND owner = %s", (SWEEP_LEASE, owner)
        )
        return deleted == 1

    async def claim(self, *, owner: str, now: float, lease: float, limit: int) -> list[Job]:
        params = {"owner": owner, "until": now + lease, "now": now, "limit": limit}

        async def claim(conn: Conn) -> list[Job]:
            rows = await (await conn.execute(_CLAIM, params)).fetchall()
            return sorted((job_from_row(row) for row in rows), key=lambda job: job.id)

        return await self._run(claim)

    async def save_reply(
        self, job_id: int, *, owner: str, reply: PreparedReply, now: float
    ) -> bool:
        return (
            await self._rowcount(
                """UPDATE jobs SET reply = coalesce(reply, %s),
                       first_send_at = coalesce(first_send_at, %s), updated_at = %s
                   WHERE id = %s AND lease_owner = %s AND state = 'running'""",
                (reply.to_json(), now, now, job_id, owner),
            )
            == 1
        )

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
        params = {
            "sent": sent_message_id,
            "now": now,
            "id": job_id,
            "owner": owner,
            "thread_id": thread_id,
            "sender": sender.lower(),
        }
        return bool(await self._one(_MARK_SENT, params))

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
        """See ``Store.reserve``: one short transaction under two advisory locks.

        Replicas reserving for one sender or one thread at once are serialised by
        transaction-level advisory locks on a hash of the sender's address and of the
        thread id (coarser than per inbox, which is still sound: any two reservations
        that could conflict share a lock). Both are taken in ascending key order, so
        two transactions never wait for each other crosswise. The ledger is then read
        in a statement of its own, whose snapshot includes every reservation committed
        before the locks were granted, and the reservation inserted before the commit
        releases them. Nothing else waits on these locks: intake, claims and the rest
        of the job never take them. The transaction is READ COMMITTED whatever the
        database's default: under REPEATABLE READ its snapshot would be taken before
        the wait, and two jobs of one sender could both reserve.
        """
        sender = sender.lower()
        params = {"id": job_id, "owner": owner, "thread_id": thread_id, "sender": sender}

        async def reserve(conn: Conn) -> Decision | None:
            async with conn.transaction():
                # The read after the locks must see what committed while they were
                # awaited: READ COMMITTED, whatever the server's or the URL's default.
                await conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                for key in sorted(
                    {_ledger_key("sender", sender), _ledger_key("thread", thread_id)}
                ):
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                row = await (await conn.execute(_LEDGER, params)).fetchone()
                if row is None:
                    return None
                inbox_id, own, in_thread, last = row
                if own:
                    return Decision(reply=True, reason="ok", detail="reserved before")
                history = History(
                    replies_in_thread=int(in_thread),
                    last_reply_to_sender_at=(
                        None if last is None else datetime.fromtimestamp(last, UTC)
                    ),
                )
                decision = check_limits(policy, history, now=datetime.fromtimestamp(now, UTC))
                if decision.reply:
                    await conn.execute(
                        """INSERT INTO replies
                               (job_id, inbox_id, thread_id, sender, sent_at, state)
                           VALUES (%s, %s, %s, %s, %s, 'reserved')""",
                        (job_id, inbox_id, thread_id, sender, now),
                    )
                return decision

        return await self._run(reserve)

    async def finish(
        self, job_id: int, *, owner: str, state: JobState, reason: str, now: float
    ) -> bool:
        if state not in FINAL_STATES:
            raise ValueError(f"{state} is not a final state")
        params = {"state": state.value, "reason": reason, "now": now, "id": job_id, "owner": owner}
        return bool(await self._one(_FINISH, params))

    async def retry(
        self, job_id: int, *, owner: str, run_after: float, error: str, now: float
    ) -> bool:
        return (
            await self._rowcount(
                """UPDATE jobs SET state = 'pending', run_after = %s, last_error = %s,
                       reason = CASE WHEN reason = %s THEN NULL ELSE reason END,
                       lease_owner = NULL, lease_until = NULL, updated_at = %s
                   WHERE id = %s AND lease_owner = %s AND state = 'running'""",
                (run_after, error, GRACE_PERIOD, now, job_id, owner),
            )
            == 1
        )

    async def defer(self, job_id: int, *, owner: str, run_after: float, now: float) -> bool:
        return (
            await self._rowcount(
                """UPDATE jobs SET state = 'pending', run_after = %s, reason = %s,
                       attempts = greatest(attempts - 1, 0), lease_owner = NULL,
                       lease_until = NULL, updated_at = %s
                   WHERE id = %s AND lease_owner = %s AND state = 'running'""",
                (run_after, GRACE_PERIOD, now, job_id, owner),
            )
            == 1
        )

    async def own_replies(self, *, inbox_id: str, thread_id: str) -> OwnReplies:
        async def own(conn: Conn) -> OwnReplies:
            cursor = await conn.execute(
                """SELECT jobs.message_id, jobs.sent_message_id
                   FROM replies JOIN jobs ON jobs.id = replies.job_id
                   WHERE replies.inbox_id = %s AND replies.thread_id = %s
                     AND jobs.reply IS NOT NULL""",
                (inbox_id, thread_id),
            )
            return own_replies(await cursor.fetchall())

        return await self._run(own)

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
        params = {
            "draft_id": draft_id,
            "seen": seen_hint,
            "now": now,
            "check_at": check_at,
            "id": job_id,
            "owner": owner,
        }
        return await self._rowcount(_AWAIT_DRAFT, params) == 1

    async def note_sent(self, *, inbox_id: str, thread_id: str, message_id: str, now: float) -> int:
        params = {
            "message_id": message_id,
            "now": now,
            "inbox_id": inbox_id,
            "thread_id": thread_id,
            "limit": NOTE_SENT_LIMIT,
        }
        return int(await self._one(_NOTE_SENT, params))

    async def release(self, *, owner: str, now: float) -> int:
        return await self._rowcount(
            """UPDATE jobs SET state = 'pending', attempts = greatest(attempts - 1, 0),
                   lease_owner = NULL, lease_until = NULL, updated_at = %s
               WHERE lease_owner = %s AND state = 'running'""",
            (now, owner),
        )

    async def next_due(self) -> float | None:
        due = await self._one(
            """SELECT least(
                   (SELECT min(run_after) FROM jobs WHERE state IN ('pending', 'drafted')),
                   (SELECT min(lease_until) FROM jobs WHERE state = 'running'))"""
        )
        return None if due is None else float(due)

    async def history(
        self, *, inbox_id: str, thread_id: str, sender: str, exclude_job: int | None = None
    ) -> History:
        exclude = -1 if exclude_job is None else exclude_job

        async def history(conn: Conn) -> History:
            cursor = await conn.execute(
                """SELECT
                       (SELECT count(*) FROM replies
                        WHERE inbox_id = %s AND thread_id = %s AND job_id <> %s),
                       (SELECT max(sent_at) FROM replies
                        WHERE inbox_id = %s AND sender = %s AND job_id <> %s)""",
                (inbox_id, thread_id, exclude, inbox_id, sender.lower(), exclude),
            )
            row = await cursor.fetchone()
            assert row is not None
            in_thread, last = row
            cursor = await conn.execute(SUPPRESSED, (sender.lower(), inbox_id))
            entry = await cursor.fetchone()
            return History(
                replies_in_thread=int(in_thread),
                last_reply_to_sender_at=None if last is None else datetime.fromtimestamp(last, UTC),
                suppressed=None if entry is None else suppressed_detail(entry[0], entry[1]),
            )

        return await self._run(history)

    async def stats(self, *, now: float) -> QueueStats:
        async def stats(conn: Conn) -> QueueStats:
            # A job waiting out its grace period falls due at its run_after, not at its
            # creation: a delay is not a backlog.
            cursor = await conn.execute(
                """SELECT state, count(*),
                       min(CASE WHEN reason = %s THEN run_after ELSE created_at END) FILTER
                       (WHERE state IN ('pending', 'running')),
                       count(*) FILTER
                       (WHERE state = 'pending' AND reason = %s AND run_after > %s)
                   FROM jobs GROUP BY state""",
                (GRACE_PERIOD, GRACE_PERIOD, now),
            )
            rows = await cursor.fetchall()
            counts = {state: int(count) for state, count, _, _ in rows}
            oldest = [first for _, _, first, _ in rows if first is not None]
            waiting = sum(int(count) for _, _, _, count in rows)
            cursor = await conn.execute("SELECT cause, count(*) FROM suppressions GROUP BY cause")
            suppressions = {cause: int(count) for cause, count in await cursor.fetchall()}
            return QueueStats(
                by_state={state.value: counts.get(state.value, 0) for state in JobState},
                oldest_pending_created_at=min(oldest) if oldest else None,
                suppressions=suppressions,
                waiting=waiting,
            )

        return await self._run(stats)

    async def get_job(self, inbox_id: str, message_id: str) -> Job | None:
        async def get(conn: Conn) -> Job | None:
            cursor = await conn.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE inbox_id = %s AND message_id = %s",  # noqa: S608
                (inbox_id, message_id),
            )
            row = await cursor.fetchone()
            return None if row is None else job_from_row(row)

        return await self._run(get)

    async def list_jobs(self, *, states: tuple[JobState, ...], limit: int) -> list[JobSummary]:
        async def list_jobs(conn: Conn) -> list[JobSummary]:
            cursor = await conn.execute(
                f"""SELECT {SUMMARY_COLUMNS}
                   FROM jobs WHERE state = ANY(%s)
                   ORDER BY updated_at DESC, id DESC LIMIT %s""",  # noqa: S608 - constants
                ([state.value for state in states], limit),
            )
            return [summary_from_row(row) for row in await cursor.fetchall()]

        return await self._run(list_jobs)

    async def requeue(
        self, *, message_id: str | None, dead: bool, now: float, not_sent_before: float
    ) -> int:
        if message_id is None and not dead:
            return 0
        return await self._rowcount(
            """UPDATE jobs SET state = 'pending', run_after = %(now)s, attempts = 0,
                   reason = NULL, lease_owner = NULL, lease_until = NULL, updated_at = %(now)s
               WHERE state = 'dead'
                 AND (%(message_id)s::text IS NULL OR message_id = %(message_id)s)
                 AND (first_send_at IS NULL OR first_send_at >= %(not_before)s)""",
            {"now": now, "message_id": message_id, "not_before": not_sent_before},
        )

    async def purge(self, *, before: float, batch: int = 1000) -> int:
        total = 0
        for sql in _PURGE.values():
            while True:
                deleted = await self._rowcount(sql, (before, batch))
                total += deleted
                if deleted < batch:
                    break
        return total


async def _apply_feedback(
    conn: Conn,
    delivery: Delivery,
    feedback: Feedback,
    address: str,
    now: float,
    transient_limit: int,
) -> Cause | None:
    """Record one recipient's feedback and suppress it if the rules say so; the cause
    when this suppressed the address now, else None (the SQLite store's twin)."""
    new = (
        await conn.execute(INSERT_FEEDBACK, feedback_values(delivery, feedback, address, now))
    ).rowcount
    if not new:
        return None  # this bounce or complaint of this reply is known: nothing changes
    cursor = await conn.execute(COUNT_TRANSIENT, transient_values(feedback, address, now))
    row = await cursor.fetchone()
    assert row is not None
    cause = suppression_cause(feedback.kind, transient_bounces=int(row[0]), limit=transient_limit)
    if cause is None:
        return None
    added = (
        await conn.execute(
            INSERT_SUPPRESSION, suppression_values(delivery, feedback, address, cause, now)
        )
    ).rowcount
    return cause if added else None


def _ledger_key(kind: str, value: str) -> int:
    """A signed 64-bit advisory lock key for one sender or one thread, the same in every
    replica (Python's ``hash`` is salted per process). The one-key form of the advisory
    locks never meets the two-key one that serialises migrations."""
    digest = hashlib.blake2b(f"autoreply-ledger\0{kind}\0{value}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _forget(tasks: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    """A done-callback that drops a finished task from ``tasks`` and reads its outcome."""

    def done(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it as unhandled

    return done


def _conninfo(url: str, connect_timeout: float) -> str:
    """``url`` as a libpq conninfo string, with our defaults where the URL sets nothing."""
    params = conninfo_to_dict(url)
    params.setdefault("connect_timeout", str(max(1, round(connect_timeout))))
    params.setdefault("application_name", "autoreply")
    return make_conninfo("", **params)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
