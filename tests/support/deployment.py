"""Real ``autoreply serve`` processes sharing one database, pointed at one sandbox.

``Deployment`` is what end-to-end tests start and inspect: processes on a SQLite file
of their own (the default) or on a given database URL, the jobs read straight from
that database, and waits that fail with the jobs and every process's log. The replica
tests add a load balancer in front (``tests/replicas/conftest.py``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import postgres
from tests.support.service_process import ServiceProcess, free_port, run_autoreply
from tests.support.waiting import until_sync

#: The states a job ends in.
FINAL = ("done", "skipped", "dead", "discarded")

#: Errors a read of the jobs may meet while a database restarts under a test.
RESTARTING = (psycopg.OperationalError, sqlite3.OperationalError)


class Deployment:
    """Service processes sharing one database (``database_url``, by default a SQLite
    file in ``folder``), reachable at ``public_url`` (by default a port of their own)."""

    def __init__(
        self,
        sandbox: Any,
        folder: Path,
        *,
        database_url: str | None = None,
        public_url: str | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.folder = folder
        self.db = folder / "autoreply.db"
        self.database_url = database_url or f"sqlite:///{self.db}"
        self.port = free_port()
        self.public_url = public_url or f"http://127.0.0.1:{self.port}"
        self.processes: list[ServiceProcess] = []

    def env(self, **overrides: str) -> dict[str, str]:
        """The settings every process gets, with ``overrides`` on top."""
        env = {
            "AGENTMAIL_API_KEY": self.sandbox.api_key,
            "AGENTMAIL_BASE_URL": self.sandbox.url,
            "AUTOREPLY_PUBLIC_URL": self.public_url,
            "AUTOREPLY_DATABASE_URL": self.database_url,
            "AUTOREPLY_SENDER_COOLDOWN": "0",
            "AUTOREPLY_JOB_LEASE_SECONDS": "10",
            "AUTOREPLY_LOG_LEVEL": "DEBUG",
        }
        env.update(overrides)
        return env

    def start(
        self, *, wait_ready: bool = True, port: int | None = None, **env: str
    ) -> ServiceProcess:
        """Start one more ``autoreply serve`` (on the deployment's port unless given)."""
        log = self.folder / f"service-{len(self.processes)}.log"
        process = ServiceProcess(self.env(**env), log, port=port or self.port)
        self.processes.append(process)
        return process.start(wait_ready=wait_ready)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run one ``autoreply`` command with the deployment's settings (and ``env``),
        in its folder, as an operator would."""
        return run_autoreply(*args, env=self.env(**env), cwd=self.folder)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of one read-only statement, straight from the shared database."""
        if self.database_url.startswith("sqlite:///"):
            path = self.database_url.removeprefix("sqlite:///")
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                return list(conn.execute(sql).fetchall())
        with psycopg.connect(self.database_url, connect_timeout=5) as pg:
            return list(pg.execute(sql.encode()).fetchall())

    def jobs(self) -> dict[str, tuple[str, str | None]]:
        """message_id -> (state, reason)."""
        rows = self.query("SELECT message_id, state, reason FROM jobs")
        return {row[0]: (row[1], row[2]) for row in rows}

    def attempts(self) -> dict[str, int]:
        """message_id -> how many times its job was claimed."""
        return {row[0]: row[1] for row in self.query("SELECT message_id, attempts FROM jobs")}

    def logs(self) -> str:
        """The end of every process's log, for failure messages."""
        return "\n".join(
            f"--- {p.log_path.name}\n{p.log()[-3000:]}" for p in self.processes if p.log()
        )

    def wait_until(
        self, predicate: Callable[[], bool], *, timeout: float = 60.0, what: str = "condition"
    ) -> None:
        """Poll ``predicate`` (a database that is restarting counts as "not yet"); on
        timeout fail with the jobs and the logs."""

        def check() -> bool:
            try:
                return predicate()
            except RESTARTING:
                return False

        try:
            until_sync(check, timeout=timeout, what=what)
        except TimeoutError:
            try:
                jobs: object = self.jobs()
            except RESTARTING as exc:
                jobs = f"unreadable ({exc})"
            raise AssertionError(
                f"timed out waiting for {what}; jobs={jobs}\n{self.logs()}"
            ) from None

    def wait_final(self, count: int, *, timeout: float = 60.0) -> dict[str, tuple[str, str | None]]:
        """Wait until ``count`` jobs reached a final state; return all jobs."""

        def finished() -> bool:
            states = [state for state, _ in self.jobs().values()]
            return sum(state in FINAL for state in states) >= count

        self.wait_until(finished, timeout=timeout, what=f"{count} finished jobs")
        return self.jobs()

    def wait_states(
        self, message_ids: list[str], state: str, *, timeout: float = 60.0
    ) -> dict[str, tuple[str, str | None]]:
        """Wait until the jobs of ``message_ids`` are all in ``state``; return all jobs."""

        def reached() -> bool:
            jobs = self.jobs()
            return all(jobs.get(m, ("", None))[0] == state for m in message_ids)

        self.wait_until(reached, timeout=timeout, what=f"{len(message_ids)} jobs {state}")
        return self.jobs()

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL if it lingers)."""
        for process in self.processes:
            process.stop()


def replies_to(sent: list[Any], message_id: str) -> list[Any]:
    """The emails the sandbox actually sent in reply to ``message_id``."""
    return [email for email in sent if email.get("in_reply_to") == message_id]


#: The two stores as fixture params: a SQLite file, and a PostgreSQL schema (marked
#: ``postgres``; skipped with the reason when no server can be reached).
STORES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@contextlib.contextmanager
def deployment_on(store: str, sandbox: Any, folder: Path, *, prefix: str) -> Iterator[Deployment]:
    """A ``Deployment`` on a fresh SQLite file in ``folder`` (``store`` "sqlite") or a
    fresh PostgreSQL schema named after ``prefix`` ("postgres"); stopped afterwards."""
    with contextlib.ExitStack() as stack:
        url = None
        if store == "postgres":
            postgres.require_server()
            url = stack.enter_context(postgres.temporary_schema(prefix=prefix))
        deployment = Deployment(sandbox, folder, database_url=url)
        try:
            yield deployment
        finally:
            deployment.stop()
