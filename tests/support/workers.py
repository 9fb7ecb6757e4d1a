"""An in-process worker for tests that drive it directly (their own clock, retry policy,
or burst signal) against a real store, and the sandbox or a fake AgentMail."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from handlers.modes import ReplyMode
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
    claim_limit: Callable[[int], int] = lambda concurrency: concurrency,
    templates: LiveTemplates | None = None,
    dry_run: bool = False,
    policy: PolicyConfig | None = None,
    reply_delay: timedelta = timedelta(0),
    mode: ReplyMode = ReplyMode.SEND,
    draft_check_seconds: float = 600.0,
) -> Worker:
    """A worker with the labels ``unreplied``, ``replied`` and ``autoreply-draft``;
    unless given, the shipped templates, the default policy, no grace period, replies
    sent at once (``mode``), and not in dry run."""
    return Worker(
        store=store,
        api=api,
        templates=templates or LiveTemplates(None),
        config=WorkerConfig(
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            unreplied_label="unreplied",
            replied_label="replied",
            dry_run=dry_run,
            policy=policy or PolicyConfig(),
            reply_delay=reply_delay,
            mode=mode,
            draft_label="autoreply-draft",
            draft_check_seconds=draft_check_seconds,
        ),
        retry=retry,
        clock=clock,
        claim_limit=claim_limit,
    )
