"""Operator verbs: ``autoreply status`` and ``autoreply requeue``.

Both read the same settings as ``serve`` (same environment, same ``.env``) and talk to
the store directly, so they work while the service runs (SQLite in WAL mode allows a
second process; PostgreSQL any number) and while it is down.

``status`` shows the queue, the dead letters with their reasons, the last errors of
jobs still being retried, the catch-up sweep's marks per inbox, and whether AgentMail's
webhook matches the configuration (one read-only call; ``--no-api`` skips it). It
never prints a secret.

``requeue`` moves dead jobs back to pending under the rule that makes retries safe:
a job keeps its stored reply and Idempotency-Key, and a job whose first send attempt
is older than ``handlers.retry.SEND_WINDOW`` stays dead, because AgentMail may have
forgotten its key and a resend could become a second email. Those are listed so a
person can answer them by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from handlers.retry import SEND_WINDOW
from service import registration
from service.agentmail_api import AgentMailApi, ApiFailure, WebhookInfo
from service.cli import load_settings, run_on_store
from service.models import JobState, JobSummary, QueueStats
from service.settings import Settings, redact_url
from service.store import Store
from service.sweep import FINDINGS

#: Dead letters and errors shown by default.
DEFAULT_LIMIT = 20
#: Jobs read at most when looking for errors or dead letters to requeue.
SCAN_LIMIT = 100_000


def add_commands(subparsers: Any) -> None:
    """Register ``status`` and ``requeue``."""
    status = subparsers.add_parser(
        "status",
        help="queue depth, dead letters, last errors and the webhook registration",
        description="Read the store (and, unless --no-api, AgentMail's webhooks) and report "
        "what the service is doing. Exit 1 if the store cannot be read.",
    )
    status.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"dead letters and errors to list (default {DEFAULT_LIMIT})",
    )
    status.add_argument("--no-api", action="store_true", help="do not call AgentMail")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=_status)

    requeue = subparsers.add_parser(
        "requeue",
        help="retry dead-lettered jobs (only those still safe to send)",
        description="Move dead jobs back to the queue; a running service picks them up "
        "within a second. Jobs whose first send attempt is older than the "
        "Idempotency-Key window stay dead and are listed: resending them could send a "
        "second email. Exit 1 if any requested job was not requeued.",
    )
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("message_id", nargs="?", metavar="MESSAGE_ID", help="one message's job")
    which.add_argument("--dead", action="store_true", help="every dead job")
    requeue.set_defaults(handler=_requeue)


# -- status --------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    settings = load_settings()
    now = time.time()
    report = run_on_store(
        settings, lambda store: _store_report(store, settings=settings, now=now, limit=args.limit)
    )
    report["webhook"] = asyncio.run(_webhook_report(settings, check=not args.no_api))
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(_format_status(report, now=now))
    return 0


async def _queue_report(store: Store, *, database: str, now: float, limit: int) -> dict[str, Any]:
    stats: QueueStats = await store.stats(now=now)
    dead = await store.list_jobs(states=(JobState.DEAD,), limit=max(limit, 0))
    retrying = await store.list_jobs(states=(JobState.PENDING, JobState.RUNNING), limit=SCAN_LIMIT)
    drafted = await store.list_jobs(states=(JobState.DRAFTED,), limit=max(limit, 0))
    discarded = await store.list_jobs(states=(JobState.DISCARDED,), limit=max(limit, 0))
    oldest = stats.oldest_pending_created_at
    not_sent_before = now - SEND_WINDOW
    return {
        "database": redact_url(database),
        "queue": {
            **{state.value: stats.by_state.get(state.value, 0) for state in JobState},
            "oldest_unfinished_age_seconds": (
                None if oldest is None else round(max(0.0, now - oldest), 1)
            ),
            "waiting_out_grace_period": stats.waiting,
        },
        "suppressions": {
            "total": sum(stats.suppressions.values()),
            "by_cause": dict(sorted(stats.suppressions.items())),
        },
        "dead_letters": [
            {
                **_job_fields(job),
                "reason": job.reason or job.last_error,
                "died_at": job.updated_at,
                "requeueable": _requeueable(job, not_sent_before),
            }
            for job in dead
        ],
        "last_errors": [
            {
                **_job_fields(job),
                "state": job.state.value,
                "error": job.last_error,
                "at": job.updated_at,
            }
            for job in retrying
            if job.last_error
        ][: max(limit, 0)],
        "drafts": {
            "awaiting_review": [
                {**_job_fields(job), "draft_id": job.draft_id, "since": job.created_at}
                for job in drafted
            ],
            "discarded": [
                {**_job_fields(job), "draft_id": job.draft_id, "at": job.updated_at}
                for job in discarded
            ],
        },
    }


async def _store_report(
    store: Store, *, settings: Settings, now: float, limit: int
) -> dict[str, Any]:
    """The queue, the dead letters, the last errors and the sweep, from one store."""
    report = await _queue_report(store, database=settings.database_url, now=now, limit=limit)
    report["sweep"] = await _sweep_report(store, settings)
    return report


async def _sweep_report(store: Store, settings: Settings) -> dict[str, Any]:
    """The catch-up sweep: its interval and each inbox's mark (how far it has swept).

    A mark moves when a sweep fully processed a page, to the last message on it, so it
    says how recent the last mail found by a sweep is. A mark ahead of now is the first
    look's (``handlers.sweep.first_mark``): no mail since the first sweep of that inbox.
    """
    interval = settings.sweep_interval.total_seconds()
    states = await store.sweep_states()
    return {
        "interval_seconds": interval,
        "marks": {state.inbox_id: state.mark for state in states},
        "last_sweeps": {
            state.inbox_id: {"at": state.swept_at, "findings": state.findings}
            for state in states
            if state.swept_at is not None
        },
    }


def _job_fields(job: JobSummary) -> dict[str, Any]:
    return {
        "inbox_id": job.inbox_id,
        "message_id": job.message_id,
        "attempts": job.attempts,
        "first_send_at": job.first_send_at,
    }


def _requeueable(job: JobSummary, not_sent_before: float) -> bool:
    return job.first_send_at is None or job.first_send_at >= not_sent_before


async def _webhook_report(settings: Settings, *, check: bool) -> dict[str, Any]:
    """What is configured and, when asked, what AgentMail has: never a secret."""
    url = settings.webhook_url
    report: dict[str, Any] = {
        "url": url,
        "client_id": settings.webhook_client_id,
        "inbox_ids": sorted(settings.inbox_ids),
        "event_types": list(registration.event_types(settings)),
        "configured_secrets": len(settings.webhook_secrets),
    }
    if url is None:
        report.update(
            check="manual",
            detail="AUTOREPLY_PUBLIC_URL is unset: the service does not register a webhook "
            f"and verifies with {len(settings.webhook_secrets)} configured secret(s)",
        )
        return report
    if not check:
        report.update(check="unchecked", detail="AgentMail not asked (--no-api)")
        return report
    api = AgentMailApi(
        api_key=settings.api_key,
        base_url=settings.base_url,
        timeout=settings.api_timeout_seconds,
    )
    try:
        webhooks = await api.list_webhooks()
    except ApiFailure as failure:
        report.update(check="error", detail=f"could not ask AgentMail: {failure.reason}")
        return report
    finally:
        await api.aclose()
    desired = registration.webhook_spec(settings)
    assert desired is not None  # the URL is set
    report.update(_compare(webhooks, desired))
    return report


def _compare(webhooks: list[WebhookInfo], desired: registration.WebhookSpec) -> dict[str, Any]:
    """How AgentMail's webhooks compare with the one the service would register."""
    ours = {desired.client_id, registration.fallback_client_id(desired.client_id, desired.url)}
    mine = [w for w in webhooks if w.client_id in ours or w.url == desired.url]
    if not mine:
        return {
            "check": "missing",
            "detail": f"no webhook with client_id {desired.client_id} or URL {desired.url} "
            "(the service creates it at startup)",
        }
    webhook = next((w for w in mine if w.url == desired.url), mine[0])
    drift = []
    if webhook.url != desired.url:
        drift.append(f"URL is {webhook.url}")
    if webhook.client_id not in ours:
        drift.append(f"client_id is {webhook.client_id or 'unset'}, not {desired.client_id}")
    if not webhook.enabled:
        drift.append("disabled")
    if set(webhook.event_types) != set(desired.event_types):
        drift.append(f"event types are {', '.join(webhook.event_types) or 'none'}")
    if set(webhook.inbox_ids) != set(desired.inbox_ids):
        drift.append(f"inboxes are {', '.join(webhook.inbox_ids) or 'all'}")
    found = {k: v for k, v in registration.describe(webhook).items() if k != "url"}
    if len(mine) > 1:
        drift.append(f"{len(mine)} webhooks point here or carry our client_id")
    if drift:
        detail = "; ".join(drift) + " (the service repairs this at startup)"
        return {"check": "drift", "detail": detail, "found": found}
    return {"check": "ok", "detail": "registered and matching", "found": found}


