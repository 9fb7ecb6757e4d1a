"""What one catch-up sweep costs: N received messages, every API call slowed.

Starts ``autoreply sandbox`` as a child process (no webhook: nothing is delivered, so
every message is one the sweep must find), injects N emails, adds a latency fault to
every AgentMail operation, and runs ``service.sweep.Sweeper`` in this process on a fresh
SQLite file with the inbox's mark set just before the first email. Reports the API
calls and the time of the first pass (every message enqueued) and of a second one over
the same messages (every message found with its job: the steady state of a deployment
whose sweep lists a backlog again), and checks that each message has exactly one job.

    .venv/bin/python bench/sweep.py [--messages 10000] [--latency-ms 50]

Intake throughput during a sweep: bench/intake_sweep.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from e2e import autoreply, free_port, wait_http  # bench/ is the script's folder

from handlers.sweep import first_mark
from service.agentmail_api import AgentMailApi
from service.agentmail_port import MessagePage
from service.sandbox import AsyncSandboxClient
from service.store import open_store
from service.sweep import Sweeper

INBOX = "demo@agentmail.to"


class Counting:
    """The real adapter, counting the list calls the sweep makes."""

    def __init__(self, api: AgentMailApi) -> None:
        self.api = api
        self.calls = 0

    async def list_inbox_ids(self) -> list[str]:
        self.calls += 1
        return await self.api.list_inbox_ids()

    async def list_received(self, inbox_id: str, **kwargs: Any) -> MessagePage:
        self.calls += 1
        return await self.api.list_received(inbox_id, **kwargs)


async def fill_sandbox(url: str, count: int, latency_ms: int) -> float:
    """Inject ``count`` emails, then slow every operation; return a time before the first."""
    async with AsyncSandboxClient(url, timeout=60) as admin:
        start = time.time() - 1
        semaphore = asyncio.Semaphore(16)

        async def inject(i: int) -> None:
            async with semaphore:
                await admin.inject(
                    inbox_id=INBOX, from_=f"sender{i}@example.com", subject=f"#{i}", text="Hi"
                )

        await asyncio.gather(*(inject(i) for i in range(count)))
        if latency_ms:
            await admin.add_fault("*", latency_ms=latency_ms)
    return start


async def measure(sandbox_url: str, folder: Path, count: int, latency_ms: int) -> dict[str, Any]:
    """Inject, then time two passes."""
    began = time.perf_counter()
    start = await fill_sandbox(sandbox_url, count, latency_ms)
    inject_s = time.perf_counter() - began

    store = open_store(f"sqlite:///{folder / 'sweep.db'}")
    await store.open()
    api = AgentMailApi(api_key="am_sandbox", base_url=sandbox_url, timeout=60)
    try:
        # The mark a first look just before the first email would have set.
        await store.set_mark(INBOX, first_mark(start), time.time())
        passes = []
        for name in ("first pass (all new)", "second pass (all known)"):
            counting = Counting(api)
            sweeper = Sweeper(
                store=store, api=counting, inbox_ids=(INBOX,), replied_label="replied"
            )
            began = time.perf_counter()
            report = await sweeper.sweep()
            seconds = time.perf_counter() - began
            passes.append(
                {
                    "pass": name,
                    "seconds": round(seconds, 2),
                    "api_calls": counting.calls,
                    "messages_per_second": round(report.totals()["scanned"] / seconds),
                    **report.totals(),
                }
            )
        stats = await store.stats(now=time.time())
    finally:
        await api.aclose()
        await store.close()
    jobs = sum(stats.by_state.values())
    return {
        "messages": count,
        "latency_ms": latency_ms,
        "inject_seconds": round(inject_s, 1),
        "passes": passes,
        "jobs": jobs,
        "exactly_one_job_each": jobs == count,
    }


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Start the sandbox, measure, stop it whatever happens."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTMAIL_", "AUTOREPLY_"))}
    with (folder / "sandbox.log").open("wb") as log:
        process = subprocess.Popen(
            [*autoreply(), "sandbox", "--port", str(port), "--log-level", "warning"],
            env=clean,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"{url}/_sandbox/info")
            return asyncio.run(measure(url, folder, args.messages, args.latency_ms))
        finally:
            process.terminate()
            process.wait(timeout=30)


def main() -> int:
    """Run once and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        result = run(args, Path(tmp))
    result["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": datetime.now().isoformat(timespec="seconds"),
    }
    print(json.dumps(result, indent=2))
    return 0 if result["exactly_one_job_each"] else 1


if __name__ == "__main__":
    sys.exit(main())
