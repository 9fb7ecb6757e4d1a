"""Intake benchmark: durable webhook intake against a bare Starlette endpoint, in one run.

What it measures. wrk sends unique, pre-signed ``message.received`` deliveries (~1.3 KB, the
SDK's ``Message`` shape) to ``autoreply serve`` on SQLite in a real file (WAL,
``synchronous=FULL``, group commit) while the dry-run worker claims, decides, renders and
finishes jobs in the same process; and the same kind of requests to ``bench/bare_app.py``,
a Starlette route that only answers 200, on the same uvicorn settings. Rounds alternate a
bare run and a service run with the same wrk parameters, so noise on a shared machine hits
both; every run has a short warm-up, and every service round a fresh process and database.

Why. Issue 3's performance criterion: intake of unique signed deliveries at >= 30% of the
bare endpoint's requests/s, with p50/p99 acknowledgement latency and peak RSS. It also
checks durability: every delivery answered 202 must be a row in ``deliveries`` with its job
(acknowledged <= rows <= sent; the difference is what was in flight when wrk stopped).

Run: ``.venv/bin/python bench/intake.py [--duration 10] [--connections 64] [--rounds 3]``.
Needs wrk (Debian: ``apt-get install -y wrk``). Prints a Markdown table (progress goes to
stderr) and writes ``bench/results/intake-<timestamp>.json``. ``--profile out.svg`` adds
one unmeasured service run under py-spy (``.venv/bin/pip install py-spy``). Exits 1 when a
check fails (a non-202 answer, a re-sent request, rows below acknowledgements), 2 when a
tool is missing. The service's output (JSON log lines) goes to a file in the work folder,
which is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from svix.webhooks import Webhook

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
LUA = BENCH_DIR / "intake.lua"
PATH = "/webhooks/agentmail"
INBOX = "support@agentmail.to"
TARGET_RATIO = 0.30
#: Requests per wrk thread for the bare app, which may re-send them (it reads nothing).
BARE_POOL = 2000
#: Unique requests for a service run: this many times the expected count, plus a margin.
POOL_FACTOR = 2.0
POOL_MARGIN = 1000


@dataclass(frozen=True)
class Load:
    """wrk's parameters, the same for every run."""

    threads: int
    connections: int
    duration: float
    warmup: float

    def argv(self, url: str, seconds: float, workdir: Path, prefix: str) -> list[str]:
        """The wrk command line for one run of ``seconds`` over the request files ``prefix``."""
        return [
            "wrk",
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(LUA),
            url,
            "--",
            str(workdir),
            prefix,
        ]


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


# -- requests --------------------------------------------------------------------------


def event(tag: str, n: int, when: str) -> dict[str, Any]:
    """One ``message.received`` event, unique by ``tag`` and ``n``, about 1 KB as JSON."""
    message_id = f"<{tag}.{n}@mail.example.com>"
    thread_id = f"thd_{tag}_{n}"
    sender = f"Customer {n} <customer{n}@example.com>"
    subject = f"Order {n} has not arrived"
    text = (
        f"Hello, my order {n} has not arrived after two weeks. Could you tell me where it is?"
        "\n\nThanks"
    )
    return {
        "type": "event",
        "event_type": "message.received",
        "event_id": f"evt_{tag}_{n}",
        "message": {
            "inbox_id": INBOX,
            "thread_id": thread_id,
            "message_id": message_id,
            "labels": ["received", "unread"],
            "timestamp": when,
            "from": sender,
            "to": [INBOX],
            "subject": subject,
            "preview": text[:80],
            "text": text,
            "extracted_text": text,
            "headers": {"Message-ID": message_id},
            "size": 1830,
            "updated_at": when,
            "created_at": when,
        },
        "thread": {
            "inbox_id": INBOX,
            "thread_id": thread_id,
            "labels": ["received", "unread"],
            "timestamp": when,
            "senders": [sender],
            "recipients": [INBOX],
            "subject": subject,
            "last_message_id": message_id,
            "message_count": 1,
            "size": 1830,
            "updated_at": when,
            "created_at": when,
        },
    }


