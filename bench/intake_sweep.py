"""Intake while a catch-up sweep runs over a large backlog, against intake without one.

What it answers (issue 11): does webhook intake keep within 10% of its throughput while
the service's own sweep lists a backlog at the same time?

Setup. ``autoreply sandbox`` runs as a child process with no webhook and ``--messages``
received emails in ``demo@agentmail.to`` (injected once), and a latency fault on every
AgentMail operation. Each run is a fresh ``autoreply serve`` (dry run, SQLite file) whose
AgentMail is that sandbox:

* **with sweep**: ``AUTOREPLY_SWEEP_INTERVAL=10m`` and the inbox's mark set, before the
  service starts, just before the first email; the service's first pass (at start-up)
  lists the whole backlog and enqueues a job for every message, and the dry-run worker
  fetches each swept message from the sandbox (a list item has no body) and decides it;
* **without**: ``AUTOREPLY_SWEEP_INTERVAL=0``, otherwise the same.

The wrk requests, the wrk script, the service's settings and the measurement of a run are
``bench/intake.py``'s (imported, not copied). Two loads: ``burst`` (``--connections``,
default 64, the intake benchmark's; the service detects a webhook burst and its worker
steps back to one job, the sweep pass already started goes on) and ``moderate``
(``--moderate-connections``, default 8, each connection pausing ``--pause-ms``, default
10, before each request with ``bench/intake_paced.lua``: about 650 requests/s, fewer in
progress than a burst needs, so nothing steps back and the sweep runs at full pace).
Each pair runs both variants back to back, alternating which goes first. For each run:
requests/s, p50/p99, service CPU per 1,000 requests (the sweep's and the worker's CPU
included), the sandbox's CPU, and how far the sweep got during the measured run (jobs it
had enqueued at the start and at the end of wrk's run).

Run: ``.venv/bin/python bench/intake_sweep.py [--pairs 3] [--messages 10000]
[--latency-ms 50] [--duration 10]``. Prints Markdown, writes
``bench/results/intake-sweep-<timestamp>.json``; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e import autoreply  # bench/ is the script's folder
from intake import (
    RESULTS,
    Load,
    Server,
    ServiceRuns,
    code_version,
    db_counts,
    log,
    machine,
    service_env,
)
from sweep import INBOX, fill_sandbox

from handlers.sweep import first_mark
from service.store import open_store

TARGET = 0.90
PACED_LUA = Path(__file__).resolve().parent / "intake_paced.lua"


@dataclass(frozen=True)
class PacedLoad(Load):
    """``Load`` with each connection pausing ``pause_ms`` before each request."""

    pause_ms: int = 0

    def argv(self, url: str, seconds: float, workdir: Path, prefix: str) -> list[str]:
        """``Load.argv`` with the pacing script and its pause."""
        argv = super().argv(url, seconds, workdir, prefix)
        if not self.pause_ms:
            return argv
        argv[argv.index("-s") + 1] = str(PACED_LUA)
        return [*argv, str(self.pause_ms)]


async def set_mark(database: Path, at: float) -> None:
    """Create the database and put the inbox's mark at ``at`` (what a sweep resumes from)."""
    store = open_store(f"sqlite:///{database}")
    await store.open()
    try:
        await store.set_mark(INBOX, first_mark(at), time.time())
    finally:
        await store.close()


def sweep_progress(database: Path) -> dict[str, int]:
    """Jobs the sweep has enqueued so far, and how many of them the worker has finished."""
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as conn:
        enqueued, finished = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state NOT IN ('queued', 'running'))"
            " FROM jobs WHERE source = 'sweep'"
        ).fetchone()
    return {"enqueued": enqueued, "finished": finished}


def log_events(logfile: Path) -> dict[str, Any]:
    """The service log's step-backs, the sweep's waits for intake, and its sweep line
    (a pass that ended), if any."""
    steps_back, waits, sweep = 0, 0, None
    for line in logfile.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == "worker_steps_back":
                steps_back += 1
            elif entry.get("event") == "sweep_waits_for_intake":
                waits += 1
            elif entry.get("event") == "sweep":
                sweep = {k: entry.get(k) for k in ("outcome", "scanned", "enqueued", "duration_ms")}
    return {"worker_stepped_back": steps_back, "sweep_waited": waits, "sweep_log": sweep}


