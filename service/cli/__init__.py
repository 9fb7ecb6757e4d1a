"""The ``autoreply`` command line: one entry point, one module per group of verbs.

* ``serve``: ``serve``, ``register``, ``migrate`` (the service itself)
* ``ops``: ``status``, ``requeue`` (operating it)
* ``sweep``: ``sweep --since`` (answering mail no webhook delivered)
* ``templates``: ``templates check|preview`` (tuning replies)
* ``demo``: ``demo``, ``dev`` (the service and the sandbox in one process, see ``dev``)
* the sandbox's own verbs come from ``service.sandbox.cli``

Each module registers its verbs through ``add_commands(subparsers)``; this one only
dispatches, and holds what every verb shares: ``load_settings`` and ``fail``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from service import __version__
from service.settings import Settings, SettingsError

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every verb registered."""
    from service.cli import demo, ops, serve, sweep, templates
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
    sweep.add_commands(subparsers)
    return parser


def load_settings() -> Settings:
    """Settings from the environment, or exit 2 with the one-line reason."""
    try:
        return Settings.from_environ()
    except SettingsError as exc:
        fail(f"configuration error: {exc}", 2)


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