def _format_status(report: dict[str, Any], *, now: float) -> str:
    queue = report["queue"]
    lines = [f"Queue ({report['database']})"]
    lines.append("  " + "   ".join(f"{state.value} {queue[state.value]}" for state in JobState))
    age = queue["oldest_unfinished_age_seconds"]
    lines.append(f"  oldest unfinished job: {'none' if age is None else _duration(age) + ' old'}")
    if queue["waiting_out_grace_period"]:
        lines.append(
            f"  waiting out a grace period: {queue['waiting_out_grace_period']} "
            "(pending until their delay is over)"
        )
    suppressions = report["suppressions"]
    lines.append("")
    if suppressions["total"]:
        causes = ", ".join(f"{cause} {n}" for cause, n in suppressions["by_cause"].items())
        lines.append(
            f"Suppression list: {suppressions['total']} ({causes}); see autoreply suppressions list"
        )
    else:
        lines.append("Suppression list: empty")

    dead = report["dead_letters"]
    lines.append("")
    if not queue["dead"]:
        lines.append("Dead letters: none")
    else:
        shown = f", newest {len(dead)} shown" if len(dead) < queue["dead"] else ""
        lines.append(
            f"Dead letters: {queue['dead']}{shown} (`autoreply requeue MESSAGE_ID` or "
            "`autoreply requeue --dead` retries those still safe to send)"
        )
        for job in dead:
            lines.append(
                f"  {job['message_id']}  inbox {job['inbox_id']}  {job['attempts']} attempt(s)  "
                f"dead for {_duration(now - job['died_at'])}"
            )
            lines.append(f"      reason: {job['reason']}")
            if not job["requeueable"]:
                lines.append(
                    f"      not requeueable: first send attempt "
                    f"{_duration(now - job['first_send_at'])} ago, its Idempotency-Key may "
                    "have expired (answer it by hand)"
                )

    errors = report["last_errors"]
    lines.append("")
    if not errors:
        lines.append("Last errors: none")
    else:
        lines.append("Last errors (jobs being retried, most recent first):")
        for job in errors:
            lines.append(
                f"  {job['message_id']}  inbox {job['inbox_id']}  attempt {job['attempts']}  "
                f"{_duration(now - job['at'])} ago"
            )
            lines.append(f"      error: {job['error']}")

    lines.append("")
    lines.extend(_format_drafts(queue, report["drafts"], now=now))

    lines.append("")
    lines.extend(_format_sweep(report["sweep"], now=now))

    webhook = report["webhook"]
    lines.append("")
    lines.append("Webhook")
    if webhook["url"] is not None:
        inboxes = ", ".join(webhook["inbox_ids"]) or "all"
        lines.append(
            f"  configured: {webhook['url']} (client_id {webhook['client_id']}, inboxes: {inboxes})"
        )
        lines.append(f"  event types: {', '.join(webhook['event_types'])}")
    found = webhook.get("found")
    if found:
        state = "enabled" if found["enabled"] else "disabled"
        lines.append(f"  AgentMail: {found['webhook_id']} ({state})")
    lines.append(f"  {webhook['check']}: {webhook['detail']}")
    return "\n".join(lines)


