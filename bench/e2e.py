"""End to end: N inbound emails through the sandbox and the service, every API call slowed.

Starts ``autoreply sandbox`` and ``autoreply serve`` (default settings, SQLite on disk)
as child processes, adds a latency fault to every AgentMail operation, injects N emails
from distinct senders, and waits until each is replied to and relabelled. Reports the
total time, throughput and delivery-to-reply latency, the API calls per message, and
checks that every message got exactly one reply.

With ``--reply-delay`` (``AUTOREPLY_REPLY_DELAY``), ``--answered N`` of the messages are
answered "by a person" (the sandbox's ``reply`` verb) right after they arrive: those must
get no auto-reply, the others exactly one.

With ``--mode draft`` (``AUTOREPLY_MODE=draft``) each reply is a draft: once every
message has its draft, the benchmark sends them all as a person would from the console
(the sandbox's admin API, not counted as the service's calls) and waits until the
service relabels each original on its ``message.sent`` event.

    .venv/bin/python bench/e2e.py [--messages 1000] [--latency-ms 50] [--concurrency N]
        [--reply-delay 5s --answered 100] [--mode send|draft]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx

from service.sandbox import AsyncSandboxClient

ROOT = Path(__file__).resolve().parent.parent
INBOX = "demo@agentmail.to"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def autoreply() -> list[str]:
    script = Path(sys.executable).with_name("autoreply")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service"]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer 200 within {timeout}s")


def run(args: argparse.Namespace, folder: Path) -> dict[str, object]:
    """Start both processes, measure, and stop them whatever happens."""
    sandbox_port, service_port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTMAIL_", "AUTOREPLY_"))}
    env = {
        **clean,
        "AGENTMAIL_API_KEY": "am_sandbox",
        "AGENTMAIL_BASE_URL": sandbox_url,
        "AUTOREPLY_PUBLIC_URL": f"http://127.0.0.1:{service_port}",
        "AUTOREPLY_DATABASE_URL": f"sqlite:///{folder / 'e2e.db'}",
        "AUTOREPLY_LOG_FORMAT": "json",
        "AUTOREPLY_LOG_LEVEL": "WARNING",
    }
    if args.concurrency:
        env["AUTOREPLY_WORKER_CONCURRENCY"] = str(args.concurrency)
    if args.reply_delay:
        env["AUTOREPLY_REPLY_DELAY"] = args.reply_delay
    env["AUTOREPLY_MODE"] = args.mode
    processes: list[subprocess.Popen[bytes]] = []
    with (
        (folder / "sandbox.log").open("wb") as sandbox_log,
        (folder / "service.log").open("wb") as service_log,
    ):
        try:
            processes.append(
                subprocess.Popen(
                    [
                        *autoreply(),
                        "sandbox",
                        "--port",
                        str(sandbox_port),
                        "--log-level",
                        "warning",
                    ],
                    env=clean,
                    stdout=sandbox_log,
                    stderr=subprocess.STDOUT,
                )
            )
            wait_http(f"{sandbox_url}/_sandbox/info")
            processes.append(
                subprocess.Popen(
                    [*autoreply(), "serve", "--host", "127.0.0.1", "--port", str(service_port)],
                    env=env,
                    stdout=service_log,
                    stderr=subprocess.STDOUT,
                )
            )
            wait_http(f"http://127.0.0.1:{service_port}/readyz")
            result = asyncio.run(
                measure(
                    sandbox_url,
                    args.messages,
                    args.latency_ms,
                    answered=args.answered,
                    draft=args.mode == "draft",
                )
            )
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=30)
    # The worker logs (at WARNING) each time a webhook burst saturates the loop.
    log_text = (folder / "service.log").read_text(errors="replace")
    result["worker_stepped_back"] = log_text.count('"worker_steps_back"')
    return result


#: The operations one message's job makes (the rest, webhooks and the sweep's listings,
#: are per deployment, not per message).
PER_MESSAGE = (
    "messages.get",
    "threads.get",
    "messages.update",
    "messages.reply",
    "drafts.create",
    "drafts.get",
)


async def measure(
    sandbox_url: str, count: int, latency_ms: int, *, answered: int = 0, draft: bool = False
) -> dict[str, object]:
    """Inject ``count`` emails with ``latency_ms`` on every API call; time the replies.

    The first ``answered`` messages are answered by a person right after they arrive
    (for a run with a reply delay): they must get no auto-reply.
    """
    async with AsyncSandboxClient(sandbox_url, timeout=60) as admin:
        await admin.add_fault("*", latency_ms=latency_ms)
        return await _measure(admin, count, answered, draft=draft)


async def _approve_drafts(admin: AsyncSandboxClient, count: int, started: float) -> float:
    """Wait for ``count`` drafts, then send each as a person would from the console;
    return when they all existed (seconds since ``started``)."""
    while len(drafts := await admin.drafts()) < count:
        if time.monotonic() - started > 300:
            raise SystemExit(f"only {len(drafts)} of {count} drafts after 300 s")
        await asyncio.sleep(0.1)
    drafted = time.monotonic() - started
    semaphore = asyncio.Semaphore(16)

    async def approve(draft_id: str) -> None:
        async with semaphore:
            await admin.send_draft(draft_id)

    await asyncio.gather(*(approve(d["draft_id"]) for d in drafts))
    return drafted


async def _measure(
    admin: AsyncSandboxClient, count: int, answered: int, *, draft: bool
) -> dict[str, object]:
    injected_at: dict[str, float] = {}
    by_person: set[str] = set()
    semaphore = asyncio.Semaphore(16)

    async def inject(i: int) -> None:
        async with semaphore:
            result = await admin.inject(
                from_=f"Sender {i} <sender{i}@example.com>",
                to=INBOX,
                subject=f"Question {i}",
                text=f"Hello, this is question number {i}.",
            )
            injected_at[result["message_id"]] = time.time()
            if i < answered:
                await admin.reply(message_id=result["message_id"], text="A person answers.")
                by_person.add(result["message_id"])

    started = time.monotonic()
    await asyncio.gather(*(inject(i) for i in range(count)))
    injected = time.monotonic() - started
    drafted = await _approve_drafts(admin, count - answered, started) if draft else None
    while True:
        changes = await admin.label_changes()
        relabelled = {c["message_id"] for c in changes if "replied" in c["added"]}
        calls = (await admin.requests())["operations"]
        reads = sum(calls.get("threads.get", {}).values())
        # An answered message ends without a label: its thread read is its last call.
        if len(relabelled) >= count - answered and (not answered or reads >= count):
            break
        if time.monotonic() - started > 300:
            raise SystemExit(f"only {len(relabelled)} of {count} relabelled after 300 s")
        await asyncio.sleep(0.1)
    total = time.monotonic() - started
    # The service's replies: sent under its Idempotency-Key, or (draft mode) from its draft.
    sent = [e for e in await admin.sent() if e["idempotency_key"] or e.get("draft_id")]
    per_message = Counter(email["in_reply_to"] for email in sent)
    operations = (await admin.requests())["operations"]
    latencies = sorted(
        datetime.fromisoformat(email["at"]).timestamp() - injected_at[email["in_reply_to"]]
        for email in sent
        if email["in_reply_to"] in injected_at
    )
    return {
        "mode": "draft" if draft else "send",
        "messages": count,
        "answered_by_a_person": answered,
        "injected_in_s": round(injected, 2),
        **({"all_drafted_in_s": round(drafted, 2)} if drafted is not None else {}),
        "all_replied_in_s": round(total, 2),
        "replies_per_s": round((count - answered) / total, 1),
        "replies_sent": len(sent),
        "messages_with_exactly_one_reply": sum(1 for n in per_message.values() if n == 1),
        "answered_messages_auto_replied": len(by_person & set(per_message)),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p99_s": round(latencies[int(len(latencies) * 0.99) - 1], 3),
        "api_calls": operations,
        "api_calls_per_message": {
            op: round(sum(operations[op].values()) / count, 2)
            for op in PER_MESSAGE
            if op in operations
        },
        "api_calls_per_message_total": round(
            sum(sum(operations[op].values()) for op in PER_MESSAGE if op in operations) / count, 2
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=0, help="0: the service default")
    parser.add_argument(
        "--reply-delay", default="", help="AUTOREPLY_REPLY_DELAY, e.g. 5s (default: none)"
    )
    parser.add_argument(
        "--answered", type=int, default=0, help="messages a person answers first (with a delay)"
    )
    parser.add_argument(
        "--mode", choices=("send", "draft"), default="send", help="AUTOREPLY_MODE (default send)"
    )
    args = parser.parse_args()
    if args.answered and not args.reply_delay:
        parser.error("--answered needs --reply-delay: without one the service answers at once")
    with tempfile.TemporaryDirectory(prefix="autoreply-e2e-") as folder:
        result = run(args, Path(folder))
    result["latency_ms_per_api_call"] = args.latency_ms
    result["concurrency"] = args.concurrency or "the service default"
    result["reply_delay"] = args.reply_delay or "0"
    result["machine"] = f"{os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps(result, indent=2))
    expected = args.messages - args.answered
    ok = (
        result["messages_with_exactly_one_reply"] == expected == result["replies_sent"]
        and result["answered_messages_auto_replied"] == 0
    )
    print("exactly one reply per message" if ok else "NOT exactly one reply per message")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
