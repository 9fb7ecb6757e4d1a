"""Versioned schema migrations, applied in order at startup and by ``autoreply migrate``.

Both stores use the same mechanism and the same version numbers: a ``schema_migrations``
table records each applied version; the pending versions are applied in order inside one
transaction (all or nothing); a database that records a version this code does not know
is refused rather than guessed at. Never edit a released version: add a new one, to both
lists, so a version number means the same schema change on either database.

PostgreSQL takes a transaction-level advisory lock (keyed by the current schema) before
it looks at ``schema_migrations``, so replicas starting at the same moment apply each
version once: the first one migrates, the others wait for its commit and find nothing to do.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg import AsyncConnection

#: First key of the two-key advisory lock that serialises PostgreSQL migrations (the
#: second is a hash of the schema name). Arbitrary, fixed forever: ASCII "ar".
ADVISORY_LOCK_CLASS = 0x6172

#: (version, statements) for SQLite, oldest first.
SQLITE: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE deliveries (
                svix_id TEXT PRIMARY KEY,
                event_id TEXT NOT NULL,
                received_at REAL NOT NULL)""",
            """CREATE TABLE events (
                event_id TEXT PRIMARY KEY,
                event_type TEXT NOT NULL,
                received_at REAL NOT NULL)""",
            """CREATE TABLE jobs (
                id INTEGER PRIMARY KEY,
                inbox_id TEXT NOT NULL,
                message_id TEXT NOT NULL,
                thread_id TEXT NOT NULL,
                event_id TEXT NOT NULL,
                event_type TEXT NOT NULL,
                message_json TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                run_after REAL NOT NULL,
                lease_owner TEXT,
                lease_until REAL,
                reply TEXT,
                first_send_at REAL,
                sent_message_id TEXT,
                reason TEXT,
                last_error TEXT,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                UNIQUE (inbox_id, message_id))""",
            "CREATE INDEX jobs_due ON jobs (state, run_after)",
            "CREATE INDEX jobs_lease ON jobs (state, lease_until)",
            """CREATE TABLE replies (
                job_id INTEGER PRIMARY KEY REFERENCES jobs (id),
                inbox_id TEXT NOT NULL,
                thread_id TEXT NOT NULL,
                sender TEXT NOT NULL,
                sent_at REAL NOT NULL)""",
            "CREATE INDEX replies_thread ON replies (inbox_id, thread_id)",
            "CREATE INDEX replies_sender ON replies (inbox_id, sender, sent_at)",
        ),
    ),
    (
        2,
        (
            # Retention purges dedupe rows by age, in small batches.
            "CREATE INDEX deliveries_received ON deliveries (received_at)",
            "CREATE INDEX events_received ON events (received_at)",
        ),
    ),
    (
        3,
        (
            # The ledger holds reservations too: a reply decided but not yet confirmed
            # sent ('reserved') counts for the thread cap and the sender cooldown like a
            # sent one. Rows written before this version were all sent.
            """ALTER TABLE replies ADD COLUMN state TEXT NOT NULL DEFAULT 'sent'
                CHECK (state IN ('reserved', 'sent'))""",
        ),
    ),
    (
        4,
        (
            # What brought each job in: a webhook delivery or the catch-up sweep. Jobs
            # written before this version all came from webhooks.
            """ALTER TABLE jobs ADD COLUMN source TEXT NOT NULL DEFAULT 'webhook'
                CHECK (source IN ('webhook', 'sweep'))""",
            # How far the sweep has fully processed each inbox (Unix seconds); it only
            # moves forward.
            """CREATE TABLE sweep_marks (
                inbox_id TEXT PRIMARY KEY,
                mark REAL NOT NULL,
                updated_at REAL NOT NULL)""",
            # Named leases between processes: 'sweep', so one replica sweeps at a time.
            """CREATE TABLE leases (
                name TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                lease_until REAL NOT NULL)""",
        ),
    ),
    (
        5,
        (
            # The last sweep through each inbox and what it found (a JSON object of
            # counts), for ``autoreply status``.
            "ALTER TABLE sweep_marks ADD COLUMN swept_at REAL",
            "ALTER TABLE sweep_marks ADD COLUMN findings TEXT",
        ),
    ),
    (
        6,
        (
            # The suppression list: addresses not to answer, per inbox ('*': every inbox),
            # and why. Never purged; ``autoreply suppressions remove`` deletes an entry.
            """CREATE TABLE suppressions (
                inbox_id TEXT NOT NULL,
                address TEXT NOT NULL,
                cause TEXT NOT NULL
                    CHECK (cause IN ('bounce', 'transient_bounces', 'complaint', 'manual')),
                reason TEXT,
                message_id TEXT,
                event_id TEXT,
                created_at REAL NOT NULL,
                PRIMARY KEY (inbox_id, address))""",
            "CREATE INDEX suppressions_address ON suppressions (address)",
            # Each bounce or complaint about one of our replies, once per reply, address
            # and kind (a second event about the same bounce counts nothing). Transient
            # bounces are counted from here; removing a suppression clears its address's
            # rows (cleared_at), so counting starts afresh.
            """CREATE TABLE feedback (
                inbox_id TEXT NOT NULL,
                message_id TEXT NOT NULL,
                address TEXT NOT NULL,
                kind TEXT NOT NULL,
                event_id TEXT NOT NULL,
                detail TEXT,
                received_at REAL NOT NULL,
                cleared_at REAL,
                PRIMARY KEY (inbox_id, message_id, address, kind))""",
            "CREATE INDEX feedback_address ON feedback (inbox_id, address, kind, received_at)",
            # Feedback names the message it is about: find our reply by its sent id.
            """CREATE INDEX jobs_sent ON jobs (inbox_id, sent_message_id)
                WHERE sent_message_id IS NOT NULL""",
        ),
    ),
    (
        7,
        (
            # Draft mode: the reply draft of a job, and the id of a message a
            # ``message.sent`` event reported in its thread while the draft waited.
            "ALTER TABLE jobs ADD COLUMN draft_id TEXT",
            "ALTER TABLE jobs ADD COLUMN sent_hint TEXT",
            # ``message.sent`` finds the jobs of its thread.
            "CREATE INDEX jobs_thread ON jobs (inbox_id, thread_id)",
        ),
    ),
    (
        8,
        (
            # The grace period: a ``message.sent`` event finds the jobs of its thread
            # that wait out their delay (``Store.note_sent``), and wakes them.
            """CREATE INDEX jobs_waiting ON jobs (inbox_id, thread_id)
                WHERE state = 'pending' AND reason = 'grace_period'""",
        ),
    ),
)