def _format_drafts(queue: dict[str, Any], drafts: dict[str, Any], *, now: float) -> list[str]:
    """Draft mode: the drafts awaiting review, and those deleted without being sent."""
    waiting, discarded = drafts["awaiting_review"], drafts["discarded"]
    if not queue["drafted"] and not queue["discarded"]:
        return ["Drafts: none awaiting review, none discarded"]
    lines = [
        f"Drafts awaiting review: {queue['drafted']} (`autoreply drafts list`, "
        "`autoreply drafts send DRAFT_ID`)"
    ]
    for job in waiting:
        lines.append(
            f"  {job['draft_id']}  in reply to {job['message_id']}  inbox {job['inbox_id']}  "
            f"waiting {_duration(now - job['since'])}"
        )
    lines.append(
        f"Discarded drafts: {queue['discarded']} (deleted without sending; the message "
        "stays unreplied)"
    )
    for job in discarded:
        lines.append(
            f"  discarded  {job['message_id']}  inbox {job['inbox_id']}  draft {job['draft_id']}  "
            f"{_duration(now - job['at'])} ago"
        )
    return lines


def _format_sweep(sweep: dict[str, Any], *, now: float) -> list[str]:
    interval = sweep["interval_seconds"]
    every = f"every {_duration(interval)}" if interval else "off (AUTOREPLY_SWEEP_INTERVAL=0)"
    lines = [f"Catch-up sweep: {every}"]
    marks: dict[str, float] = sweep["marks"]
    if not marks:
        lines.append("  marks: none yet (no inbox swept)")
    last_sweeps: dict[str, Any] = sweep.get("last_sweeps", {})
    for inbox_id, mark in sorted(marks.items()):
        moment = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(mark))
        detail = "first look, no mail since" if mark > now else f"{_duration(now - mark)} ago"
        lines.append(f"  {inbox_id}: swept up to {moment} ({detail})")
        last = last_sweeps.get(inbox_id)
        if last is not None:
            findings = last["findings"]
            found = ", ".join(
                f"{findings.get(name, 0)} {name.replace('_', ' ')}" for name in FINDINGS
            )
            lines.append(f"    last full sweep {_duration(now - last['at'])} ago: {found}")
    return lines


