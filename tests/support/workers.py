"""An in-process worker for tests that drive it directly (their own clock, retry policy,
or burst signal) against the sandbox and a real store."""

from __future__ import annotations

import time
from collections.abc import Callable

from handlers.policy import PolicyConfig
from handlers.retry import RetryPolicy
from service.agentmail_port import AgentMailPort
from service.store import Store
from service.templates import LiveTemplates
from service.worker import Worker, WorkerConfig


def make_worker(
    store: Store,
    api: AgentMailPort,
    *,
    concurrency: int,
    lease_seconds: float = 30,
    retry: RetryPolicy | None = None,
    clock: Callable[[], float] = time.time,
    intake_busy: Callable[[], bool] = lambda: False,
) -> Worker:
    """A worker with the default labels, policy and templates, not in dry run."""
    return Worker(
        store=store,
        api=api,
        templates=LiveTemplates(None),
        config=WorkerConfig(
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            unreplied_label="unreplied",
            replied_label="replied",
            dry_run=False,
            policy=PolicyConfig(),
        ),
        retry=retry,
        clock=clock,
        intake_busy=intake_busy,
    )
