"""``autoreply sweep --since 2d|2026-11-01T00:00Z [--inbox ID]... [--dry-run]``.

One catch-up sweep from ``since`` instead of the marks: the explicit way to reach into
the past (after a lost database, a webhook that was gone for longer than the service's
own sweeps cover, or a first deployment that should answer recent mail). It uses the
same deduplicating path as the service (``service.sweep``), so a message that has a
job gets no second one, and messages labelled replied, spam, blocked or
unauthenticated get none. Marks only move forward, and only for inboxes whose mark the
listing covered, so it never makes the service skip anything.

It works while the service runs (the service's workers pick the jobs up: at once on
PostgreSQL, within a second on SQLite) and on its own (the jobs wait for the service).
It takes the sweep lease like the service's periodic sweep, so the two never list at
the same time: if a sweep is running it waits for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from functools import partial
from typing import Any

from handlers.sweep import parse_since
from service.agentmail_api import AgentMailApi
from service.cli import fail, load_settings, with_store
from service.settings import Settings
from service.store import Store, StoreUnavailable
from service.sweep import InboxCounts, Sweeper, SweepReport

#: How often a sweep waiting for the lease asks again.
LEASE_POLL = 1.0


def add_commands(subparsers: Any) -> None:
    """Register ``sweep``."""
    sweep = subparsers.add_parser(
        "sweep",
        help="answer mail no webhook delivered: one sweep from --since",
        description="List the received messages of each inbox in scope since --since and "
        "enqueue those without a job (not labelled replied, spam, blocked or "
        "unauthenticated). Prints per inbox how many were scanned, already handled, "
        "enqueued and skipped (they already had a job). Exit 1 if an inbox could not be "
        "listed or the store is unavailable.",
    )
    sweep.add_argument(
        "--since",
        required=True,
        help="a duration back from now (2d, 36h) or a moment (2026-11-01T00:00Z; UTC "
        "without a zone)",
    )
    sweep.add_argument(
        "--inbox",
        action="append",
        default=[],
        metavar="ID",
        help="sweep this inbox (repeatable; default: AUTOREPLY_INBOX_IDS, else every inbox)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="count only; enqueue nothing")
    sweep.add_argument("--json", action="store_true", help="print one JSON object")
    sweep.set_defaults(handler=_sweep)


def _sweep(args: argparse.Namespace) -> int:
    settings = load_settings()
    now = time.time()
    try:
        since = parse_since(args.since, now=now)
    except ValueError as exc:
        fail(str(exc), 2)
    inboxes = tuple(dict.fromkeys(args.inbox)) or tuple(settings.inbox_ids)
    outside = [inbox for inbox in inboxes if settings.inbox_ids and inbox not in settings.inbox_ids]
    if outside:
        # The service ignores these inboxes' events: their jobs would answer mail it
        # is configured to leave alone.
        fail(f"--inbox {outside[0]} is not in AUTOREPLY_INBOX_IDS", 2)
    try:
        work = partial(_run, settings=settings, inboxes=inboxes, since=since, dry_run=args.dry_run)
        report = with_store(settings, work)
    except StoreUnavailable as exc:
        fail(f"store unavailable: {exc}", 1)
    except KeyboardInterrupt:
        fail("interrupted; what was enqueued stays enqueued", 130)
    if args.json:
        print(json.dumps(_as_json(report, since=since, dry_run=args.dry_run), indent=2))
    else:
        print(_format(report, since=since, dry_run=args.dry_run))
    for counts in report.inboxes:
        if counts.error:
            print(f"autoreply: {counts.inbox_id}: {counts.error}", file=sys.stderr)
    if report.error:
        print(f"autoreply: could not list the inboxes: {report.error}", file=sys.stderr)
    return 0 if report.ok else 1


async def _run(
    store: Store, settings: Settings, inboxes: tuple[str, ...], *, since: float, dry_run: bool
) -> SweepReport:
    api = AgentMailApi(
        api_key=settings.api_key, base_url=settings.base_url, timeout=settings.api_timeout_seconds
    )
    try:
        sweeper = Sweeper(
            store=store,
            api=api,
            inbox_ids=inboxes,
            replied_label=settings.replied_label,
            lease_seconds=settings.sweep_lease_seconds,
        )
        if sys.stderr.isatty():
            sweeper.progress = _progress
        waited = False
        while not await sweeper.acquire():
            if not waited:
                print(
                    "waiting for the sweep in progress (at most "
                    f"{sweeper.lease_seconds:.0f} s after its sweeper stops)...",
                    file=sys.stderr,
                )
                waited = True
            await asyncio.sleep(LEASE_POLL)
        try:
            return await sweeper.sweep(since=since, dry_run=dry_run)
        finally:
            await sweeper.release()
            if sweeper.progress is not None:
                print(file=sys.stderr)
    finally:
        await api.aclose()


def _progress(counts: InboxCounts) -> None:
    """One line on the terminal, rewritten after each page."""
    print(
        f"\r{counts.inbox_id}: scanned {counts.scanned}, enqueued {counts.enqueued}",
        end="",
        file=sys.stderr,
        flush=True,
    )


def _as_json(report: SweepReport, *, since: float, dry_run: bool) -> dict[str, Any]:
    return {
        "since": since,
        "dry_run": dry_run,
        "inboxes": {c.inbox_id: c.fields() for c in report.inboxes},
        "totals": report.totals(),
        **({"error": report.error} if report.error else {}),
    }


def _format(report: SweepReport, *, since: float, dry_run: bool) -> str:
    moment = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    verb = "would enqueue" if dry_run else "enqueued"
    lines = [f"Sweep since {moment}{' (dry run: nothing enqueued)' if dry_run else ''}"]
    for counts in report.inboxes:
        state = f"  FAILED: {counts.error}" if counts.error else ""
        lines.append(
            f"  {counts.inbox_id}: scanned {counts.scanned}, already handled "
            f"{counts.already_handled}, {verb} {counts.enqueued}, skipped {counts.skipped} "
            f"(already had a job){state}"
        )
    totals = report.totals()
    lines.append(
        f"Total: scanned {totals['scanned']}, already handled {totals['already_handled']}, "
        f"{verb} {totals['enqueued']}, skipped {totals['skipped']}"
    )
    if totals["enqueued"] and not dry_run:
        lines.append("A running service answers the enqueued messages now.")
    return "\n".join(lines)
