"""The catch-up sweep against the real sandbox over HTTP, on real SQLite and PostgreSQL.

One ``Sweeper`` pass at a time, driven directly: first look, marks, overlap, labels,
pages with injected 429s and 500s, ``since``, dry runs, the lease, cancellation, and the
periodic loop (its interval given in the constructor: the setting's minimum is 1m).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from handlers.message import InboundMessage
from service import metrics
from service.agentmail_api import AgentMailApi
from service.agentmail_port import MessagePage
from service.models import JobSource
from service.store import Store, open_store
from service.sweep import BUSY_RECHECK, Sweeper, SweepLoop
from tests.conftest import SandboxFactory, SandboxHandle
from tests.support import postgres
from tests.support.waiting import until_awaited


class Sleeps:
    """A ``sleep`` that records the waits and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store of each kind: the sweep's marks and lease live in either."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'sweep.db'}"
        else:
            postgres.require_server()
            url = stack.enter_context(postgres.temporary_schema(prefix="sweep"))
        opened = open_store(url)
        await opened.open()
        yield opened
        await opened.close()


@pytest.fixture
async def api(sandbox: SandboxHandle) -> AsyncIterator[AgentMailApi]:
    client = AgentMailApi(api_key=sandbox.api_key, base_url=sandbox.url, timeout=10)
    yield client
    await client.aclose()


def sweeper(store: Store, api: Any, inboxes: tuple[str, ...], **kwargs: Any) -> Sweeper:
    return Sweeper(
        store=store,
        api=api,
        inbox_ids=inboxes,
        replied_label="replied",
        sleep=kwargs.pop("sleep", Sleeps()),
        **kwargs,
    )


def inject(sandbox: SandboxHandle, count: int, **fields: Any) -> list[str]:
    """``count`` inbound messages to the sandbox's first inbox; their ids."""
    return [
        sandbox.admin.inject(
            inbox_id=sandbox.inbox,
            from_=f"sender{i}@example.com",
            subject=f"Hello {i}",
            text="Hi",
            **fields,
        )["message_id"]
        for i in range(count)
    ]


async def sources(store: Store, inbox: str, ids: list[str]) -> list[JobSource | None]:
    jobs = [await store.get_job(inbox, message_id) for message_id in ids]
    return [None if job is None else job.source for job in jobs]


async def test_first_look_sets_the_mark_and_answers_nothing_older(
    sandbox: SandboxHandle, store: Store, api: AgentMailApi
) -> None:
    """A new deployment never reaches into the past; later mail is enqueued once, and
    the overlap lists it again without a second job. The sweeper's clock is the
    sandbox's, which the test moves on (the mark never passes the sweeper's now)."""
    old = inject(sandbox, 2)
    clock = sandbox.app_state.clock
    sweep = sweeper(store, api, (sandbox.inbox,), clock=lambda: clock.now().timestamp())

    first = await sweep.sweep()

    assert first.ok
    assert first.totals()["scanned"] == 0
    marks = await store.get_marks()
    assert set(marks) == {sandbox.inbox}
    assert await sources(store, sandbox.inbox, old) == [None, None]

    new = inject(sandbox, 3)
    enqueued_before = metrics.SWEEP_ENQUEUED._value.get()
    second = await sweep.sweep()
    assert second.totals() == {"scanned": 3, "already_handled": 0, "enqueued": 3, "skipped": 0}
    assert await sources(store, sandbox.inbox, new) == [JobSource.SWEEP] * 3
    assert metrics.SWEEP_ENQUEUED._value.get() == enqueued_before + 3
    # The first mark is an overlap ahead of the first look, so it lists from then.
    assert (await store.get_marks())[sandbox.inbox] == marks[sandbox.inbox]

    third = await sweep.sweep()
    assert third.totals() == {"scanned": 3, "already_handled": 0, "enqueued": 0, "skipped": 3}

    sandbox.admin.advance_clock(1200)
    later = inject(sandbox, 1)
    fourth = await sweep.sweep()
    assert fourth.totals()["enqueued"] == 1
    last = sandbox.app_state.messages[(sandbox.inbox, later[0])].timestamp.timestamp()
    assert (await store.get_marks())[sandbox.inbox] == last


