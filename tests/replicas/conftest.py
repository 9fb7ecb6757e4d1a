"""Several ``autoreply serve`` processes on one PostgreSQL database, behind a load balancer.

* ``balancer``: a ``Balancer`` (tests/support/balancer.py) on real uvicorn, sending each
  request to a random live replica.
* ``ReplicaSet``: a ``Deployment`` (tests/support/deployment.py) whose replicas have
  ``AUTOREPLY_PUBLIC_URL`` set to the balancer, so they register one webhook pointing at
  it; it starts several at once and keeps the balancer's list of live ones current.
* ``replicas`` fixture: a ReplicaSet on a fresh schema of the test PostgreSQL (skipped
  with the reason when none is reachable).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support import postgres
from tests.support.balancer import Balancer
from tests.support.deployment import Deployment, replies_to
from tests.support.server import serve
from tests.support.service_process import ServiceProcess


class ReplicaSet(Deployment):
    """Service processes sharing one database, reached through one ``Balancer``."""

    def __init__(
        self, sandbox: Any, folder: Path, database_url: str, balancer: Balancer, url: str
    ) -> None:
        super().__init__(sandbox, folder, database_url=database_url, public_url=url)
        self.balancer = balancer

    def start(self, count: int = 1, **env: str) -> list[ServiceProcess]:  # type: ignore[override]
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

    def wait_final(self, count: int, *, timeout: float = 90.0) -> dict[str, tuple[str, str | None]]:
        """Wait until ``count`` jobs reached a final state (longer: replicas restart)."""
        return super().wait_final(count, timeout=timeout)


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
