"""``autoreply demo`` and ``autoreply dev``: the service and the sandbox together.

The demo is what the README's run command does on a fresh machine: it starts the
sandbox and the service on a temporary SQLite file, lets the service register its
webhook, injects a few emails (one of them delivered three times at once), waits for
the worker, and prints what happened to each, with the reply and the final labels. One
sender is a key account whose replies are drafts for review (a rule with ``mode =
"draft"``): its reply waits as a draft until the demo approves it as a person would in
AgentMail's console, and the service relabels the message once the draft is sent. Refund
requests have a grace period (a rule with ``delay = "10m"``): a person answers one while
it waits, and the service sends nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.cli import fail
from service.cli.dev import (
    DEMO_INBOX,
    Ports,
    dev_settings,
    sandbox_server,
    serve_service,
)
from service.logging import configure_logging
from service.models import Job
from service.runtime import Runtime
from service.sandbox import AsyncSandboxClient
from service.settings import SettingsError
from service.store.base import GRACE_PERIOD


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One inbound email and what the service should do with it."""

    title: str
    sender: str
    subject: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    copies: int = 1
    #: ``replied``, ``drafted`` (a draft for review, then approved) or the skip reason.
    expected: str = "replied"
    #: A person answers the message in its thread while its grace period runs.
    answered_by_person: str | None = None


SCENARIOS = (
    Scenario(
        title="A customer asks a question",
        sender="Jane Doe <jane@example.com>",
        subject="Where is my order?",
        text="Hi, I ordered last week and have not heard back. Can you help?",
    ),
    Scenario(
        title="The same delivery arrives three times at once",
        sender="Carol <carol@example.org>",
        subject="Invoice request",
        text="Could you send me the invoice for March?",
        copies=3,
    ),
    Scenario(
        title="A key account writes: the reply is drafted for review, then approved",
        sender="Ann Lee <ann@bigcustomer.example>",
        subject="Contract renewal",
        text="Can we talk about renewing our contract next month?",
        expected="drafted",
    ),
    Scenario(
        title="A refund request waits 10 minutes; a person answers first, nothing is sent",
        sender="Dana Cruz <dana@example.com>",
        subject="Refund for order 1234",
        text="The parcel arrived damaged. Can I get a refund?",
        expected="answered_in_thread",
        answered_by_person="Hi Dana, I have refunded order 1234 today. Sorry! - Sam",
    ),
    Scenario(
        title="Another auto-responder writes (RFC 3834)",
        sender="Bob <bob@example.net>",
        subject="Out of office: Where is my order?",
        text="I am away until Monday.",
        headers={"Auto-Submitted": "auto-replied"},
        expected="auto_submitted",
    ),
    Scenario(
        title="A mailing list post",
        sender="Announcements <news@lists.example.com>",
        subject="[announce] Release 2.0",
        text="Version 2.0 is out.",
        headers={"List-Id": "<announce.lists.example.com>"},
        expected="list_header",
    ),
    Scenario(
        title="A bounce from a mail server",
        sender="MAILER-DAEMON@mail.example.com",
        subject="Undelivered Mail Returned to Sender",
        text="This is the mail system at host mail.example.com.",
        expected="system_sender",
    ),
)


def add_commands(subparsers: Any) -> None:
    """Register ``demo`` and ``dev``."""
    demo = subparsers.add_parser(
        "demo", help="run sandbox + service, inject a few emails, print the replies, exit"
    )
    demo.set_defaults(handler=_demo)
    dev = subparsers.add_parser("dev", help="run the sandbox and the service together until Ctrl-C")
    dev.add_argument("--host", default="127.0.0.1", help="interface for both (default 127.0.0.1)")
    dev.add_argument("--sandbox-port", type=int, default=9100, help="sandbox port (default 9100)")
    dev.add_argument("--port", type=int, default=8000, help="service port (default 8000)")
    dev.set_defaults(handler=_dev)