#: (version, statements) for PostgreSQL, oldest first: the same tables and columns as
#: SQLite (times are Unix seconds in ``double precision``, like SQLite's 8-byte REAL).
#: The claim indexes are partial, so finished jobs, which are kept, never slow a claim.
POSTGRES: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE deliveries (
                svix_id text PRIMARY KEY,
                event_id text NOT NULL,
                received_at double precision NOT NULL)""",
            """CREATE TABLE events (
                event_id text PRIMARY KEY,
                event_type text NOT NULL,
                received_at double precision NOT NULL)""",
            """CREATE TABLE jobs (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                inbox_id text NOT NULL,
                message_id text NOT NULL,
                thread_id text NOT NULL,
                event_id text NOT NULL,
                event_type text NOT NULL,
                message_json text NOT NULL,
                state text NOT NULL,
                attempts integer NOT NULL DEFAULT 0,
                run_after double precision NOT NULL,
                lease_owner text,
                lease_until double precision,
                reply text,
                first_send_at double precision,
                sent_message_id text,
                reason text,
                last_error text,
                created_at double precision NOT NULL,
                updated_at double precision NOT NULL,
                UNIQUE (inbox_id, message_id))""",
            "CREATE INDEX jobs_due ON jobs (run_after, id) WHERE state = 'pending'",
            "CREATE INDEX jobs_lease ON jobs (lease_until) WHERE state = 'running'",
            "CREATE INDEX jobs_updated ON jobs (state, updated_at)",
            """CREATE TABLE replies (
                job_id bigint PRIMARY KEY REFERENCES jobs (id),
                inbox_id text NOT NULL,
                thread_id text NOT NULL,
                sender text NOT NULL,
                sent_at double precision NOT NULL)""",
            "CREATE INDEX replies_thread ON replies (inbox_id, thread_id)",
            "CREATE INDEX replies_sender ON replies (inbox_id, sender, sent_at)",
        ),
    ),
    (
        2,
        (
            "CREATE INDEX deliveries_received ON deliveries (received_at)",
            "CREATE INDEX events_received ON events (received_at)",
        ),
    ),
    (
        3,
        (
            """ALTER TABLE replies ADD COLUMN state text NOT NULL DEFAULT 'sent'
                CHECK (state IN ('reserved', 'sent'))""",
        ),
    ),
    (
        4,
        (
            # A constant default: PostgreSQL 11+ adds the column without rewriting jobs.
            """ALTER TABLE jobs ADD COLUMN source text NOT NULL DEFAULT 'webhook'
                CHECK (source IN ('webhook', 'sweep'))""",
            """CREATE TABLE sweep_marks (
                inbox_id text PRIMARY KEY,
                mark double precision NOT NULL,
                updated_at double precision NOT NULL)""",
            """CREATE TABLE leases (
                name text PRIMARY KEY,
                owner text NOT NULL,
                lease_until double precision NOT NULL)""",
        ),
    ),
    (
        5,
        (
            "ALTER TABLE sweep_marks ADD COLUMN swept_at double precision",
            "ALTER TABLE sweep_marks ADD COLUMN findings text",
        ),
    ),
    (
        6,
        (
            """CREATE TABLE suppressions (
                inbox_id text NOT NULL,
                address text NOT NULL,
                cause text NOT NULL
                    CHECK (cause IN ('bounce', 'transient_bounces', 'complaint', 'manual')),
                reason text,
                message_id text,
                event_id text,
                created_at double precision NOT NULL,
                PRIMARY KEY (inbox_id, address))""",
            "CREATE INDEX suppressions_address ON suppressions (address)",
            """CREATE TABLE feedback (
                inbox_id text NOT NULL,
                message_id text NOT NULL,
                address text NOT NULL,
                kind text NOT NULL,
                event_id text NOT NULL,
                detail text,
                received_at double precision NOT NULL,
                cleared_at double precision,
                PRIMARY KEY (inbox_id, message_id, address, kind))""",
            "CREATE INDEX feedback_address ON feedback (inbox_id, address, kind, received_at)",
            """CREATE INDEX jobs_sent ON jobs (inbox_id, sent_message_id)
                WHERE sent_message_id IS NOT NULL""",
        ),
    ),
    (
        7,
        (
            "ALTER TABLE jobs ADD COLUMN draft_id text",
            "ALTER TABLE jobs ADD COLUMN sent_hint text",
            # Waiting drafts are claimed when their check falls due, like pending jobs.
            "CREATE INDEX jobs_drafted ON jobs (run_after, id) WHERE state = 'drafted'",
            """CREATE INDEX jobs_thread ON jobs (inbox_id, thread_id)
                WHERE state IN ('drafted', 'running')""",
        ),
    ),
    (
        8,
        (
            """CREATE INDEX jobs_waiting ON jobs (inbox_id, thread_id)
                WHERE state = 'pending' AND reason = 'grace_period'""",
        ),
    ),
)


class MigrationError(Exception):
    """The database's schema is newer than this version of the service knows, or has no home."""