def write_pool(workdir: Path, prefix: str, per_thread: int, load: Load, secret: str) -> int:
    """Sign ``per_thread`` unique requests for each wrk thread, now; return the body size.

    Requests are complete raw HTTP/1.1 messages, so wrk only copies bytes. The service
    accepts a timestamp within 5 minutes, and a run lasts seconds after this.
    """
    webhook = Webhook(secret)
    now = datetime.now(UTC)
    stamp = str(math.floor(now.timestamp()))
    when = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    tag = f"{prefix}{secrets.token_hex(4)}"
    body_size = 0
    for thread in range(1, load.threads + 1):
        records: list[bytes] = []
        for n in range(per_thread):
            svix_id = f"msg_{tag}_{thread}x{n}"
            body = json.dumps(event(tag, n * load.threads + thread, when), separators=(",", ":"))
            head = (
                f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body.encode())}\r\n"
                f"svix-id: {svix_id}\r\nsvix-timestamp: {stamp}\r\n"
                f"svix-signature: {webhook.sign(svix_id, now, body)}\r\n\r\n"
            )
            raw = (head + body).encode()
            records.append(b"%d\n%s" % (len(raw), raw))
            body_size = len(body.encode())
        (workdir / f"{prefix}-{thread}.req").write_bytes(b"".join(records))
    return body_size


