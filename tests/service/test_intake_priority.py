"""During a burst of webhooks the worker steps back, and it never stops.

The worker runs in-process against the sandbox over HTTP (every API call slowed, so
jobs overlap) and a real SQLite file. The test plays intake: it says when webhooks are
queueing up. While they are, one job at a time may run, and replies keep going out;
afterwards the worker runs at full concurrency again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from handlers.policy import PolicyConfig
from service.agentmail_api import AgentMailApi
from service.loop_load import LoopLoad
from service.runtime import INTAKE_BUSY, LOOP_SATURATED, Runtime
from service.settings import Settings
from service.store import JobState, open_store
from service.templates import LiveTemplates
from service.webhooks import Delivery, MessageRef
from service.worker import Worker, WorkerConfig, claim_limit


def test_claim_limit_is_one_job_while_busy() -> None:
    assert claim_limit(32, intake_busy=False) == 32
    assert claim_limit(32, intake_busy=True) == 1
    assert claim_limit(1, intake_busy=True) == 1


async def running(store: Any) -> int:
    stats = await store.stats()
    return int(stats.by_state[JobState.RUNNING.value])


async def test_worker_steps_back_during_a_burst_and_keeps_replying(
    sandbox: Any, tmp_path: Path
) -> None:
    sandbox.admin.add_fault("*", latency_ms=150)
    api = AgentMailApi(api_key=sandbox.api_key, base_url=sandbox.url, timeout=10)
    store = open_store(f"sqlite:///{tmp_path / 'burst.db'}")
    await store.open()
    busy = [True]
    worker = Worker(
        store=store,
        api=api,
        templates=LiveTemplates(None),
        config=WorkerConfig(
            concurrency=16,
            lease_seconds=60,
            unreplied_label="unreplied",
            replied_label="replied",
            dry_run=False,
            policy=PolicyConfig(),
        ),
        intake_busy=lambda: busy[0],
    )
    try:
        for n in range(40):
            injected = sandbox.admin.inject(
                from_=f"Customer {n} <c{n}@example.com>", to=sandbox.inbox, text="Hello"
            )
            message = await api.get_message(sandbox.inbox, injected["message_id"])
            ref = MessageRef(
                inbox_id=sandbox.inbox,
                message_id=injected["message_id"],
                thread_id=injected["thread_id"],
            )
            delivery = Delivery(
                svix_id=f"msg_{n}",
                event_id=f"evt_{n}",
                event_type="message.received",
                message=ref,
                message_json=orjson.dumps(message).decode(),
            )
            await store.record_delivery(delivery, now=time.time())
        await worker.start()

        most_while_busy = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            most_while_busy = max(most_while_busy, await running(store))
            await asyncio.sleep(0.02)
        replied_while_busy = len(sandbox.admin.sent())
        assert most_while_busy == 1
        assert replied_while_busy >= 2  # slowed, not stopped

        busy[0] = False
        worker.wake()
        most_after = 0
        deadline = time.monotonic() + 60
        while len(sandbox.admin.sent()) < 40:
            assert time.monotonic() < deadline, "the backlog was not answered"
            most_after = max(most_after, await running(store))
            await asyncio.sleep(0.02)
        assert most_after > 1
    finally:
        await worker.stop(5)
        await api.aclose()
        await store.close()


def test_runtime_is_busy_only_with_a_burst_on_a_saturated_loop(tmp_path: Path) -> None:
    settings = Settings.from_environ(
        {
            "AGENTMAIL_API_KEY": "am_test",
            "AUTOREPLY_WEBHOOK_SECRET": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "AUTOREPLY_DATABASE_URL": f"sqlite:///{tmp_path / 'runtime.db'}",
        }
    )
    runtime = Runtime(settings)
    for _ in range(INTAKE_BUSY):
        runtime.intake_started()
    assert not runtime.intake_busy()  # many in progress, but the loop is idle
    runtime.loop_load.share = LOOP_SATURATED
    assert runtime.intake_busy()
    assert not runtime.worker._wakeup.is_set()
    runtime.intake_finished()
    assert not runtime.intake_busy()
    assert runtime.worker._wakeup.is_set()  # the dispatcher looks again at once


async def test_loop_load_measures_the_loops_cpu_and_reports_relief() -> None:
    load = LoopLoad(interval=0.05)
    reliefs: list[float] = []
    measuring = asyncio.create_task(
        load.run(saturated=0.75, on_relief=lambda: reliefs.append(load.share))
    )
    try:
        await asyncio.sleep(0.2)
        assert load.share < 0.3  # sleeping costs no CPU
        for _ in range(8):  # keep the loop's thread busy, yielding now and then
            spin_until = time.thread_time() + 0.05
            while time.thread_time() < spin_until:
                pass
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        busy = load.share
        assert busy >= 0.6  # (below 1 only when the machine itself is overloaded)
        await asyncio.sleep(0.3)
        assert load.share < 0.3
        assert len(reliefs) == (1 if busy >= 0.75 else 0)
    finally:
        measuring.cancel()
