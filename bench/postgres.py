"""Scale-out benchmark: SQLite vs PostgreSQL, one replica vs three, intake and end to end.

Three configurations, measured in the same run on the same machine, alternating within
each round so that noise on a shared machine hits all of them:

* ``sqlite x1``: one ``autoreply serve`` on SQLite (WAL, ``synchronous=FULL``);
* ``postgres x1``: one replica on PostgreSQL (a fresh schema on ``--postgres``);
* ``postgres x3``: three replicas on one PostgreSQL schema.

Intake: wrk sends unique, pre-signed ``message.received`` deliveries (bench/intake.py's
requests, wrk script and helpers, imported from it) to each replica with the dry-run worker
claiming and finishing every job. With three replicas, one wrk per replica runs at the
same time with a third of the connections each, which is a load balancer that costs
nothing; requests/s are summed. Every 202 must be a row in ``deliveries``.

End to end: a sandbox (``autoreply sandbox``) with ``--latency-ms`` (200 ms by default, so
the workers' concurrency limits, not the injection rate) on every AgentMail call; N emails
injected; each replica registers ``AUTOREPLY_PUBLIC_URL`` = a small load
balancer (tests/support/balancer.py) that sends each delivery to a random replica;
bench/e2e.py's ``measure`` waits until every message is replied to and relabelled and
checks that each got exactly one reply.

Run (needs wrk and a PostgreSQL; nothing else may be using the CPU)::

    .venv/bin/python bench/postgres.py [--rounds 3] [--duration 8] [--messages 600]

Prints a Markdown report (progress on stderr) and writes
``bench/results/postgres-<timestamp>.json``. Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import e2e
import intake
import psycopg

from service.settings import Settings

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))  # the load balancer lives with the test support code

from tests.support.balancer import Balancer  # noqa: E402
from tests.support.server import serve  # noqa: E402

RESULTS = BENCH_DIR / "results"
AUTOREPLY = str(Path(sys.executable).parent / "autoreply")
#: The first warm-up's request pool is sized for this rate; later pools for the best seen.
FIRST_GUESS_RPS = 1500.0


@dataclass(frozen=True)
class Config:
    """One way of running the service."""

    name: str
    database: str  # "sqlite" or "postgres"
    replicas: int


CONFIGS = (
    Config("sqlite x1", "sqlite", 1),
    Config("postgres x1", "postgres", 1),
    Config("postgres x3", "postgres", 3),
)


# -- databases -------------------------------------------------------------------------


class Databases:
    """Fresh databases for each run: an SQLite file, or a PostgreSQL schema (dropped later)."""

    def __init__(self, postgres_url: str, folder: Path) -> None:
        self.postgres_url = postgres_url
        self.folder = folder
        self.schemas: list[str] = []

    def fresh(self, config: Config, tag: str) -> str:
        if config.database == "sqlite":
            return f"sqlite:///{self.folder / f'{tag}-{uuid.uuid4().hex[:10]}.db'}"
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.postgres_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"'.encode())
        self.schemas.append(schema)
        options = quote(f"-csearch_path={schema}", safe="")
        separator = "&" if "?" in self.postgres_url else "?"
        return f"{self.postgres_url}{separator}options={options}"

    def drop_all(self) -> None:
        with psycopg.connect(self.postgres_url, autocommit=True) as conn:
            for schema in self.schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())

    def describe(self) -> dict[str, Any]:
        """The PostgreSQL server and the settings that decide commit cost."""
        with psycopg.connect(self.postgres_url) as conn:
            return {
                name: str(row[0])
                for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
                if (row := conn.execute(f"SHOW {name}".encode()).fetchone()) is not None
            }


def counts(url: str) -> tuple[int, int]:
    """Rows in ``deliveries`` and in ``jobs`` of the database behind ``url``."""
    sql = "SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM jobs)"
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            row = conn.execute(sql).fetchone()
    else:
        with psycopg.connect(url) as conn:
            row = conn.execute(sql.encode()).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# -- intake ----------------------------------------------------------------------------


def intake_run(
    config: Config, url: str, load: intake.Load, secret: str, folder: Path, best: float
) -> dict[str, Any]:
    """Start the replicas, warm up, measure one wrk run per replica at once, check, stop."""
    per_replica = intake.Load(
        threads=load.threads if config.replicas == 1 else 1,
        connections=math.ceil(load.connections / config.replicas),
        duration=load.duration,
        warmup=load.warmup,
    )
    servers = []
    try:
        for n in range(config.replicas):
            env = intake.service_env(folder / "unused.db", secret)
            env["AUTOREPLY_DATABASE_URL"] = url
            servers.append(
                intake.Server(
                    f"replica {n}",
                    [AUTOREPLY, "serve"],
                    env=env,
                    cwd=folder,
                    logfile=folder / f"intake-{n}.log",
                )
            )
        for server in servers:
            server.wait_ready("/readyz")
        warm = wrk_all(per_replica, servers, folder, secret, "warm", load.warmup, best)
        best = max(best, warm["rps"])
        result = wrk_all(per_replica, servers, folder, secret, "run", load.duration, best)
    finally:
        for server in servers:
            server.stop()
    deliveries, jobs = counts(url)
    acknowledged = warm["acknowledged"] + result["acknowledged"]
    sent = warm["sent"] + result["sent"]
    result["durable"] = acknowledged <= deliveries <= sent and jobs == deliveries
    if not result["durable"]:
        result["problems"].append(
            f"{deliveries} deliveries rows, {jobs} jobs; {acknowledged} acknowledged, {sent} sent"
        )
    result["deliveries_rows"] = deliveries
    return result


def wrk_all(
    load: intake.Load,
    servers: list[intake.Server],
    folder: Path,
    secret: str,
    name: str,
    seconds: float,
    expected_rps: float,
) -> dict[str, Any]:
    """Sign a unique pool per replica, then one wrk per replica, all started together."""
    count = (expected_rps or FIRST_GUESS_RPS) * seconds * 2 / len(servers) + 1000
    per_thread = math.ceil(count / load.threads)
    for n in range(len(servers)):
        intake.write_pool(folder, f"{name}{n}", per_thread, load, secret)
    results: list[dict[str, Any]] = [{} for _ in servers]
    errors: list[BaseException] = []
    load_before = os.getloadavg()[0]
    postgres_before = postgres_cpu_seconds()

    def one(n: int) -> None:
        try:
            results[n] = intake.run_wrk(load, servers[n], folder, f"{name}{n}", seconds)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(servers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n in range(len(servers)):
        for thread in range(1, load.threads + 1):
            (folder / f"{name}{n}-{thread}.req").unlink(missing_ok=True)
    postgres_cpu = postgres_cpu_seconds() - postgres_before
    if errors:
        raise errors[0]
    problems = [
        f"{name}{n}: {p}" for n, r in enumerate(results) for p in intake.service_problems(r)
    ]
    p50 = [r["latency_us"]["p50"] / 1000 for r in results]
    p99 = [r["latency_us"]["p99"] / 1000 for r in results]
    return {
        "rps": sum(r["rps"] for r in results),
        "per_replica_rps": [round(r["rps"]) for r in results],
        "p50_ms": max(p50),
        "p99_ms": max(p99),
        "acknowledged": sum(r["statuses"].get("202", 0) for r in results),
        "sent": sum(r["sent"] for r in results),
        "server_cpu_ms_per_1k": round(
            sum(r["server_cpu_s"] for r in results)
            * 1e6
            / max(1, sum(r["requests"] for r in results)),
            1,
        ),
        "postgres_cpu_ms_per_1k": round(
            postgres_cpu * 1e6 / max(1, sum(r["requests"] for r in results)), 1
        ),
        "loadavg_1m_before": load_before,
        "problems": problems,
    }


# -- end to end ------------------------------------------------------------------------


def e2e_run(
    config: Config, url: str, folder: Path, messages: int, latency_ms: int
) -> dict[str, Any]:
    """Sandbox, balancer and replicas; N emails through them; exactly-once checked."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTMAIL_", "AUTOREPLY_"))}
    sandbox_port = e2e.free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    processes: list[subprocess.Popen[bytes]] = []
    balancer = Balancer()

    def start(argv: list[str], env: dict[str, str], log: str) -> None:
        with (folder / log).open("wb") as out:
            processes.append(
                subprocess.Popen(argv, env=env, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
            )

    try:
        with serve(balancer.app) as server:
            start([AUTOREPLY, "sandbox", "--port", str(sandbox_port)], clean, "sandbox.log")
            e2e.wait_http(f"{sandbox_url}/_sandbox/info")
            env = {
                **clean,
                "AGENTMAIL_API_KEY": "am_sandbox",
                "AGENTMAIL_BASE_URL": sandbox_url,
                "AUTOREPLY_PUBLIC_URL": server.url,
                "AUTOREPLY_DATABASE_URL": url,
                "AUTOREPLY_LOG_FORMAT": "json",
                "AUTOREPLY_LOG_LEVEL": "WARNING",
            }
            replicas = []
            for n in range(config.replicas):
                port = e2e.free_port()
                replicas.append(f"http://127.0.0.1:{port}")
                argv = [AUTOREPLY, "serve", "--host", "127.0.0.1", "--port", str(port)]
                start(argv, env, f"replica-{n}.log")
            balancer.backends = replicas
            for replica in replicas:
                e2e.wait_http(f"{replica}/readyz", 60)
            load_before = os.getloadavg()[0]
            cpu_before = [cpu_seconds(p.pid) for p in processes]
            started = time.monotonic()
            result = asyncio.run(e2e.measure(sandbox_url, messages, latency_ms))
            wall = time.monotonic() - started
            cpu = [cpu_seconds(p.pid) - b for p, b in zip(processes, cpu_before, strict=True)]
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    result["loadavg_1m_before"] = load_before
    # Share of one core each process used during the measurement: where the time went.
    result["cpu_share_sandbox"] = round(cpu[0] / wall, 2)
    result["cpu_share_replicas"] = [round(c / wall, 2) for c in cpu[1:]]
    result["forwarded_per_replica"] = sorted(balancer.forwarded.values())
    result.pop("api_calls", None)
    return result


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time so far of every PostgreSQL server process on the machine (its backends).

    Counts the machine's whole cluster; during a run nothing else of note uses it.
    """
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended
        name, rest = text.split("(", 1)[1].rsplit(")", 1)
        if name == "postgres":
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


# -- report ----------------------------------------------------------------------------


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def markdown(report: dict[str, Any]) -> str:
    """The figures as Markdown tables: per round, then medians."""
    load, args = report["load"], report["args"]
    lines = [
        f"Intake: wrk, {load['connections']} connections in total (one wrk per replica with a"
        f" share of them), {args['duration']:g} s per run after a {args['warmup']:g} s warm-up,"
        f" dry-run worker. End to end: {args['messages']} emails, {args['latency_ms']} ms on"
        f" every sandbox API call, worker concurrency {report['worker_concurrency']} per replica"
        " (the default).",
        "",
        "| configuration | intake req/s (median) | per round | p50 / p99 ms"
        " | CPU ms per 1k req: service / PostgreSQL"
        " | end to end replies/s (median) | per round | reply latency p50 / p99 s"
        " | e2e CPU, cores: sandbox / replicas |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config in CONFIGS:
        intake_runs = report["intake"][config.name]
        e2e_runs = report["e2e"][config.name]
        intake_rounds = ", ".join(f"{r['rps']:,.0f}" for r in intake_runs)
        e2e_rounds = ", ".join(f"{r['replies_per_s']:,.1f}" for r in e2e_runs)
        lines.append(
            f"| {config.name} | **{median(intake_runs, 'rps'):,.0f}** | {intake_rounds}"
            f" | {median(intake_runs, 'p50_ms'):.1f} / {median(intake_runs, 'p99_ms'):.1f}"
            f" | {median(intake_runs, 'server_cpu_ms_per_1k'):.0f}"
            f" / {median(intake_runs, 'postgres_cpu_ms_per_1k'):.0f}"
            f" | **{median(e2e_runs, 'replies_per_s'):,.1f}** | {e2e_rounds}"
            f" | {median(e2e_runs, 'latency_p50_s'):.2f}"
            f" / {median(e2e_runs, 'latency_p99_s'):.2f}"
            f" | {statistics.median(r['cpu_share_sandbox'] for r in e2e_runs):.2f}"
            f" / {statistics.median(sum(r['cpu_share_replicas']) for r in e2e_runs):.2f} |"
        )
    checks = report["checks"]
    lines += [
        "",
        "Checks: every 202 is a row in `deliveries`:"
        f" **{'ok' if checks['durable'] else 'FAILED'}**; every email got exactly one reply:"
        f" **{'ok' if checks['exactly_once'] else 'FAILED'}**.",
        f"1-minute load average before the runs: {checks['loadavg_range']}.",
    ]
    if report["problems"]:
        lines += ["", "Problems:", *(f"- {p}" for p in report["problems"])]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Scale-out benchmark (see the module docstring).")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL database to create throwaway schemas in",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per intake run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (one replica)")
    parser.add_argument("--messages", type=int, default=600, help="emails per end-to-end run")
    parser.add_argument("--latency-ms", type=int, default=200, help="per sandbox API call")
    parser.add_argument("--skip-intake", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None and not args.skip_intake:
        intake.log("wrk is not installed (Debian: apt-get install -y wrk)")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    RESULTS.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="postgres-", dir=RESULTS))
    databases = Databases(args.postgres, folder)
    load = intake.Load(args.threads, args.connections, args.duration, args.warmup)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "args": vars(args),
        "load": load.__dict__,
        "machine": intake.machine(),
        "postgres": databases.describe(),
        "worker_concurrency": Settings.__dataclass_fields__["worker_concurrency"].default,
        "intake": {c.name: [] for c in CONFIGS},
        "e2e": {c.name: [] for c in CONFIGS},
        "problems": [],
    }
    best = {c.name: 0.0 for c in CONFIGS}
    try:
        for n in range(1, args.rounds + 1):
            for config in CONFIGS:
                if not args.skip_intake:
                    intake.log(f"round {n}: intake, {config.name}")
                    run_folder = folder / f"intake-{n}-{config.replicas}-{config.database}"
                    run_folder.mkdir()
                    url = databases.fresh(config, "intake")
                    result = intake_run(config, url, load, secret, run_folder, best[config.name])
                    best[config.name] = max(best[config.name], result["rps"])
                    intake.log(f"  {result['rps']:,.0f} req/s {result['per_replica_rps']}")
                    report["intake"][config.name].append(result)
                    report["problems"] += [f"{config.name}: {p}" for p in result["problems"]]
                if not args.skip_e2e:
                    intake.log(f"round {n}: end to end, {config.name}")
                    run_folder = folder / f"e2e-{n}-{config.replicas}-{config.database}"
                    run_folder.mkdir()
                    url = databases.fresh(config, "e2e")
                    result = e2e_run(config, url, run_folder, args.messages, args.latency_ms)
                    intake.log(f"  {result['replies_per_s']} replies/s")
                    report["e2e"][config.name].append(result)
    finally:
        databases.drop_all()
        shutil.rmtree(folder, ignore_errors=True)
    intake_runs = [r for runs in report["intake"].values() for r in runs]
    e2e_runs = [r for runs in report["e2e"].values() for r in runs]
    loads = [r["loadavg_1m_before"] for r in intake_runs + e2e_runs]
    report["checks"] = {
        "durable": all(r["durable"] for r in intake_runs),
        "exactly_once": all(
            r["messages_with_exactly_one_reply"] == r["messages"] == r["replies_sent"]
            for r in e2e_runs
        ),
        "loadavg_range": f"{min(loads):.1f} to {max(loads):.1f}" if loads else "n/a",
    }
    if not report["checks"]["exactly_once"]:
        report["problems"].append("an end-to-end run did not reply exactly once per message")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"postgres-{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if intake_runs and e2e_runs:
        print(markdown(report))
    print(f"\nResults: {out.relative_to(REPO)}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