async def test_a_swept_payload_makes_the_worker_fetch_the_message(
    sandbox: SandboxHandle, store: Store, api: AgentMailApi
) -> None:
    """The job's payload is the list item: no body, so the worker fetches the message."""
    sweep = sweeper(store, api, (sandbox.inbox,))
    await sweep.sweep()
    (message_id,) = inject(sandbox, 1)
    await sweep.sweep()

    job = await store.get_job(sandbox.inbox, message_id)
    assert job is not None
    assert job.event_id == f"sweep:{message_id}"
    parsed = InboundMessage.from_payload(orjson.loads(job.message_json))
    assert parsed.incomplete
    assert (parsed.inbox_id, parsed.sender_address) == (sandbox.inbox, "sender0@example.com")


async def test_replied_messages_are_already_handled(
    sandbox: SandboxHandle, store: Store, api: AgentMailApi
) -> None:
    """The replied label (and spam, hidden by the list) means no job."""
    sweep = sweeper(store, api, (sandbox.inbox,))
    await sweep.sweep()
    replied = inject(sandbox, 2, labels=["replied"])
    inject(sandbox, 1, event_type="message.received.spam")
    fresh = inject(sandbox, 1)

    report = await sweep.sweep()

    assert report.totals() == {"scanned": 3, "already_handled": 2, "enqueued": 1, "skipped": 0}
    assert await sources(store, sandbox.inbox, replied + fresh) == [None, None, JobSource.SWEEP]


async def test_pages_with_rate_limits_and_server_errors(
    sandbox: SandboxHandle, store: Store, api: AgentMailApi
) -> None:
    """Several hundred messages over small pages, 429s (Retry-After honoured) and 500s
    injected: every message enqueued exactly once, the waits as asked."""
    sweep_sleeps = Sleeps()
    sweep = sweeper(store, api, (sandbox.inbox,), page_size=25, sleep=sweep_sleeps)
    await sweep.sweep()
    ids = inject(sandbox, 12, copies=None) + [m for _ in range(4) for m in inject(sandbox, 60)]
    sandbox.admin.add_fault("messages.list", status=429, retry_after=7, times=2)
    sandbox.admin.add_fault("messages.list", status=500, rate=0.3)

    report = await sweep.sweep()

    assert report.ok, report
    assert report.totals()["enqueued"] == len(ids) == 252
    assert report.totals()["scanned"] == len(ids)
    assert 7 in sweep_sleeps.waits
    assert max(sweep_sleeps.waits) <= 60
    assert await sources(store, sandbox.inbox, ids) == [JobSource.SWEEP] * len(ids)