def _dev(args: argparse.Namespace) -> int:
    ports = Ports(host=args.host, sandbox=args.sandbox_port, service=args.port)
    try:
        settings = dev_settings(ports)
    except SettingsError as exc:
        fail(f"configuration error: {exc}", 2)
    configure_logging(fmt=settings.log_format, level=settings.log_level)

    async def run() -> None:
        async with sandbox_server(ports, inboxes=(DEMO_INBOX,)):
            print(
                f"sandbox on {ports.sandbox_url}, service on {ports.service_url}, "
                f"inbox {DEMO_INBOX}. Try, in another terminal:\n"
                f"  autoreply sandbox send --url {ports.sandbox_url} "
                f"--from 'You <you@example.com>' --to {DEMO_INBOX} "
                "--subject Hello --text 'Hi there'\n"
                f"  autoreply sandbox sent --url {ports.sandbox_url}",
                flush=True,
            )
            await serve_service(settings, ports)

    asyncio.run(run())
    return 0


#: The demo's ``rules.toml``: the key account's replies are drafts for review; refund
#: requests wait ten minutes for a person before the auto-reply goes out.
DEMO_RULES = """[[rule]]
name = "key accounts"
sender = "@bigcustomer.example"
template = "default"
mode = "draft"

[[rule]]
name = "refunds"
subject = "refund"
template = "default"
delay = "10m"
"""


def _demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="autoreply-demo-") as folder:
        ports = Ports(sandbox=_free_port(), service=_free_port())
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith(("AGENTMAIL_", "AUTOREPLY_"))
        }
        templates = Path(folder) / "templates"
        templates.mkdir()
        (templates / "rules.toml").write_text(DEMO_RULES, encoding="utf-8")
        environ["AUTOREPLY_TEMPLATES_DIR"] = str(templates)
        environ["AUTOREPLY_DATABASE_URL"] = f"sqlite:///{Path(folder) / 'demo.db'}"
        environ["AUTOREPLY_LOG_FORMAT"] = "console"
        environ["AUTOREPLY_LOG_LEVEL"] = "WARNING"
        settings = dev_settings(ports, environ)
        configure_logging(fmt=settings.log_format, level=settings.log_level)
        return asyncio.run(_run_demo(settings, ports))


async def _run_demo(settings: Any, ports: Ports) -> int:
    async with sandbox_server(ports, inboxes=(DEMO_INBOX,)):
        server, task, runtime = await serve_service(settings, ports, background=True)
        try:
            await _until(lambda: runtime.verifier is not None, "webhook registration")
            print(f"Service registered its webhook with the sandbox ({ports.sandbox_url}).\n")
            async with AsyncSandboxClient(ports.sandbox_url) as admin:
                injected = [await _inject(admin, scenario) for scenario in SCENARIOS]
                for scenario, message_id in zip(SCENARIOS, injected, strict=True):
                    if scenario.answered_by_person is not None:
                        await _answer_as_person(runtime, admin, scenario, message_id)
                drafted = [m for c, m in zip(SCENARIOS, injected, strict=True) if _is_draft(c)]
                await _until_final(runtime, len(SCENARIOS) - len(drafted), drafted=len(drafted))
                sent = await admin.sent()
                failures = 0
                for scenario, message_id in zip(SCENARIOS, injected, strict=True):
                    if _is_draft(scenario):
                        failures += not await _review(runtime, admin, scenario, message_id)
                    else:
                        failures += not await _report(runtime, scenario, message_id, sent)
        finally:
            server.should_exit = True
            await task
    print("All outcomes as expected." if not failures else f"{failures} unexpected outcome(s).")
    return 0 if not failures else 1


async def _inject(admin: AsyncSandboxClient, scenario: Scenario) -> str:
    result = await admin.inject(
        from_=scenario.sender,
        to=DEMO_INBOX,
        subject=scenario.subject,
        text=scenario.text,
        headers=scenario.headers or None,
        copies=scenario.copies,
    )
    return result["message_id"]


async def _answer_as_person(
    runtime: Runtime, admin: AsyncSandboxClient, scenario: Scenario, message_id: str
) -> None:
    """Once the message waits out its grace period, answer it as a person would in
    AgentMail's console; its ``message.sent`` wakes the job, which reads the thread."""

    async def waiting() -> bool:
        job = await runtime.store.get_job(DEMO_INBOX, message_id)
        return job is not None and job.state.value == "pending" and job.reason == GRACE_PERIOD

    deadline = time.monotonic() + 30
    while not await waiting():
        if time.monotonic() > deadline:
            raise SystemExit("autoreply: demo timed out waiting for the grace period to start")
        await asyncio.sleep(0.05)
    assert scenario.answered_by_person is not None
    await admin.reply(message_id=message_id, text=scenario.answered_by_person)


