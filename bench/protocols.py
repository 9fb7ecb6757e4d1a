"""What the HTTP protocol costs: the bare endpoint on uvicorn's httptools, on the service's
limited subclass of it, and on h11 (which bounds heads itself, ``h11_max_incomplete_event_size``).

Why. The service bounds request heads, their time and connections in a subclass of
uvicorn's httptools protocol (``service/http_limits.py``). This measures what that costs
per request against uvicorn's own class, and what switching to h11 would have cost
instead, with nothing else in the path: ``bench/bare_app.py``'s route, which answers 200
without reading, on ``service.server.uvicorn_config`` with only ``http`` changed.

Run: ``.venv/bin/python bench/protocols.py [--rounds 4] [--duration 8] [PROTOCOL ...]``
(protocols: ``httptools``, ``limited``, ``h11``; all three by default). Rounds alternate
the protocols, reversing their order every other round, each run on a fresh server after
a 2 s warm-up of ``wrk -t2 -c64`` with a webhook-sized POST (1,299-byte body, Svix's
headers). Prints requests/s and server CPU per request (``/proc/<pid>/stat``) per run and
their medians. Needs wrk.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROTOCOLS = ("httptools", "limited", "h11")

SERVER = """
import sys
sys.path.insert(0, {bench!r})
import uvicorn
from bare_app import app
from service.server import uvicorn_config
port, protocol = int(sys.argv[1]), sys.argv[2]
config = uvicorn_config(app, host="127.0.0.1", port=port)
if protocol != "limited":
    config.http = protocol
uvicorn.Server(config).run()
"""

LUA = """
wrk.method = "POST"
wrk.body = string.rep("x", 1299)
wrk.headers["content-type"] = "application/json"
wrk.headers["svix-id"] = "msg_2Lz5qv7yWfXJdM0sN3cHbK8pT1a"
wrk.headers["svix-timestamp"] = "1764480000"
wrk.headers["svix-signature"] = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: float, lua: Path) -> str:
    argv = ["wrk", "-t2", "-c64", f"-d{seconds:g}s", "-s", str(lua), url]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def run(protocol: str, seconds: float, folder: Path) -> tuple[float, float]:
    """One server, one warm-up, one measured wrk run: requests/s and CPU us per request."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(folder / "server.py"), str(port), protocol],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/webhooks/agentmail"
        wrk(url, 2, folder / "post.lua")
        before = cpu_seconds(server.pid)
        out = wrk(url, seconds, folder / "post.lua")
        used = cpu_seconds(server.pid) - before
        if "Non-2xx" in out or "Socket errors" in out:
            raise SystemExit(f"{protocol}: failed requests\n{out}")
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        return rate, used / requests * 1e6
    finally:
        server.terminate()
        server.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description="HTTP protocol A/B (see the module docstring).")
    parser.add_argument("protocols", nargs="*", choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {p: [] for p in args.protocols}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "server.py").write_text(SERVER.format(bench=str(BENCH_DIR)))
        (folder / "post.lua").write_text(LUA)
        for n in range(args.rounds):
            order = args.protocols if n % 2 == 0 else list(reversed(args.protocols))
            for protocol in order:
                rate, us = run(protocol, args.duration, folder)
                results[protocol].append((rate, us))
                print(f"round {n + 1}  {protocol:10s} {rate:9,.0f} req/s  {us:6.1f} us/request")
    for protocol, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        us = statistics.median(u for _, u in runs)
        print(f"median   {protocol:10s} {rate:9,.0f} req/s  {us:6.1f} us/request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
