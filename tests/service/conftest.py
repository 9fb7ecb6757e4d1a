"""Fixtures for end-to-end tests of the service: real processes against the sandbox."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.service_process import ServiceProcess, free_port


class Deployment:
    """Service processes sharing one SQLite file, pointed at one sandbox."""

    def __init__(self, sandbox: Any, folder: Path) -> None:
        self.sandbox = sandbox
        self.folder = folder
        self.db = folder / "autoreply.db"
        self.port = free_port()
        self.processes: list[ServiceProcess] = []

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "AGENTMAIL_API_KEY": self.sandbox.api_key,
            "AGENTMAIL_BASE_URL": self.sandbox.url,
            "AUTOREPLY_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
            "AUTOREPLY_DATABASE_URL": f"sqlite:///{self.db}",
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

    def jobs(self) -> dict[str, tuple[str, str | None]]:
        """message_id -> (state, reason), read straight from the SQLite file."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return {
                row[0]: (row[1], row[2])
                for row in conn.execute("SELECT message_id, state, reason FROM jobs")
            }

    def wait_until(
        self, predicate: Callable[[], bool], *, timeout: float = 60.0, what: str = "condition"
    ) -> None:
        """Poll ``predicate``; on timeout fail with the service logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        logs = "\n".join(p.log()[-4000:] for p in self.processes)
        raise AssertionError(f"timed out waiting for {what}; jobs={self.jobs()}\n{logs}")

    def wait_final(self, count: int, *, timeout: float = 60.0) -> dict[str, tuple[str, str | None]]:
        """Wait until ``count`` jobs reached a final state; return all jobs."""

        def finished() -> bool:
            states = [state for state, _ in self.jobs().values()]
            return sum(state in ("done", "skipped", "dead") for state in states) >= count

        self.wait_until(finished, timeout=timeout, what=f"{count} finished jobs")
        return self.jobs()

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture(name="deployment")
def _deployment(sandbox: Any, tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(sandbox, tmp_path)
    yield deployment
    deployment.stop()


def replies_to(sent: list[Any], message_id: str) -> list[Any]:
    """The emails the sandbox actually sent in reply to ``message_id``."""
    return [email for email in sent if email.get("in_reply_to") == message_id]
