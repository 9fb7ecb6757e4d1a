"""``autoreply drafts list|send``: the reply drafts that await review (draft mode).

In draft mode (``AUTOREPLY_MODE=draft``, or a rule's ``mode = "draft"``) each reply is
prepared as a reply draft in the message's inbox, and its job waits in ``drafted``.
``list`` shows those drafts, from the store; ``send DRAFT_ID`` or ``send --all`` sends
them through AgentMail under an Idempotency-Key derived from the draft, so sending one
twice sends it once (and a draft already sent is gone: AgentMail deletes it). The
service learns of the send from the ``message.sent`` event; this command also wakes the
draft's job directly, so the message is relabelled even without that event.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from handlers.idempotency import draft_send_key
from service.agentmail_api import AgentMailApi, ApiFailure
from service.cli import load_settings, run_on_store
from service.cli.ops import SCAN_LIMIT, _duration
from service.models import Job, JobState
from service.settings import Settings
from service.store import Store


def add_commands(subparsers: Any) -> None:
    """Register ``drafts list`` and ``drafts send``."""
    group = subparsers.add_parser(
        "drafts",
        help="reply drafts awaiting review (draft mode): list them, send them",
        description="The reply drafts the service prepared in draft mode and that await "
        "review. Exit 1 if the store cannot be read or a draft could not be sent.",
    )
    actions = group.add_subparsers(dest="drafts_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the drafts awaiting review, oldest first")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(handler=_list)
    send = actions.add_parser(
        "send", help="send a draft awaiting review (with an Idempotency-Key), or all of them"
    )
    which = send.add_mutually_exclusive_group(required=True)
    which.add_argument("draft_id", nargs="?", metavar="DRAFT_ID", help="one draft")
    which.add_argument("--all", action="store_true", help="every draft awaiting review")
    send.set_defaults(handler=_send)


async def awaiting_review(store: Store) -> list[Job]:
    """The jobs whose draft awaits review, oldest first."""
    summaries = await store.list_jobs(states=(JobState.DRAFTED,), limit=SCAN_LIMIT)
    jobs = [await store.get_job(s.inbox_id, s.message_id) for s in reversed(summaries)]
    return [job for job in jobs if job is not None and job.draft_id is not None]


def _item(job: Job, now: float) -> dict[str, Any]:
    return {
        "draft_id": job.draft_id,
        "inbox_id": job.inbox_id,
        "message_id": job.message_id,
        "to": job.reply.to if job.reply else None,
        "template": job.reply.template if job.reply else None,
        "rule": job.reply.rule if job.reply else None,
        "waiting_seconds": round(now - job.created_at, 1),
    }


def _list(args: argparse.Namespace) -> int:
    settings = load_settings()
    now = time.time()
    jobs = run_on_store(settings, awaiting_review)
    items = [_item(job, now) for job in jobs]
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    if not items:
        print("no drafts awaiting review")
        return 0
    print(f"{len(items)} draft(s) awaiting review (`autoreply drafts send DRAFT_ID` sends one)")
    for item in items:
        rule = f", rule {item['rule']!r}" if item["rule"] else ""
        print(
            f"  {item['draft_id']}  inbox {item['inbox_id']}  to {item['to']}  "
            f"template {item['template']}{rule}  waiting {_duration(item['waiting_seconds'])}"
        )
        print(f"      in reply to {item['message_id']}")
    return 0


def _send(args: argparse.Namespace) -> int:
    settings = load_settings()
    return run_on_store(settings, lambda store: send_drafts(store, settings, args.draft_id))


async def send_drafts(store: Store, settings: Settings, draft_id: str | None) -> int:
    """Send one draft awaiting review (``draft_id``), or every one (None); 1 if any failed."""
    jobs = await awaiting_review(store)
    if draft_id is not None:
        jobs = [job for job in jobs if job.draft_id == draft_id]
        if not jobs:
            print(
                f"autoreply: no draft {draft_id} awaiting review (unknown, or already sent "
                "or deleted: `autoreply drafts list` shows those that wait)",
                file=sys.stderr,
            )
            return 1
    elif not jobs:
        print("no drafts awaiting review")
        return 0
    api = AgentMailApi(
        api_key=settings.api_key,
        base_url=settings.base_url,
        timeout=settings.api_timeout_seconds,
    )
    failed = 0
    try:
        for job in jobs:
            assert job.draft_id is not None
            try:
                sent_id = await api.send_draft(
                    job.inbox_id,
                    job.draft_id,
                    idempotency_key=draft_send_key(job.inbox_id, job.draft_id),
                )
            except ApiFailure as failure:
                failed += 1
                why = (
                    "already sent or deleted (the service notices at its next check)"
                    if failure.status == 404
                    else failure.reason
                )
                print(f"autoreply: draft {job.draft_id} not sent: {why}", file=sys.stderr)
                continue
            print(f"sent draft {job.draft_id} as {sent_id} (in reply to {job.message_id})")
            if job.thread_id is not None:
                # The service relabels when it sees the send; wake its job now rather
                # than wait for the message.sent event.
                await store.note_sent(
                    inbox_id=job.inbox_id,
                    thread_id=job.thread_id,
                    message_id=sent_id,
                    now=time.time(),
                )
    finally:
        await api.aclose()
    return 1 if failed else 0