def one_run(
    load: Load,
    folder: Path,
    secret: str,
    sandbox: Server,
    backlog_start: float | None,
    expected_rps: float,
) -> dict[str, Any]:
    """A fresh service (with a sweep when ``backlog_start`` is set): warm-up, measured run."""
    folder.mkdir()
    database = folder / "bench.db"
    if backlog_start is not None:
        asyncio.run(set_mark(database, backlog_start))
    env = service_env(database, secret) | {
        "AGENTMAIL_BASE_URL": sandbox.url,
        "AGENTMAIL_API_KEY": "am_sandbox",
        "AUTOREPLY_SWEEP_INTERVAL": "10m" if backlog_start is not None else "0",
    }
    service = Server(
        "service",
        [*autoreply(), "serve"],
        env=env,
        cwd=folder,
        logfile=folder / "service.log",
    )
    try:
        service.wait_ready("/readyz")
        runs = ServiceRuns(load, folder, secret, service)
        runs.run("warm", load.warmup, expected_rps)
        before: dict[str, int] = {}
        sandbox_cpu = 0.0

        def starting() -> None:
            nonlocal sandbox_cpu
            before.update(sweep_progress(database))
            sandbox_cpu = sandbox.cpu_seconds()

        result = runs.run(
            "run", load.duration, max(runs.best_rps, expected_rps), just_before=starting
        )
        result["sandbox_cpu_s"] = round(sandbox.cpu_seconds() - sandbox_cpu, 2)
        after = sweep_progress(database)
    finally:
        service.stop()
    counts = db_counts(database)
    webhook_jobs = sum(counts["jobs"].values()) - after["enqueued"]
    if not runs.acknowledged <= counts["deliveries"] <= runs.sent:
        runs.problems.append(
            f"{counts['deliveries']} deliveries for {runs.acknowledged} acknowledged"
        )
    if webhook_jobs < counts["deliveries"]:
        runs.problems.append(f"{webhook_jobs} webhook jobs for {counts['deliveries']} deliveries")
    return {
        "result": result,
        "sweep": {"before": before, "after": after, **log_events(folder / "service.log")},
        "problems": runs.problems,
    }