async def test_a_permanent_failure_ends_that_inbox_only(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """A 403 on one inbox is reported on it; the next inbox is still swept."""
    sandbox = sandbox_factory(inboxes=("a@agentmail.to", "b@agentmail.to"))
    store = open_store(f"sqlite:///{tmp_path / 'two.db'}")
    await store.open()
    api = AgentMailApi(api_key=sandbox.api_key, base_url=sandbox.url, timeout=10)
    try:
        sweep = sweeper(store, api, ())
        first = await sweep.sweep()
        assert [c.inbox_id for c in first.inboxes] == ["a@agentmail.to", "b@agentmail.to"]
        sandbox.admin.inject(inbox_id="b@agentmail.to", from_="x@example.com", text="Hi")
        sandbox.admin.add_fault("messages.list", status=403, times=1)

        report = await sweep.sweep()

        assert not report.ok
        assert report.inboxes[0].error is not None
        assert "403" in report.inboxes[0].error
        assert (report.inboxes[1].error, report.inboxes[1].enqueued) == (None, 1)
    finally:
        await api.aclose()
        await store.close()


async def test_since_reaches_back_and_never_moves_a_mark_back(
    sandbox: SandboxHandle, store: Store, api: AgentMailApi
) -> None:
    """``sweep --since``: older mail is enqueued, the mark stays where it was."""
    old = inject(sandbox, 3)
    sweep = sweeper(store, api, (sandbox.inbox,))
    await sweep.sweep()
    mark = (await store.get_marks())[sandbox.inbox]
    since = sandbox.app_state.messages[(sandbox.inbox, old[0])].timestamp.timestamp() - 1

    dry = await sweep.sweep(since=since, dry_run=True)
    assert dry.totals() == {"scanned": 3, "already_handled": 0, "enqueued": 3, "skipped": 0}
    assert await sources(store, sandbox.inbox, old) == [None] * 3

    report = await sweep.sweep(since=since)

    assert report.totals()["enqueued"] == 3
    assert await sources(store, sandbox.inbox, old) == [JobSource.SWEEP] * 3
    assert (await store.get_marks())[sandbox.inbox] == mark


async def test_the_lease_lets_one_sweeper_run(
    sandbox: SandboxHandle, store: Store, api: AgentMailApi
) -> None:
    """While another holds the sweep lease a pass does not run; after it, it does."""
    assert await store.try_sweep_lease("someone-else", datetime.now().timestamp(), 60)
    sweep = sweeper(store, api, (sandbox.inbox,))

    assert await sweep.run_leased() is None
    assert await store.get_marks() == {}

    assert await store.release_sweep_lease("someone-else")
    report = await sweep.run_leased()
    assert report is not None
    assert report.ok
    assert await store.try_sweep_lease("someone-else", datetime.now().timestamp(), 60)


class CancelOnPage:
    """The real adapter, cancelled when page ``n`` (1-based) is asked for."""

    def __init__(self, api: AgentMailApi, n: int) -> None:
        self.api, self.n, self.pages = api, n, 0

    async def list_inbox_ids(self) -> list[str]:
        return await self.api.list_inbox_ids()

    async def list_received(self, inbox_id: str, **kwargs: Any) -> MessagePage:
        self.pages += 1
        if self.pages == self.n:
            raise asyncio.CancelledError
        return await self.api.list_received(inbox_id, **kwargs)


async def test_a_cancelled_sweep_resumes_from_the_mark(
    sandbox: SandboxHandle, store: Store, api: AgentMailApi
) -> None:
    """Shutdown mid-sweep: the pages done are kept, the lease is given back, counted
    ``interrupted``, and the next pass enqueues the rest, nothing twice."""
    await sweeper(store, api, (sandbox.inbox,)).sweep()
    ids = inject(sandbox, 30)
    interrupted = metrics.SWEEP_RUNS.labels(outcome="interrupted")._value.get()
    cancelling = sweeper(store, CancelOnPage(api, 3), (sandbox.inbox,), page_size=10)

    with pytest.raises(asyncio.CancelledError):
        await cancelling.run_leased()

    assert metrics.SWEEP_RUNS.labels(outcome="interrupted")._value.get() == interrupted + 1
    done = await sources(store, sandbox.inbox, ids)
    assert done == [JobSource.SWEEP] * 20 + [None] * 10
    report = await sweeper(store, api, (sandbox.inbox,), page_size=10).run_leased()
    assert report is not None
    assert report.totals()["enqueued"] == 10
    assert await sources(store, sandbox.inbox, ids) == [JobSource.SWEEP] * 30


async def test_the_loop_sweeps_every_interval_and_wakes_the_worker(
    sandbox: SandboxHandle, store: Store, api: AgentMailApi
) -> None:
    """The periodic loop (a short interval given in the constructor) enqueues new mail
    on a later pass and wakes the worker; it waits while intake is busy."""
    woken: list[bool] = []
    busy = [False]
    sweep = Sweeper(
        store=store,
        api=api,
        inbox_ids=(sandbox.inbox,),
        replied_label="replied",
        wake=lambda: woken.append(True),
        busy=lambda: busy[0],
    )
    task = asyncio.create_task(SweepLoop(sweep, interval=0.05).run())
    try:

        async def marked() -> bool:
            return sandbox.inbox in await store.get_marks()

        await until_awaited(marked, what="the first pass")
        (message_id,) = inject(sandbox, 1)

        async def enqueued() -> bool:
            return await store.get_job(sandbox.inbox, message_id) is not None

        await until_awaited(enqueued, what="a later pass")
        assert woken
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_loop_waits_while_intake_is_busy(
    sandbox: SandboxHandle, store: Store, api: AgentMailApi
) -> None:
    """Live deliveries arriving fast: the loop starts its pass only after they calm down."""
    busy = [True]
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        busy[0] = len(sleeps) < 3
        # The rechecks return at once; the interval after the pass really waits.
        await asyncio.sleep(0 if seconds <= BUSY_RECHECK else seconds)

    sweep = sweeper(store, api, (sandbox.inbox,), sleep=sleep, busy=lambda: busy[0])
    task = asyncio.create_task(SweepLoop(sweep, interval=3600).run())
    try:

        async def marked() -> bool:
            return sandbox.inbox in await store.get_marks()

        await until_awaited(marked, what="the pass after intake calmed down")
        assert sleeps[:3] == [BUSY_RECHECK] * 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_pass_waits_in_the_middle_while_intake_is_busy(
    sandbox: SandboxHandle, store: Store, api: AgentMailApi
) -> None:
    """Intake turning busy in the middle of a pass stops it before its next write (the
    jobs already written stay); it goes on from there once intake is calm, keeping its
    lease meanwhile, and ends with every message enqueued once."""
    await sweeper(store, api, (sandbox.inbox,)).sweep()
    ids = inject(sandbox, 25)
    busy = [False]
    calls = 0
    during: list[int] = []

    class CountingApi:
        """The real API; busy turns on after the second page is listed."""

        async def list_inbox_ids(self) -> list[str]:
            return await api.list_inbox_ids()

        async def list_received(self, *args: Any, **kwargs: Any) -> MessagePage:
            nonlocal calls
            calls += 1
            if calls == 2:
                busy[0] = True
            return await api.list_received(*args, **kwargs)

    async def sleep(seconds: float) -> None:
        done = await sources(store, sandbox.inbox, ids)
        during.append(len([source for source in done if source is not None]))
        busy[0] = len(during) < 3
        await asyncio.sleep(0)

    sweep = sweeper(
        store, CountingApi(), (sandbox.inbox,), sleep=sleep, busy=lambda: busy[0], page_size=10
    )
    report = await sweep.run_leased()
    assert report is not None
    assert report.ok
    # Busy from the second listing on: waited three times with the first page (10 jobs)
    # written and none of the second, then swept the rest.
    assert during == [10, 10, 10]
    assert report.totals()["enqueued"] == 25
    assert await sources(store, sandbox.inbox, ids) == [JobSource.SWEEP] * 25


async def test_cancelling_the_loop_always_ends_it(
    sandbox: SandboxHandle, store: Store, api: AgentMailApi
) -> None:
    """Shutdown cancels the loop at whatever point it is; it must end every time. On
    Python 3.11 ``asyncio.wait_for`` dropped a cancellation that arrived as the store
    operation it bounded finished, and the loop swept on for ever (seen in CI)."""
    inject(sandbox, 1)
    rng = random.Random(11)
    for _ in range(60):
        sweep = sweeper(store, api, (sandbox.inbox,), sleep=asyncio.sleep)
        task = asyncio.create_task(SweepLoop(sweep, interval=0).run())
        await asyncio.sleep(rng.uniform(0, 0.03))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done, "the cancelled sweep loop is still running"
        assert task.cancelled()
