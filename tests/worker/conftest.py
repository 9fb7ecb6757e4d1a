"""One job through the worker, step by step, in milliseconds.

A real ``Worker`` on a real SQLite file, a recording ``FakeAgentMail`` and a clock the
test moves. ``Harness.run`` claims the due job as the worker's dispatcher would and runs
its attempt to the end (the worker's one-job method), so every test is deterministic:
no dispatcher, no polling, no sleeps. ``Harness.journal`` lists the steps of every
attempt in order: the store's writes, the API's calls and the rendering.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from handlers.modes import ReplyMode
from handlers.policy import PolicyConfig
from handlers.retry import RetryPolicy
from service.models import Delivery, Job, MessageRef
from service.store import Store, open_store
from service.templates import LiveTemplates
from service.worker import Worker
from tests.support.fake_agentmail import FakeAgentMail
from tests.support.workers import make_worker

INBOX = "support@example.agentmail.to"
MESSAGE_ID = "<question-1@example.com>"
THREAD_ID = "thread-1"
LEASE = 30.0
#: 2026-11-29 09:00 UTC (a day before ``payload()``'s timestamp): a fixed start, so every
#: run sees the same times.
START = 1_795_942_800.0
#: The store methods the journal records: every write an attempt makes, and its read.
STORE_STEPS = (
    "history",
    "reserve",
    "save_reply",
    "mark_sent",
    "finish",
    "retry",
    "defer",
    "own_replies",
    "await_draft",
)
#: The AgentMail calls the journal records.
API_STEPS = (
    "get_message",
    "update_labels",
    "reply",
    "get_thread",
    "create_draft",
    "draft_exists",
)


def payload(**fields: Any) -> dict[str, Any]:
    """A complete ``message`` object (text and headers present: no fetch needed)."""
    base: dict[str, Any] = {
        "inbox_id": INBOX,
        "message_id": MESSAGE_ID,
        "thread_id": THREAD_ID,
        "from": "Jane <jane@example.com>",
        "to": [INBOX],
        "subject": "Opening hours",
        "text": "When are you open?",
        "labels": ["received"],
        "headers": {},
        "timestamp": "2026-11-30T09:00:00Z",
    }
    return base | fields


class Clock:
    """The worker's clock (Unix seconds): stands still until the test moves it."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """A worker, its store, a fake AgentMail and the clock; see the module docstring."""

    store: Store
    #: The same SQLite file opened again: another replica's view (rivals, lease thieves).
    other: Store
    api: FakeAgentMail
    clock: Clock
    folder: Path
    worker: Worker
    #: Every step of every attempt, in order, e.g. ``"reserve"`` or ``"reply"``.
    journal: list[str] = field(default_factory=list)
    #: The ``job_attempt`` log line of every attempt run.
    attempts: list[dict[str, Any]] = field(default_factory=list)
    _deliveries: int = 0

    def configure(
        self,
        *,
        templates: LiveTemplates | None = None,
        dry_run: bool = False,
        policy: PolicyConfig | None = None,
        retry: RetryPolicy | None = None,
        reply_delay: timedelta = timedelta(0),
        mode: ReplyMode = ReplyMode.SEND,
        draft_check_seconds: float = 600.0,
    ) -> None:
        """Replace the worker with one configured so."""
        self.worker = make_worker(
            self.store,
            self.api,
            concurrency=1,
            lease_seconds=LEASE,
            clock=self.clock,
            templates=templates,
            dry_run=dry_run,
            policy=policy,
            retry=retry,
            reply_delay=reply_delay,
            mode=mode,
            draft_check_seconds=draft_check_seconds,
        )
        self._watch(self.worker.templates, ("render",))

    async def deliver(
        self, message: dict[str, Any] | None = None, *, message_json: str | None = None
    ) -> None:
        """Record a delivery of ``message`` (default: ``payload()``), as intake does."""
        message = payload() if message is None else message
        self._deliveries += 1
        await self.store.record_delivery(
            Delivery(
                svix_id=f"msg_{self._deliveries}",
                event_id=f"evt_{self._deliveries}",
                event_type="message.received",
                message=MessageRef(
                    inbox_id=message["inbox_id"],
                    message_id=message["message_id"],
                    thread_id=message["thread_id"],
                ),
                message_json=message_json or orjson.dumps(message).decode(),
            ),
            now=self.clock(),
        )

    async def run(self) -> str:
        """Claim the one due job and run one attempt at it; return the attempt's outcome."""
        jobs = await self.store.claim(
            owner=self.worker.owner, now=self.clock(), lease=LEASE, limit=2
        )
        assert len(jobs) == 1, f"expected one due job, got {jobs}"
        with structlog.testing.capture_logs() as logs:
            await self.worker._run(jobs[0])
        [line] = [line for line in logs if line["event"] == "job_attempt"]
        self.attempts.append(dict(line))
        return str(line["outcome"])

    async def run_when_due(self) -> str:
        """Move the clock to when the job falls due again, then ``run``."""
        due = await self.store.next_due()
        assert due is not None, "no job is due"
        self.clock.now = max(self.clock.now, due)
        return await self.run()

    async def job(self, message_id: str = MESSAGE_ID) -> Job:
        """The job of ``message_id`` as stored now."""
        job = await self.store.get_job(INBOX, message_id)
        assert job is not None
        return job

    def before(self, step: str, action: Callable[[], Awaitable[object]]) -> None:
        """Run ``action`` the first time the store's ``step`` is called, before it runs."""
        original = getattr(self.store, step)
        pending = [action]

        async def intercepted(*args: Any, **kwargs: Any) -> Any:
            if pending:
                await pending.pop()()
            return await original(*args, **kwargs)

        setattr(self.store, step, intercepted)

    async def steal_lease(self) -> None:
        """Another worker claims the job, as after this one's lease ran out."""
        taken = await self.other.claim(
            owner="worker-other", now=self.clock() + LEASE + 1, lease=LEASE, limit=1
        )
        assert len(taken) == 1, "the job was not there to take"

    def _watch(self, target: object, names: tuple[str, ...]) -> None:
        """Record a call of each of ``names`` on ``target`` in the journal."""
        for name in names:
            original = getattr(target, name)
            setattr(target, name, _journalled(self.journal, name, original))


