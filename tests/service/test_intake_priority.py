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
import pytest
import structlog

from service.agentmail_api import AgentMailApi
from service.app import create_app
from service.burst import (
    BUSY_RATE,
    END_IN_FLIGHT,
    END_LOAD,
    QUIET_AFTER,
    START_IN_FLIGHT,
    START_LOAD,
    CountRequests,
    WebhookBurst,
)
from service.models import Delivery, JobState, MessageRef
from service.runtime import Runtime
from service.settings import Settings
from service.store import open_store
from tests.support.waiting import until, until_awaited
from tests.support.workers import make_worker


def test_claim_limit_is_one_job_during_a_burst_and_each_change_is_logged() -> None:
    burst = WebhookBurst(on_end=lambda: None)
    with structlog.testing.capture_logs() as logs:
        assert burst.claim_limit(32) == 32
        burst.load = 1.0
        for _ in range(START_IN_FLIGHT):
            burst.request_started()
        assert burst.claim_limit(32) == 1
        assert burst.claim_limit(1) == 1
        while burst.active:
            burst.request_finished()
        assert burst.claim_limit(32) == 32
    assert [(line["event"], line["log_level"]) for line in logs] == [
        ("worker_steps_back", "warning"),
        ("worker_resumes", "info"),
    ]
    assert logs[0]["webhooks_in_progress"] == START_IN_FLIGHT


async def running(store: Any) -> int:
    stats = await store.stats(now=time.time())
    return int(stats.by_state[JobState.RUNNING.value])