# -- requeue -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class RequeueResult:
    """What ``requeue`` did: how many moved, and the dead jobs it had to leave."""

    requeued: int
    expired: list[JobSummary]


def _requeue(args: argparse.Namespace) -> int:
    settings = load_settings()
    now = time.time()
    message_id: str | None = args.message_id
    result = run_on_store(
        settings, lambda store: requeue(store, message_id=message_id, dead=args.dead, now=now)
    )
    target = "every dead job" if message_id is None else f"message {message_id}"
    if result.requeued:
        print(f"requeued {result.requeued} job(s) ({target}); a running service retries them now")
    elif not result.expired:
        if message_id is None:
            print("no dead jobs")
            return 0
        print(f"no dead job for message {message_id} (unknown, or not dead)", file=sys.stderr)
        return 1
    for job in result.expired:
        print(
            f"left dead: {job.message_id} (inbox {job.inbox_id}): first send attempt "
            f"{_duration(now - (job.first_send_at or now))} ago, outside the "
            f"{_duration(SEND_WINDOW)} Idempotency-Key window; a resend could send a second "
            "email, so answer it by hand",
            file=sys.stderr,
        )
    return 1 if result.expired else 0


async def requeue(store: Store, *, message_id: str | None, dead: bool, now: float) -> RequeueResult:
    """Requeue dead jobs safely; report the ones left dead because their key may be gone."""
    not_sent_before = now - SEND_WINDOW
    candidates = [
        job
        for job in await store.list_jobs(states=(JobState.DEAD,), limit=SCAN_LIMIT)
        if message_id is None or job.message_id == message_id
    ]
    moved = await store.requeue(
        message_id=message_id, dead=dead, now=now, not_sent_before=not_sent_before
    )
    expired = [job for job in candidates if not _requeueable(job, not_sent_before)]
    return RequeueResult(requeued=moved, expired=expired)


# -- shared ------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    """``42s``, ``3m 12s``, ``5h 2m``, ``2d 3h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"
