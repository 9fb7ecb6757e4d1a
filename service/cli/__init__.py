"""The ``autoreply`` command line: one entry point, one module per group of verbs.

* ``serve``: ``serve``, ``register``, ``migrate`` (the service itself)
* ``ops``: ``status``, ``requeue`` (operating it)
* ``sweep``: ``sweep --since`` (answering mail no webhook delivered)
* ``suppressions``: ``suppressions list|add|remove`` (the addresses never answered)
* ``templates``: ``templates check|preview`` (tuning replies)
* ``drafts``: ``drafts list|send`` (reply drafts awaiting review, in draft mode)
* ``demo``: ``demo``, ``dev`` (the service and the sandbox in one process, see ``dev``)
* the sandbox's own verbs come from ``service.sandbox.cli``

Each module registers its verbs through ``add_commands(subparsers)``; this one only
dispatches, and holds what every verb shares: ``load_settings``, ``with_store`` (and
``run_on_store``, which exits 1 when the store is unavailable) and ``fail``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from service import __version__
from service.settings import Settings, SettingsError

if TYPE_CHECKING:
    from service.store import Store

Command = Callable[[argparse.Namespace], int]
T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every verb registered."""
    from service.cli import demo, drafts, ops, serve, suppressions, sweep, templates
    from service.sandbox import cli as sandbox_cli

    parser = argparse.ArgumentParser(
        prog="autoreply",
        description="Auto-reply service for AgentMail inboxes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve.add_commands(subparsers)
    demo.add_commands(subparsers)
    sandbox_cli.add_commands(subparsers)
    templates.add_commands(subparsers)
    ops.add_commands(subparsers)
    drafts.add_commands(subparsers)
    sweep.add_commands(subparsers)
    suppressions.add_commands(subparsers)
    return parser


def load_settings() -> Settings:
    """Settings from the environment, or exit 2 with the one-line reason."""
    try:
        return Settings.from_environ()
    except SettingsError as exc:
        fail(f"configuration error: {exc}", 2)


def with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store, run ``work`` on it, close it; ``StoreUnavailable`` if it cannot.

    An SQLite file that does not exist is refused rather than created: an empty new
    database would hide a wrong path (``autoreply migrate`` creates one on purpose).
    """
    from service.store import StoreUnavailable, open_store

    url = settings.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise StoreUnavailable(f"no SQLite database at {url.removeprefix('sqlite:///')}")

    async def run() -> T:
        store = open_store(url)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def run_on_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    """``with_store``, or exit 1 with ``autoreply: store unavailable: <why>``."""
    from service.store import StoreUnavailable

    try:
        return with_store(settings, work)
    except StoreUnavailable as exc:
        fail(f"store unavailable: {exc}", 1)


def fail(message: str, code: int) -> NoReturn:
    """Print ``autoreply: message`` on stderr and exit with ``code``: no traceback."""
    print(f"autoreply: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