def _pending(
    done: set[int], versions: tuple[tuple[int, tuple[str, ...]], ...]
) -> list[tuple[int, tuple[str, ...]]]:
    """The versions still to apply, oldest first; refuse a database newer than ``versions``."""
    known = {version for version, _ in versions}
    if done - known:
        raise MigrationError(
            f"database has schema version {max(done)}; this service knows up to {max(known)}"
        )
    return [(version, statements) for version, statements in versions if version not in done]


def apply_sqlite(conn: sqlite3.Connection) -> list[int]:
    """Apply every pending SQLite migration; return the versions applied."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"""
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        applied = []
        for version, statements in _pending(done, SQLITE):
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (version, time.time()),
            )
            applied.append(version)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return applied


async def apply_postgres(conn: AsyncConnection[Any]) -> list[int]:
    """Apply every pending PostgreSQL migration in the current schema; return the versions.

    The tables go into the first schema of the connection's ``search_path`` that exists
    (``public`` by default; see the README for choosing another). ``conn`` must be in
    autocommit mode: this opens its own transaction.
    """
    async with conn.transaction():
        cursor = await conn.execute("SELECT current_schema()")
        row = await cursor.fetchone()
        schema = None if row is None else row[0]
        if schema is None:
            search_path = await (await conn.execute("SHOW search_path")).fetchone()
            raise MigrationError(
                f"no schema of search_path {search_path[0] if search_path else '?'!r} exists"
                " (create it first)"
            )
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s::integer, hashtext(%s))", (ADVISORY_LOCK_CLASS, schema)
        )
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY, applied_at double precision NOT NULL)"""
        )
        cursor = await conn.execute("SELECT version FROM schema_migrations")
        done = {int(version) for (version,) in await cursor.fetchall()}
        applied = []
        for version, statements in _pending(done, POSTGRES):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                (version, time.time()),
            )
            applied.append(version)
    return applied
