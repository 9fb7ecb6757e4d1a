"""What each step of the webhook path costs under load: the bare endpoint, step by step.

``bench/intake.py`` compares the whole service with a bare endpoint. This takes the path
apart: ``bench/steps_app.py`` runs with a growing set of steps (read the body, verify,
parse, log, ...), each under the same wrk load as the intake benchmark, in rounds that
alternate the variants. The differences between neighbours are what a step costs on a
busy event loop, which is two to three times what it costs in a tight loop.

Run: ``.venv/bin/python bench/steps.py [--rounds 2] [--duration 5]``; needs wrk. Prints a
Markdown table of requests/s and server CPU per request, medians over the rounds.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from intake import BENCH_DIR, REPO, Load, Server, log, run_wrk, write_pool

#: The variants: name, steps, and the variant the step's cost is measured against.
VARIANTS = (
    ("bare", "", None),
    ("+ read body", "read", "bare"),
    ("+ svix verify", "read,svix", "+ read body"),
    ("read + service verifier", "read,verifier", "+ read body"),
    ("+ parse", "read,verifier,parse", "read + service verifier"),
    ("+ counter + JSON body", "read,verifier,parse,metrics,body", "+ parse"),
    ("+ INFO log line", "read,verifier,parse,metrics,body,log", "+ counter + JSON body"),
)


def main() -> int:
    """Measure every variant ``--rounds`` times; print medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        log("wrk is not installed. On Debian/Ubuntu: apt-get update && apt-get install -y wrk")
        return 2
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    load = Load(threads=2, connections=64, duration=args.duration, warmup=1.0)
    workdir = Path(tempfile.mkdtemp(prefix="steps-"))
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in VARIANTS}
    try:
        # Nothing here is recorded, so one pool may be sent again and again.
        write_pool(workdir, "steps", 4000, load, secret)
        for round_no in range(1, args.rounds + 1):
            for name, steps, _ in VARIANTS:
                env = dict(os.environ, STEPS=steps, SECRET=secret, PYTHONPATH=str(REPO))
                server = Server(
                    name,
                    [sys.executable, str(BENCH_DIR / "steps_app.py")],
                    env=env,
                    cwd=workdir,
                    logfile=workdir / "server.log",
                )
                try:
                    server.wait_ready(None)
                    run_wrk(load, server, workdir, "steps", load.warmup)
                    result = run_wrk(load, server, workdir, "steps", load.duration)
                finally:
                    server.stop()
                if result["non_2xx"]:
                    log(f"{name}: {result['non_2xx']} answers other than 2xx")
                    return 1
                results[name].append((result["rps"], result["server_cpu_ms_per_1k"]))
                log(f"round {round_no}: {name}: {result['rps']:,.0f} req/s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"### Request-path steps: wrk -t2 -c64 -d{args.duration:g}s, {args.rounds} rounds")
    print()
    print("| variant | req/s | CPU µs per request | step's cost µs | against |")
    print("|---|---:|---:|---:|---|")
    cpu = {name: statistics.median(c for _, c in runs) for name, runs in results.items()}
    for name, _, base in VARIANTS:
        rps = statistics.median(r for r, _ in results[name])
        step = "" if base is None else f"{cpu[name] - cpu[base]:+.0f}"
        print(f"| {name} | {rps:,.0f} | {cpu[name]:.0f} | {step} | {base or ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