def summary_row(pair: int, first: str, without: dict[str, Any], with_: dict[str, Any]) -> str:
    """One Markdown row of a pair."""
    w, s = without["result"], with_["result"]
    sweep = with_["sweep"]
    b, a = sweep["before"], sweep["after"]

    def lat(r: dict[str, Any]) -> str:
        return f"{r['latency_us']['p50'] / 1000:.1f} / {r['latency_us']['p99'] / 1000:.1f}"

    return (
        f"| {pair} ({first} first) | {w['rps']:,.0f} | {s['rps']:,.0f} | {s['rps'] / w['rps']:.0%}"
        f" | {lat(w)} | {lat(s)}"
        f" | {w['server_cpu_ms_per_1k']:.0f} / {s['server_cpu_ms_per_1k']:.0f}"
        f" | {w['sandbox_cpu_s']:.1f} / {s['sandbox_cpu_s']:.1f}"
        f" | {a['enqueued'] - b['enqueued']:,} ({b['enqueued']:,} → {a['enqueued']:,})"
        f" | {a['finished'] - b['finished']:,}"
        f" | {without['sweep']['worker_stepped_back']} / {sweep['worker_stepped_back']}"
        f" | {sweep.get('sweep_waited', 0)} |"
    )


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: one table per load, the medians and the verdict."""
    lines = []
    for name, level in report["levels"].items():
        load = level["load"]
        lines += [
            f"#### {name}: wrk -t{load['threads']} -c{load['connections']}"
            f" -d{load['duration']:g}s (warm-up {load['warmup']:g}s)"
            + (f", {load['pause_ms']} ms pause before each request" if load["pause_ms"] else ""),
            "",
            "| pair | without req/s | with req/s | ratio | without p50 / p99 ms"
            " | with p50 / p99 ms | CPU ms per 1,000 req: without / with"
            " | sandbox CPU s: without / with | swept during the run (jobs at start → end)"
            " | swept jobs finished during the run | worker stepped back: without / with"
            " | sweep waited for intake |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n, pair in enumerate(level["pairs"], 1):
            lines.append(summary_row(n, pair["first"], pair["without"], pair["with"]))
        ratios = level["ratios"]
        lines += [
            "",
            f"Median ratio {statistics.median(ratios):.0%} (per pair:"
            f" {', '.join(f'{r:.0%}' for r in ratios)});"
            f" the 10% bound (with >= {TARGET:.0%} of without):"
            f" **{'holds' if statistics.median(ratios) >= TARGET else 'missed'}**.",
            "",
        ]
    if report["problems"]:
        lines += ["Problems:", *(f"- {p}" for p in report["problems"])]
    return "\n".join(lines)


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Fill the sandbox, then run the pairs of each load."""
    code = code_version()
    loadavg_before = os.getloadavg()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    sandbox = Server(
        "sandbox",
        [*autoreply(), "sandbox", "--log-level", "warning"],
        env={k: v for k, v in os.environ.items() if not k.startswith(("AGENTMAIL_", "AUTOREPLY_"))},
        cwd=workdir,
        logfile=workdir / "sandbox.log",
    )
    levels: dict[str, Any] = {}
    problems: list[str] = []
    try:
        sandbox.wait_ready("/_sandbox/info")
        began = time.monotonic()
        start = asyncio.run(fill_sandbox(sandbox.url, args.messages, args.latency_ms))
        log(f"{args.messages:,} emails injected in {time.monotonic() - began:.0f}s")
        for name, connections in (
            ("burst", args.connections),
            ("moderate", args.moderate_connections),
        ):
            pause = 0 if name == "burst" else args.pause_ms
            load = PacedLoad(2, connections, args.duration, args.warmup, pause)
            expected, pairs = 6000.0, []
            for n in range(1, args.pairs + 1):
                order = ["without", "with"] if n % 2 else ["with", "without"]
                pair: dict[str, Any] = {"first": order[0]}
                for variant in order:
                    log(f"{name} pair {n}: {variant} sweep")
                    entry = one_run(
                        load,
                        workdir / f"{name}-{n}-{variant}",
                        secret,
                        sandbox,
                        start if variant == "with" else None,
                        expected,
                    )
                    expected = max(expected, entry["result"]["rps"])
                    log(f"  {entry['result']['rps']:,.0f} req/s, sweep {entry['sweep']}")
                    problems += [f"{name} pair {n} {variant}: {p}" for p in entry["problems"]]
                    pair[variant] = entry
                pairs.append(pair)
            levels[name] = {
                "load": load.__dict__,
                "pairs": pairs,
                "ratios": [
                    p["with"]["result"]["rps"] / p["without"]["result"]["rps"] for p in pairs
                ],
            }
    finally:
        sandbox.stop()
    for level in levels.values():
        for pair in level["pairs"]:
            for entry in (pair["with"], pair["without"]):
                entry["result"].pop("wrk_text", None)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "loadavg_before_after": [loadavg_before, os.getloadavg()],
        "code": code,
        "messages": args.messages,
        "latency_ms": args.latency_ms,
        "levels": levels,
        "problems": problems,
    }


def main() -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="with/without pairs per load")
    parser.add_argument("--messages", type=int, default=10_000, help="the sweep's backlog")
    parser.add_argument("--latency-ms", type=int, default=50, help="on every AgentMail call")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run")
    parser.add_argument("--connections", type=int, default=64, help="the burst load")
    parser.add_argument("--moderate-connections", type=int, default=8, help="no burst")
    parser.add_argument(
        "--pause-ms", type=int, default=10, help="moderate load: pause before each request"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        log("wrk is not installed. On Debian/Ubuntu: apt-get update && apt-get install -y wrk")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="intake-sweep-", dir=RESULTS))
    try:
        report = measure(args, workdir)
    finally:
        if args.keep:
            log(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    out = RESULTS / f"intake-sweep-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\nResults: {out.relative_to(RESULTS.parent.parent)}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