def _journalled(journal: list[str], name: str, original: Any) -> Any:
    if name in (*API_STEPS, *STORE_STEPS):

        async def async_call(*args: Any, **kwargs: Any) -> Any:
            journal.append(_entry(name, kwargs))
            return await original(*args, **kwargs)

        return async_call

    def call(*args: Any, **kwargs: Any) -> Any:
        journal.append(name)
        return original(*args, **kwargs)

    return call


def _entry(name: str, kwargs: dict[str, Any]) -> str:
    """The journal's line for a call: labels changed, the state finished in."""
    if name == "update_labels":
        added = " ".join(f"+{label}" for label in kwargs.get("add", ()))
        removed = " ".join(f"-{label}" for label in kwargs.get("remove", ()))
        return " ".join(part for part in ("update_labels", added, removed) if part)
    if name == "finish":
        return f"finish {kwargs['state']}"
    return name


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """A harness on a fresh SQLite file with the default policy and templates."""
    store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    other = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    await store.open()
    await other.open()
    api = FakeAgentMail()
    clock = Clock()
    journal: list[str] = []
    worker = make_worker(store, api, concurrency=1, lease_seconds=LEASE, clock=clock)
    built = Harness(
        store=store,
        other=other,
        api=api,
        clock=clock,
        folder=tmp_path,
        worker=worker,
        journal=journal,
    )
    built._watch(store, STORE_STEPS)
    built._watch(api, API_STEPS)
    built._watch(worker.templates, ("render",))
    try:
        yield built
    finally:
        await other.close()
        await store.close()