async def test_worker_steps_back_during_a_burst_and_keeps_replying(
    sandbox: Any, tmp_path: Path
) -> None:
    sandbox.admin.add_fault("*", latency_ms=150)
    api = AgentMailApi(api_key=sandbox.api_key, base_url=sandbox.url, timeout=10)
    store = open_store(f"sqlite:///{tmp_path / 'burst.db'}")
    await store.open()
    busy = [True]
    worker = make_worker(
        store,
        api,
        concurrency=16,
        lease_seconds=60,
        claim_limit=lambda concurrency: 1 if busy[0] else concurrency,
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

        # Sample the running jobs until replies go out (however long a shared machine
        # takes): never more than one at a time meanwhile.
        most_while_busy = 0

        async def replied(count: int) -> bool:
            nonlocal most_while_busy
            most_while_busy = max(most_while_busy, await running(store))
            return len(sandbox.admin.sent()) >= count

        await until_awaited(lambda: replied(2), within=60, what="replies during the burst")
        replied_while_busy = len(sandbox.admin.sent())
        assert most_while_busy == 1
        assert replied_while_busy >= 2  # slowed, not stopped

        busy[0] = False
        worker.wake()
        most_after = 0

        async def answered() -> bool:
            nonlocal most_after
            most_after = max(most_after, await running(store))
            return len(sandbox.admin.sent()) >= 40

        await until_awaited(answered, within=60, what="the backlog to be answered")
        assert most_after > 1
    finally:
        await worker.stop(5)
        await api.aclose()
        await store.close()


def test_a_burst_needs_many_requests_on_a_saturated_loop_and_ends_with_either_low() -> None:
    ended: list[int] = []
    burst = WebhookBurst(on_end=lambda: ended.append(burst.in_flight))
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
    burst = WebhookBurst(on_end=lambda: ended.append(burst.load))
    burst.load = 1.0
    for _ in range(START_IN_FLIGHT):
        burst.request_started()
    assert burst.active
    burst.load = END_LOAD - 0.01
    burst.request_started()  # any event re-evaluates; so does every load sample
    assert not burst.active
    assert len(ended) == 1


def test_load_is_the_loops_cpu_time_per_second_of_wall_time() -> None:
    """Sampled from the two clocks (the loop's thread CPU time and the wall clock)."""
    ended: list[float] = []
    cpu, wall = [0.0], [0.0]
    burst = WebhookBurst(
        on_end=lambda: ended.append(burst.load),
        cpu_clock=lambda: cpu[0],
        wall_clock=lambda: wall[0],
    )
    for _ in range(START_IN_FLIGHT):
        burst.request_started()
    wall[0] += 0.1  # idle: no CPU spent
    burst.sample(0.0, 0.0)
    assert (burst.load, burst.active) == (0.0, False)
    cpu[0], wall[0] = 0.09, 0.2  # busy: 90 ms of CPU in 100 ms
    burst.sample(0.0, 0.1)
    assert burst.load == pytest.approx(0.9)
    assert burst.active
    cpu[0], wall[0] = 0.13, 0.3  # calmer: 40 ms in 100 ms ends the burst
    burst.sample(0.09, 0.2)
    assert burst.load == pytest.approx(0.4)
    assert not burst.active
    assert ended == [pytest.approx(0.4)]


def test_intake_is_busy_for_the_backlog_from_a_rate_of_deliveries_until_a_quiet_spell() -> None:
    """The sweep's bar: ``BUSY_RATE`` deliveries a second (no burst needed), and busy
    for ``QUIET_AFTER`` seconds after the last such sample, not in every short gap."""
    wall = [0.0]
    burst = WebhookBurst(on_end=lambda: None, cpu_clock=lambda: 0.0, wall_clock=lambda: wall[0])

    def deliveries(count: int, seconds: float) -> None:
        for _ in range(count):
            burst.request_started()
            burst.request_finished()
        before = wall[0]
        wall[0] += seconds
        burst.sample(0.0, before)

    assert not burst.intake_busy()
    deliveries(int(BUSY_RATE / 10) - 1, 0.1)  # just under the rate
    assert not burst.intake_busy()
    deliveries(int(BUSY_RATE / 10), 0.1)  # at the rate, on an idle loop: no burst
    assert (burst.active, burst.intake_busy()) == (False, True)
    deliveries(0, QUIET_AFTER - 0.2)
    assert burst.intake_busy()  # a gap shorter than the quiet spell
    deliveries(0, 0.2)
    assert not burst.intake_busy()


async def test_an_idle_loop_measures_as_idle() -> None:
    """With the real clocks, a loop that only sleeps is far from a burst."""
    burst = WebhookBurst(on_end=lambda: None, interval=0.05)
    for _ in range(START_IN_FLIGHT):
        burst.request_started()
    samples: list[float] = []
    sample = burst.sample

    def counted(cpu_since: float, wall_since: float) -> None:
        sample(cpu_since, wall_since)
        samples.append(burst.load)

    burst.sample = counted  # type: ignore[method-assign]
    measuring = asyncio.create_task(burst.measure())
    try:
        # Wait for real samples (the load starts at 0.0), however late they come.
        await until(lambda: len(samples) >= 4, within=30, what="four samples of the load")
        assert burst.load < 0.3  # sleeping costs no CPU
        assert not burst.active
    finally:
        measuring.cancel()


async def test_webhook_requests_are_counted_while_in_progress(tmp_path: Path) -> None:
    """The app counts every webhook request from its start to its answer, through the
    wrapper around the endpoint (which knows nothing of bursts)."""
    runtime = Runtime(settings(tmp_path))
    app = create_app(runtime=runtime)
    seen: list[int] = []

    async def receive() -> dict[str, Any]:
        seen.append(runtime.burst.in_flight)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    answers: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        answers.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/agentmail",
        "raw_path": b"/webhooks/agentmail",
        "query_string": b"",
        "headers": [(b"content-length", b"2")],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
    }
    await app(scope, receive, send)
    assert seen == [1]
    assert answers[0]["status"] == 401  # unsigned
    assert runtime.burst.in_flight == 0


async def test_a_request_that_raises_is_still_uncounted() -> None:
    burst = WebhookBurst(on_end=lambda: None)

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        assert burst.in_flight == 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await CountRequests(failing, burst)({}, None, None)  # type: ignore[arg-type]
    assert burst.in_flight == 0


def settings(tmp_path: Path) -> Settings:
    return Settings.from_environ(
        {
            "AGENTMAIL_API_KEY": "am_test",
            "AUTOREPLY_WEBHOOK_SECRET": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "AUTOREPLY_DATABASE_URL": f"sqlite:///{tmp_path / 'runtime.db'}",
        },
        dotenv=None,
    )


def test_the_runtime_wires_bursts_to_its_worker(tmp_path: Path) -> None:
    runtime = Runtime(settings(tmp_path))
    burst = runtime.burst
    burst.load = 1.0
    for _ in range(START_IN_FLIGHT):
        burst.request_started()
    assert runtime.worker.claim_limit(32) == 1
    while burst.active:
        burst.request_finished()
    assert runtime.worker.claim_limit(32) == 32
    assert runtime.worker._wakeup.is_set()  # the dispatcher looks again at once
