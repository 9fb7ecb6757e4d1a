"""``autoreply suppressions list|add|remove``: the addresses the service never answers.

The list lives in the store, shared by every replica: a bounce or complaint about one of
our replies adds its recipient (see ``handlers.suppression``), and an operator adds or
removes entries here. A running service sees a change at the next message it decides.

* ``list [--json]``: every entry, oldest first (inbox ``*``: every inbox);
* ``add ADDRESS [--inbox ID] [--reason TEXT]``: cause ``manual``; without ``--inbox``
  for every inbox; exit 0 also when it was already there (it is left as it was);
* ``remove ADDRESS [--inbox ID]``: the entry for that inbox, or without ``--inbox``
  every entry of the address; exit 1 when there was none.

A bad address or inbox is one line and exit 2; a store that cannot be opened, exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from handlers.suppression import ALL_INBOXES, normalise_address, stored_address
from service.cli import fail, load_settings, run_on_store
from service.models import Suppression
from service.settings import Settings
from service.store import Store

#: The longest ``--reason`` kept (it is shown in ``list`` and in every skip's detail).
MAX_REASON = 500


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``suppressions`` and its verbs."""
    parser = subparsers.add_parser(
        "suppressions",
        help="list, add or remove addresses that are never answered",
        description="The suppression list: mail from these addresses is not answered "
        "(reason 'suppressed'). Bounces and complaints about our replies add to it; "
        "entries stay until removed here.",
    )
    verbs = parser.add_subparsers(dest="suppressions_verb", metavar="VERB", required=True)

    listing = verbs.add_parser("list", help="every suppressed address, oldest first")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(handler=_list)

    add = verbs.add_parser("add", help="suppress an address (cause 'manual')")
    add.add_argument("address", metavar="ADDRESS", help="a bare address: jane@example.com")
    add.add_argument("--inbox", metavar="ID", help="only for this inbox (default: every inbox)")
    add.add_argument("--reason", metavar="TEXT", help="why, for whoever reads the list")
    add.set_defaults(handler=_add)

    remove = verbs.add_parser("remove", help="answer an address again")
    remove.add_argument("address", metavar="ADDRESS")
    remove.add_argument(
        "--inbox", metavar="ID", help="only its entry for this inbox (default: every entry)"
    )
    remove.set_defaults(handler=_remove)


def _address(text: str, *, strict: bool = True) -> str:
    """``ADDRESS`` as the list holds it; exit 2 saying why for anything else.

    ``add`` takes only a plain ``jane@example.com`` (``normalise_address``); ``remove``
    takes any address the list may hold (``stored_address``): a bounce suppresses the
    address a reply went to, ``ops@intranet`` too, and that entry must be removable.
    """
    try:
        return normalise_address(text) if strict else stored_address(text)
    except ValueError as exc:
        fail(f"ADDRESS: {exc}", 2)


def _reason(text: str | None) -> str | None:
    """``--reason`` with its whitespace collapsed, cut to ``MAX_REASON``; exit 2 for a
    control or unencodable character (it is printed by ``list`` and every skip)."""
    if text is None:
        return None
    reason = " ".join(text.split())[:MAX_REASON]
    if not reason.isprintable():
        fail("--reason: holds a control or unencodable character", 2)
    return reason or None


def _inbox(text: str | None, settings: Settings) -> str | None:
    """The ``--inbox`` as stored: an inbox id (an address) the service handles."""
    if text is None:
        return None
    try:
        inbox = normalise_address(text)
    except ValueError as exc:
        fail(f"--inbox: {exc}", 2)
    if settings.inbox_ids and inbox not in {i.lower() for i in settings.inbox_ids}:
        fail(f"--inbox: {inbox} is not one of AUTOREPLY_INBOX_IDS", 2)
    return inbox


def _list(args: argparse.Namespace) -> int:
    settings = load_settings()

    async def work(store: Store) -> list[Suppression]:
        return await store.list_suppressions()

    entries = run_on_store(settings, work)
    if args.json:
        print(json.dumps([_as_json(entry) for entry in entries], indent=2))
        return 0
    if not entries:
        print("no suppressed addresses")
        return 0
    for entry in entries:
        inbox = "every inbox" if entry.inbox_id == ALL_INBOXES else entry.inbox_id
        since = datetime.fromtimestamp(entry.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        why = f"{entry.cause}: {entry.reason}" if entry.reason else entry.cause
        about = f" (reply {entry.message_id})" if entry.message_id else ""
        print(f"{entry.address}  {inbox}  {why}{about}  since {since}")
    print(f"{len(entries)} suppressed")
    return 0


def _as_json(entry: Suppression) -> dict[str, Any]:
    return {
        "address": entry.address,
        "inbox_id": entry.inbox_id,
        "cause": entry.cause,
        "reason": entry.reason,
        "message_id": entry.message_id,
        "created_at": entry.created_at,
    }


def _add(args: argparse.Namespace) -> int:
    address = _address(args.address)
    settings = load_settings()
    inbox = _inbox(args.inbox, settings) or ALL_INBOXES
    reason = _reason(args.reason)

    async def work(store: Store) -> bool:
        return await store.add_suppression(
            inbox_id=inbox, address=address, reason=reason, now=time.time()
        )

    where = "every inbox" if inbox == ALL_INBOXES else inbox
    if run_on_store(settings, work):
        print(f"suppressed {address} for {where}")
    else:
        print(f"{address} was already suppressed for {where}; left as it was")
    return 0


def _remove(args: argparse.Namespace) -> int:
    address = _address(args.address, strict=False)
    settings = load_settings()
    inbox = _inbox(args.inbox, settings)

    async def work(store: Store) -> tuple[int, list[Suppression]]:
        removed = await store.remove_suppression(address=address, inbox_id=inbox, now=time.time())
        everywhere = [
            e
            for e in await store.list_suppressions()
            if e.address == address and e.inbox_id == ALL_INBOXES
        ]
        return removed, everywhere

    removed, everywhere = run_on_store(settings, work)
    if not removed:
        if inbox and everywhere:
            # Not "not suppressed": the entry for every inbox still suppresses it there.
            print(
                f"autoreply: {address} has no entry for {inbox}, but is suppressed for "
                "every inbox; remove it without --inbox",
                file=sys.stderr,
            )
            return 1
        where = f" for {inbox}" if inbox else ""
        print(f"autoreply: {address} is not suppressed{where}", file=sys.stderr)
        return 1
    print(f"removed {removed} entr{'y' if removed == 1 else 'ies'} for {address}")
    for entry in everywhere:
        print(f"  still suppressed for every inbox ({entry.cause}); remove it without --inbox")
    return 0
