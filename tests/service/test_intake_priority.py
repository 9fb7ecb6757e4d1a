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

from service.agentmail_api import AgentMailApi
from service.burst import END_IN_FLIGHT, END_LOAD, START_IN_FLIGHT, START_LOAD, Burst
from service.models import Delivery, JobState, MessageRef
from service.runtime import Runtime
from service.settings import Settings
from service.store import open_store
from service.worker import claim_limit
from tests.support.workers import make_worker


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
    worker = make_worker(store, api, concurrency=16, lease_seconds=60, intake_busy=lambda: busy[0])
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


def test_a_burst_needs_many_requests_on_a_saturated_loop_and_ends_with_either_low() -> None:
    ended: list[int] = []
    burst = Burst(on_end=lambda: ended.append(burst.in_flight))
    for _ in range(START_IN_FLIGHT):
        burst.request_started()
    assert not burst.active  # many in progress, but the loop is idle
    burst.load = START_LOAD
    burst.request_started()
    assert burst.active
    # Between the thresholds it stays a burst: answers go out in batches.
    burst.load = END_LOAD
    while burst.in_flight > END_IN_FLIGHT:
        burst.request_finished()
    assert burst.active
    assert ended == []
    burst.request_finished()
    assert not burst.active
    assert ended == [END_IN_FLIGHT - 1]  # the worker is woken once, as the burst ends
    burst.request_finished()
    assert ended == [END_IN_FLIGHT - 1]


def test_a_burst_ends_when_the_loop_calms_down() -> None:
    ended: list[float] = []
    burst = Burst(on_end=lambda: ended.append(burst.load))
    burst.load = 1.0
    for _ in range(START_IN_FLIGHT):
        burst.request_started()
    assert burst.active
    burst.load = END_LOAD - 0.01
    burst.request_started()  # any event re-evaluates; so does every load sample
    assert not burst.active
    assert len(ended) == 1


async def test_burst_measures_the_loops_cpu_share() -> None:
    ended: list[float] = []
    burst = Burst(on_end=lambda: ended.append(burst.load), interval=0.05)
    for _ in range(START_IN_FLIGHT):
        burst.request_started()
    measuring = asyncio.create_task(burst.measure())
    try:
        await asyncio.sleep(0.2)
        assert burst.load < 0.3  # sleeping costs no CPU
        assert not burst.active
        for _ in range(8):  # keep the loop's thread busy, yielding now and then
            spin_until = time.thread_time() + 0.05
            while time.thread_time() < spin_until:
                pass
            await asyncio.sleep(0)
        busy = burst.load
        assert busy >= 0.6  # (below 1 only when the machine itself is overloaded)
        await asyncio.sleep(0.3)
        assert burst.load < 0.3
        assert not burst.active
        assert len(ended) == (1 if busy >= START_LOAD else 0)
    finally:
        measuring.cancel()


def test_the_runtime_wires_bursts_to_its_worker(tmp_path: Path) -> None:
    settings = Settings.from_environ(
        {
            "AGENTMAIL_API_KEY": "am_test",
            "AUTOREPLY_WEBHOOK_SECRET": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "AUTOREPLY_DATABASE_URL": f"sqlite:///{tmp_path / 'runtime.db'}",
        }
    )
    runtime = Runtime(settings)
    burst = runtime.burst
    burst.load = 1.0
    for _ in range(START_IN_FLIGHT):
        burst.request_started()
    assert runtime.worker.intake_busy()
    while burst.active:
        burst.request_finished()
    assert not runtime.worker.intake_busy()
    assert runtime.worker._wakeup.is_set()  # the dispatcher looks again at once
