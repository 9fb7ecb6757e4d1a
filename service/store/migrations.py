"""Versioned schema migrations, applied in order at startup and by ``autoreply migrate``.

Each version is applied once, in its own transaction, and recorded in
``schema_migrations``; a database newer than this code is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
import time

#: (version, statements) for SQLite, oldest first. Never edit a released version:
#: add a new one.
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
)


class MigrationError(Exception):
    """The database's schema is newer than this version of the service knows."""


def apply_sqlite(conn: sqlite3.Connection) -> list[int]:
    """Apply every pending SQLite migration; return the versions applied."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"""
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        known = {version for version, _ in SQLITE}
        if done - known:
            raise MigrationError(
                f"database has schema version {max(done)}; this service knows up to {max(known)}"
            )
        applied = []
        for version, statements in SQLITE:
            if version in done:
                continue
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