async def _report(runtime: Runtime, scenario: Scenario, message_id: str, sent: list[Any]) -> bool:
    job = await runtime.store.get_job(DEMO_INBOX, message_id)
    # The service's replies carry its Idempotency-Key; a person's answer does not.
    replies = [
        email
        for email in sent
        if email.get("in_reply_to") == message_id and email.get("idempotency_key")
    ]
    labels = (await runtime.api.get_message(DEMO_INBOX, message_id)).get("labels", [])
    outcome = "replied" if replies else (job.state.value if job else "missing")
    reason = _reason(job)
    ok = (
        len(replies) == 1
        if scenario.expected == "replied"
        else not replies and reason == scenario.expected
    )
    print(f"{'ok  ' if ok else 'FAIL'} {scenario.title}")
    print(f"     from {scenario.sender}: {scenario.subject!r}")
    if replies:
        print(f"     -> replied once, to {', '.join(replies[0]['to'])}:")
        for line in replies[0]["text"].strip().splitlines():
            print(f"        | {line}")
    else:
        if scenario.answered_by_person is not None:
            print(f"     -> a person answered in the thread: {scenario.answered_by_person!r}")
        print(f"     -> {outcome}: {reason}")
    print(f"     labels now: {', '.join(labels)}\n")
    return ok


def _is_draft(scenario: Scenario) -> bool:
    return scenario.expected == "drafted"


async def _review(
    runtime: Runtime, admin: AsyncSandboxClient, scenario: Scenario, message_id: str
) -> bool:
    """Show the draft awaiting review, approve it as a person would, show the outcome."""
    print(f"     {scenario.title}")
    print(f"     from {scenario.sender}: {scenario.subject!r}")
    drafts = [d for d in await admin.drafts() if d.get("in_reply_to") == message_id]
    labels = (await runtime.api.get_message(DEMO_INBOX, message_id)).get("labels", [])
    if len(drafts) != 1 or _replies(await admin.sent(), message_id):
        print(f"FAIL expected one draft and nothing sent, found {len(drafts)} draft(s)\n")
        return False
    [draft] = drafts
    print(f"     -> drafted for review (draft {draft['draft_id']}), to {', '.join(draft['to'])}:")
    for line in str(draft.get("text", "")).strip().splitlines():
        print(f"        | {line}")
    print(f"     labels while it waits: {', '.join(labels)}")
    print("     -> a person approves it in the console (sandbox: send the draft)")
    await admin.send_draft(draft["draft_id"])

    async def done() -> bool:
        job = await runtime.store.get_job(DEMO_INBOX, message_id)
        return job is not None and job.state.value in ("done", "discarded", "dead")

    deadline = time.monotonic() + 30
    while not await done():
        if time.monotonic() > deadline:
            raise SystemExit("autoreply: demo timed out waiting for the draft's message.sent")
        await asyncio.sleep(0.05)
    job = await runtime.store.get_job(DEMO_INBOX, message_id)
    replies = _replies(await admin.sent(), message_id)
    labels = (await runtime.api.get_message(DEMO_INBOX, message_id)).get("labels", [])
    ok = len(replies) == 1 and job is not None and job.reason == "replied"
    verdict = "ok  " if ok else "FAIL"
    print(f"{verdict} sent once; message.sent reached the service, job {_reason(job)}")
    print(f"     labels now: {', '.join(labels)}\n")
    return ok


def _replies(sent: list[Any], message_id: str) -> list[Any]:
    return [email for email in sent if email.get("in_reply_to") == message_id]


def _reason(job: Job | None) -> str:
    return (job.reason or "") if job is not None else ""


async def _until_final(runtime: Runtime, count: int, *, drafted: int = 0) -> None:
    async def finished() -> bool:
        stats = await runtime.store.stats(now=time.time())
        final = sum(stats.by_state[s] for s in ("done", "skipped", "dead"))
        return final >= count and stats.by_state["drafted"] >= drafted

    deadline = time.monotonic() + 30
    while not await finished():
        if time.monotonic() > deadline:
            raise SystemExit("autoreply: demo timed out waiting for the worker")
        await asyncio.sleep(0.05)


async def _until(predicate: Any, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"autoreply: demo timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