# -- processes -------------------------------------------------------------------------


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if this script dies, even by SIGKILL. (A preexec_fn is
    # safe here: this script starts no threads.)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A server child process: started, probed, measured through ``/proc``, always stopped."""

    def __init__(
        self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path, logfile: Path
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logfile = logfile
        with logfile.open("wb") as out:
            self.process = subprocess.Popen(
                [*argv, "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def wait_ready(self, path: str | None, timeout: float = 60.0) -> None:
        """Wait for ``GET path`` to answer 200 (or, with no path, for the port to accept)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if path is None:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                with urllib.request.urlopen(self.url + path, timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            time.sleep(0.1)
        tail = self.logfile.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.name} did not become ready; its log ends with:\n{tail}")

    def cpu_seconds(self, *, main_thread: bool = False) -> float:
        """User plus system CPU time so far: the whole process, or its main thread only.

        The main thread runs the event loop (HTTP, verification, the worker's Python);
        the service's other busy thread is SQLite's writer.
        """
        pid = self.process.pid
        stat = Path(f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat")
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        """``VmHWM``: the highest resident set size of the process so far."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) / 1024 if match else float("nan")

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL after 20 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- runs ------------------------------------------------------------------------------


def run_wrk(
    load: Load, server: Server, workdir: Path, prefix: str, seconds: float
) -> dict[str, Any]:
    """One wrk run; wrk's ``BENCH_JSON`` line plus requests/s and the CPU of both sides."""
    before_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_server = server.cpu_seconds()
    before_loop = server.cpu_seconds(main_thread=True)
    started = time.monotonic()
    completed = subprocess.run(
        load.argv(server.url + PATH, seconds, workdir, prefix),
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
        preexec_fn=_die_with_parent,
    )
    wall = time.monotonic() - started
    server_cpu = server.cpu_seconds() - before_server
    loop_cpu = server.cpu_seconds(main_thread=True) - before_loop
    after_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in completed.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}):\n{completed.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["non_2xx"] = sum(n for s, n in result["statuses"].items() if not s.startswith("2"))
    result["server_cpu_s"] = round(server_cpu, 2)
    result["server_cpu_ms_per_1k"] = round(server_cpu * 1e6 / max(result["requests"], 1), 1)
    result["event_loop_busy"] = round(loop_cpu / wall, 2)  # share of one core
    wrk_cpu = (after_wrk.ru_utime + after_wrk.ru_stime) - (
        before_wrk.ru_utime + before_wrk.ru_stime
    )
    result["wrk_cpu_s"] = round(wrk_cpu, 2)
    result["wall_s"] = round(wall, 2)
    result["wrk_text"] = completed.stdout.split("BENCH_JSON", 1)[0].rstrip()
    return result


def service_problems(result: dict[str, Any]) -> list[str]:
    """Why a service run is not a valid measurement of unique, accepted deliveries."""
    problems = []
    if result["resent"]:
        problems.append(f"{result['resent']} requests re-sent (pool too small)")
    if set(result["statuses"]) - {"202"}:
        problems.append(f"answers other than 202: {result['statuses']}")
    errors = {k: v for k, v in result["errors"].items() if v and k != "status"}
    if errors:
        problems.append(f"socket errors: {errors}")
    return problems


def db_counts(database: Path) -> dict[str, Any]:
    """Rows in ``deliveries`` and jobs by state (a plain reader; WAL does not block it)."""
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as conn:
        deliveries = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        jobs = dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    return {"deliveries": deliveries, "jobs": jobs}


def filesystem_of(path: Path) -> str:
    """The filesystem type holding ``path`` (tmpfs would make fsync free and the run moot)."""
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        point = fields[1]
        if str(path).startswith(point.rstrip("/") + "/") and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


# -- report ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    versions = {
        name: importlib.metadata.version(name)
        for name in ("uvicorn", "uvloop", "httptools", "starlette", "svix", "structlog")
    }
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "nproc": os.cpu_count(),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sqlite": sqlite3.sqlite_version,
        "wrk": (wrk_version.stdout or wrk_version.stderr).splitlines()[0],
        "packages": versions,
    }


def code_version() -> dict[str, Any]:
    """The commit, whether ``service/`` or ``handlers/`` differ from it, and what is imported."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    spec = importlib.util.find_spec("service")
    return {
        "commit": git("rev-parse", "HEAD"),
        "service_or_handlers_modified": bool(
            git("status", "--porcelain", "--", "service", "handlers")
        ),
        "service_imported_from": spec.origin if spec else None,
    }


def summarise(bare: list[dict[str, Any]], service: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds; the ratio is the median of each round's paired ratio."""

    def median(runs: list[dict[str, Any]], key: str, sub: str | None = None) -> float:
        return float(statistics.median(r[key][sub] if sub else r[key] for r in runs))

    ratios = [s["rps"] / b["rps"] for b, s in zip(bare, service, strict=True)]
    return {
        "bare_rps": median(bare, "rps"),
        "service_rps": median(service, "rps"),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "bare_p50_ms": median(bare, "latency_us", "p50") / 1000,
        "bare_p99_ms": median(bare, "latency_us", "p99") / 1000,
        "service_p50_ms": median(service, "latency_us", "p50") / 1000,
        "service_p99_ms": median(service, "latency_us", "p99") / 1000,
        "bare_non_2xx": sum(r["non_2xx"] for r in bare),
        "service_non_2xx": sum(r["non_2xx"] for r in service),
        "bare_cpu_ms_per_1k": median(bare, "server_cpu_ms_per_1k"),
        "service_cpu_ms_per_1k": median(service, "server_cpu_ms_per_1k"),
        "bare_loop_busy": median(bare, "event_loop_busy"),
        "service_loop_busy": median(service, "event_loop_busy"),
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: per-round and median figures, then the checks."""
    load, summary, checks = report["load"], report["summary"], report["checks"]
    lines = [
        f"### Intake: wrk -t{load['threads']} -c{load['connections']} -d{load['duration']:g}s"
        f" --latency, {len(report['rounds'])} rounds (warm-up {load['warmup']:g}s each)",
        "",
        "| run | bare req/s | service req/s | ratio | bare p50 / p99 ms | service p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for n, entry in enumerate(report["rounds"], 1):
        b, s = entry["bare"], entry["service"]
        lines.append(
            f"| round {n} | {b['rps']:,.0f} | {s['rps']:,.0f} | {s['rps'] / b['rps']:.0%}"
            f" | {b['latency_us']['p50'] / 1000:.1f} / {b['latency_us']['p99'] / 1000:.1f}"
            f" | {s['latency_us']['p50'] / 1000:.1f} / {s['latency_us']['p99'] / 1000:.1f} |"
        )
    lines += [
        f"| **median** | **{summary['bare_rps']:,.0f}** | **{summary['service_rps']:,.0f}**"
        f" | **{summary['ratio']:.0%}** | {summary['bare_p50_ms']:.1f} /"
        f" {summary['bare_p99_ms']:.1f} | {summary['service_p50_ms']:.1f} /"
        f" {summary['service_p99_ms']:.1f} |",
        "",
        "| | bare | service |",
        "|---|---:|---:|",
        f"| non-2xx answers (all measured runs) | {summary['bare_non_2xx']}"
        f" | {summary['service_non_2xx']} |",
        f"| server CPU per 1,000 requests (median) | {summary['bare_cpu_ms_per_1k']:.0f} ms"
        f" | {summary['service_cpu_ms_per_1k']:.0f} ms |",
        f"| event-loop thread busy (share of one core, median) | {summary['bare_loop_busy']:.0%}"
        f" | {summary['service_loop_busy']:.0%} |",
        f"| peak RSS (VmHWM) | {report['peak_rss_mib']['bare']:.0f} MiB"
        f" | {report['peak_rss_mib']['service']:.0f} MiB |",
        "",
        f"Target service >= {TARGET_RATIO:.0%} of bare: "
        f"**{'met' if summary['ratio'] >= TARGET_RATIO else 'missed'}**"
        f" (per round: {', '.join(f'{r:.0%}' for r in summary['ratios'])}).",
        f"Durability: {checks['deliveries']:,} rows in `deliveries` (and as many jobs) over"
        f" the rounds' fresh databases; the service runs, warm-ups included, got"
        f" {checks['acknowledged']:,} answers 202"
        f" of {checks['sent']:,} requests sent (the rest were in flight when wrk stopped):"
        f" **{'ok' if checks['durable'] else 'FAILED'}**.",
        "Dry-run worker at the end of each measured run (jobs by state): "
        + "; ".join(
            ", ".join(
                f"{n:,} {state}" for state, n in sorted(r["checks"]["jobs_at_end_of_run"].items())
            )
            for r in report["rounds"]
        )
        + "; times it stepped back to one job (warm-ups included): "
        + ", ".join(str(r["checks"]["worker_stepped_back"]) for r in report["rounds"])
        + ".",
    ]
    if report["problems"]:
        lines += ["", "Problems:", *(f"- {p}" for p in report["problems"])]
    return "\n".join(lines)


# -- the benchmark -------------------------------------------------------------------


class ServiceRuns:
    """wrk runs against one service process, with what it acknowledged and what was sent."""

    def __init__(self, load: Load, folder: Path, secret: str, service: Server) -> None:
        self.load, self.folder, self.secret, self.service = load, folder, secret, service
        self.sent = self.acknowledged = 0
        self.best_rps = 0.0
        self.problems: list[str] = []

    def run(
        self,
        name: str,
        seconds: float,
        expected_rps: float,
        profile: Path | None = None,
        just_before: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """A run of requests signed just before it, unique for twice ``expected_rps``.

        Optionally under py-spy (``profile``), which samples without pausing the process.
        ``just_before`` is called after the signing, as the load starts.
        """
        count = expected_rps * seconds * POOL_FACTOR + POOL_MARGIN
        per_thread = math.ceil(count / self.load.threads)
        started = time.monotonic()
        write_pool(self.folder, name, per_thread, self.load, self.secret)
        total = per_thread * self.load.threads
        log(f"  signed {total:,} requests in {time.monotonic() - started:.1f}s")
        spy = None
        if profile is not None:
            pid, duration = str(self.service.process.pid), str(math.ceil(seconds))
            spy = subprocess.Popen(
                [*py_spy_argv(profile), "--pid", pid, "--duration", duration],
                stdout=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            time.sleep(0.5)  # let py-spy attach before the load starts
        if just_before is not None:
            just_before()
        try:
            result = run_wrk(self.load, self.service, self.folder, name, seconds)
        finally:
            if spy is not None:
                spy.wait(timeout=seconds + 60)
            for thread in range(1, self.load.threads + 1):  # the pools are large
                (self.folder / f"{name}-{thread}.req").unlink(missing_ok=True)
        self.sent += result["sent"]
        self.acknowledged += result["statuses"].get("202", 0)
        self.best_rps = max(self.best_rps, result["rps"])
        self.problems.extend(f"{name}: {problem}" for problem in service_problems(result))
        return result


def service_round(
    load: Load, folder: Path, secret: str, expected_rps: float, profile: Path | None
) -> dict[str, Any]:
    """A fresh service on a fresh database: warm-up, measured run, then the database checks.

    Each round starts from an empty queue, so rounds are comparable: the backlog the
    dry-run worker cannot clear during a run does not carry over into the next.
    """
    folder.mkdir()
    database = folder / "bench.db"
    service = Server(
        "service",
        [str(Path(sys.executable).parent / "autoreply"), "serve"],
        env=service_env(database, secret),
        cwd=folder,  # so a developer's .env cannot change the service's settings
        logfile=folder / "service.log",
    )
    try:
        service.wait_ready("/readyz")
        runs = ServiceRuns(load, folder, secret, service)
        runs.run("warm", load.warmup, expected_rps)
        result = runs.run("run", load.duration, runs.best_rps)
        jobs_at_end = db_counts(database)["jobs"]
        if profile is not None:
            log(f"  one more run under py-spy, into {profile}")
            runs.run("profiled", load.duration, runs.best_rps, profile)
        peak_rss = service.peak_rss_mib()
    finally:
        service.stop()  # graceful: the worker stops, the store closes
    counts = db_counts(database)
    jobs = sum(counts["jobs"].values())
    durable = (
        runs.acknowledged <= counts["deliveries"] <= runs.sent and jobs == counts["deliveries"]
    )
    if not durable:
        runs.problems.append(
            f"{counts['deliveries']} rows in deliveries and {jobs} jobs, but"
            f" {runs.acknowledged} acknowledged and {runs.sent} sent"
        )
    checks = {
        "deliveries": counts["deliveries"],
        "jobs": jobs,
        "acknowledged": runs.acknowledged,
        "sent": runs.sent,
        "durable": durable,
        "jobs_at_end_of_run": jobs_at_end,
        "log_bytes": (folder / "service.log").stat().st_size,
        # The worker logs each webhook burst that saturates the loop (it steps back).
        "worker_stepped_back": (folder / "service.log")
        .read_text(errors="replace")
        .count('"worker_steps_back"'),
    }
    return {"result": result, "checks": checks, "peak_rss_mib": peak_rss, "problems": runs.problems}


def py_spy_argv(output: Path) -> list[str]:
    """``py-spy record`` into ``output``, in the format its suffix names."""
    formats = {".svg": "flamegraph", ".json": "speedscope"}
    fmt = formats.get(output.suffix, "raw")
    spy = py_spy() or "py-spy"
    # --gil: only samples that hold the GIL, i.e. what competes for the event loop's core.
    rate = ["--gil", "--rate", "250"]
    return [spy, "record", *rate, "--threads", "--format", fmt, "--output", str(output)]


#: Settings given with --service-env; they win over the defaults below.
EXTRA_ENV: dict[str, str] = {}


def service_env(database: Path, secret: str) -> dict[str, str]:
    """The service's environment: ours without AUTOREPLY_/AGENTMAIL_ variables, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOREPLY_", "AGENTMAIL_"))}
    return (
        env
        | {
            "AGENTMAIL_API_KEY": "am_bench",
            # A closed port: the dry-run worker sends nothing, and nothing may leave the machine.
            "AGENTMAIL_BASE_URL": f"http://127.0.0.1:{free_port()}",
            "AUTOREPLY_WEBHOOK_SECRET": secret,
            "AUTOREPLY_DATABASE_URL": f"sqlite:///{database}",
            "AUTOREPLY_DRY_RUN": "1",
            "AUTOREPLY_LOG_FORMAT": "json",
            "AUTOREPLY_SHUTDOWN_GRACE_SECONDS": "5",
        }
        | EXTRA_ENV
    )


def measure(load: Load, rounds: int, workdir: Path, profile: Path | None) -> dict[str, Any]:
    """Alternate bare runs and fresh-service rounds, then gather the report."""
    code = code_version()  # before the runs: the tree may change while they last
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    body_size = write_pool(workdir, "bare", BARE_POOL, load, secret)
    bare = Server(
        "bare app",
        [sys.executable, str(BENCH_DIR / "bare_app.py")],
        env=dict(os.environ),
        cwd=REPO,
        logfile=workdir / "bare.log",
    )
    results: list[dict[str, Any]] = []
    try:
        bare.wait_ready(None)  # its only route is a POST: wait for the port
        best = 0.0  # the best service rate so far sizes the next pools of unique requests
        for n in range(1, rounds + 1):
            log(f"round {n}: bare app on {bare.url}, warm-up then {load.duration:g}s")
            run_wrk(load, bare, workdir, "bare", load.warmup)
            bare_result = run_wrk(load, bare, workdir, "bare", load.duration)
            log(f"  {bare_result['rps']:,.0f} req/s")
            log(f"round {n}: fresh service and database, warm-up then {load.duration:g}s")
            # Until a service rate is known, size the warm-up's pool from the bare rate.
            expected = best or 0.6 * bare_result["rps"]
            last = profile if n == rounds else None
            entry = service_round(load, workdir / f"round{n}", secret, expected, last)
            best = max(best, entry["result"]["rps"])
            log(f"  {entry['result']['rps']:,.0f} req/s")
            results.append({"bare": bare_result, "service": entry.pop("result"), **entry})
        bare_peak = bare.peak_rss_mib()
    finally:
        bare.stop()
    checks = [r["checks"] for r in results]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "code": code,
        "load": load.__dict__ | {"rounds": rounds},
        "request_body_bytes": body_size,
        "database_filesystem": filesystem_of(workdir),
        "service_output": "stdout and stderr (JSON log lines) to a file in the work folder",
        "rounds": results,
        "summary": summarise([r["bare"] for r in results], [r["service"] for r in results]),
        "peak_rss_mib": {"bare": bare_peak, "service": max(r["peak_rss_mib"] for r in results)},
        "checks": {
            "durable": all(c["durable"] for c in checks),
            "deliveries": sum(c["deliveries"] for c in checks),
            "acknowledged": sum(c["acknowledged"] for c in checks),
            "sent": sum(c["sent"] for c in checks),
        },
        "profile": str(profile) if profile else None,
        "problems": [f"round {n}, {p}" for n, r in enumerate(results, 1) for p in r["problems"]],
    }


# -- main ------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """Command-line options; the defaults are the documented measurement."""
    parser = argparse.ArgumentParser(description="Intake benchmark (see the module docstring).")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (max 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3, help="bare/service pairs")
    parser.add_argument("--profile", type=Path, help="also profile one service run to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (db, logs)")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra setting for the service, repeatable (e.g. AUTOREPLY_WORKER_CONCURRENCY=4)",
    )
    args = parser.parse_args()
    for item in args.service_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith(("AUTOREPLY_", "AGENTMAIL_")):
            parser.error(f"--service-env wants AUTOREPLY_NAME=VALUE, got {item!r}")
        EXTRA_ENV[name] = value
    if not 1 <= args.duration <= 15 or not 0 < args.warmup <= 10 or args.rounds < 1:
        parser.error("--duration must be 1-15 s, --warmup 0-10 s, --rounds at least 1")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    return args


def py_spy() -> str | None:
    """py-spy from the venv or PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def main() -> int:
    """Run the benchmark; see the module docstring."""
    args = parse_args()
    if shutil.which("wrk") is None:
        log("wrk is not installed. On Debian/Ubuntu: apt-get update && apt-get install -y wrk")
        return 2
    autoreply = Path(sys.executable).parent / "autoreply"
    if not autoreply.exists():
        log(f"{autoreply} not found: run `make install` (the project installed in .venv)")
        return 2
    if args.profile and py_spy() is None:
        log("--profile needs py-spy: .venv/bin/pip install py-spy (not a project dependency)")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    load = Load(args.threads, args.connections, args.duration, args.warmup)
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="intake-", dir=RESULTS))
    try:
        report = measure(load, args.rounds, workdir, args.profile)
    finally:
        if args.keep:
            log(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"intake-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\nResults: {out.relative_to(REPO)}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
