"""Several ``autoreply serve`` processes on one PostgreSQL database, behind a load balancer.

* ``balancer``: a ``Balancer`` (tests/support/balancer.py) on real uvicorn, sending each
  request to a random live replica.
* ``ReplicaSet``: starts replicas with ``AUTOREPLY_PUBLIC_URL`` set to the balancer, so
  they register one webhook pointing at it; reads the jobs straight from the database.
* ``replicas`` fixture: a ReplicaSet on a fresh schema of the test PostgreSQL (skipped
  with the reason when none is reachable).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import postgres
from tests.support.balancer import Balancer
from tests.support.server import serve
from tests.support.service_process import ServiceProcess


class ReplicaSet:
    """Service processes sharing one database, reached through one ``Balancer``."""

    def __init__(
        self, sandbox: Any, folder: Path, database_url: str, balancer: Balancer, url: str
    ) -> None:
        self.sandbox = sandbox
        self.folder = folder
        self.database_url = database_url
        self.balancer = balancer
        self.balancer_url = url
        self.processes: list[ServiceProcess] = []

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "AGENTMAIL_API_KEY": self.sandbox.api_key,
            "AGENTMAIL_BASE_URL": self.sandbox.url,
            "AUTOREPLY_PUBLIC_URL": self.balancer_url,
            "AUTOREPLY_DATABASE_URL": self.database_url,
            "AUTOREPLY_SENDER_COOLDOWN": "0",
            "AUTOREPLY_JOB_LEASE_SECONDS": "10",
            "AUTOREPLY_LOG_LEVEL": "DEBUG",
        }
        env.update(overrides)
        return env

    def start(self, count: int = 1, **env: str) -> list[ServiceProcess]:
        """Start ``count`` more replicas at once; return them when all are ready."""
        new = [
            ServiceProcess(self.env(**env), self.folder / f"replica-{len(self.processes) + i}.log")
            for i in range(count)
        ]
        self.processes.extend(new)
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda process: process.start(timeout=60), new))
        self._route()
        return new

    def kill(self, process: ServiceProcess) -> None:
        """SIGKILL one replica and take it out of the balancer."""
        process.kill()
        self._route()

    def terminate(self, process: ServiceProcess) -> None:
        """SIGTERM one replica (graceful) and take it out of the balancer."""
        process.terminate()
        self._route()

    def _route(self) -> None:
        self.balancer.backends = [
            p.url for p in self.processes if p.process is not None and p.process.poll() is None
        ]

    def worker_of(self, process: ServiceProcess) -> str:
        """The lease-owner token of a replica's worker, from its startup log line."""
        for line in process.log().splitlines():
            if '"service_started"' in line:
                return str(json.loads(line)["worker"])
        raise AssertionError(f"no service_started line in {process.log_path}")

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of one read-only statement, straight from the shared database."""
        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            return list(conn.execute(sql.encode()).fetchall())

    def jobs(self) -> dict[str, tuple[str, str | None, int]]:
        """message_id -> (state, reason, attempts)."""
        rows = self.query("SELECT message_id, state, reason, attempts FROM jobs")
        return {row[0]: (row[1], row[2], row[3]) for row in rows}

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.log_path.name}\n{p.log()[-3000:]}" for p in self.processes if p.log()
        )

    def wait_until(
        self, predicate: Callable[[], bool], *, timeout: float = 60.0, what: str = "condition"
    ) -> None:
        """Poll ``predicate``; on timeout fail with the jobs and the replicas' logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except psycopg.OperationalError:
                pass  # the database is restarting
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; jobs={self.jobs()}\n{self.logs()}")

    def wait_final(
        self, count: int, *, timeout: float = 90.0
    ) -> dict[str, tuple[str, str | None, int]]:
        """Wait until ``count`` jobs reached a final state; return all jobs."""

        def finished() -> bool:
            states = [state for state, _, _ in self.jobs().values()]
            return sum(state in ("done", "skipped", "dead") for state in states) >= count

        self.wait_until(finished, timeout=timeout, what=f"{count} finished jobs")
        return self.jobs()

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture(name="balancer")
def _balancer() -> Iterator[tuple[Balancer, str]]:
    balancer = Balancer()
    with serve(balancer.app) as server:
        yield balancer, server.url


@pytest.fixture(name="make_replicas")
def _make_replicas(
    sandbox: Any, tmp_path: Path, balancer: tuple[Balancer, str]
) -> Iterator[Callable[[str], ReplicaSet]]:
    """Build a ReplicaSet on a given database URL; every replica is stopped afterwards."""
    made: list[ReplicaSet] = []

    def make(database_url: str) -> ReplicaSet:
        replicas = ReplicaSet(sandbox, tmp_path, database_url, *balancer)
        made.append(replicas)
        return replicas

    yield make
    for replicas in made:
        replicas.stop()


@pytest.fixture(name="replicas")
def _replicas(make_replicas: Callable[[str], ReplicaSet]) -> Iterator[ReplicaSet]:
    """A ReplicaSet on its own schema of the test PostgreSQL (dropped afterwards)."""
    postgres.require_server()
    with postgres.temporary_schema(prefix="replicas") as url:
        replicas = make_replicas(url)
        yield replicas
        replicas.stop()  # before the schema is dropped under them


def replies_to(sent: list[Any], message_id: str) -> list[Any]:
    """The emails the sandbox actually sent in reply to ``message_id``."""
    return [email for email in sent if email.get("in_reply_to") == message_id]


def inject(sandbox: Any, count: int, *, prefix: str = "", **fields: Any) -> list[dict[str, Any]]:
    """Inject ``count`` distinct emails from distinct senders; return the inject results."""
    return [
        sandbox.admin.inject(
            from_=f"Sender {prefix}{i} <sender{prefix}{i}@example.com>",
            to=sandbox.inbox,
            subject=f"Question {prefix}{i}",
            text=f"Hello, question number {i}.",
            **fields,
        )
        for i in range(count)
    ]


def assert_replied_once(sandbox: Any, message_ids: list[str]) -> None:
    """The sandbox sent exactly one reply to each message, and nothing else."""
    sent = sandbox.admin.sent()
    counts = {m: len(replies_to(sent, m)) for m in message_ids}
    assert counts == dict.fromkeys(message_ids, 1)
    assert len(sent) == len(message_ids)
