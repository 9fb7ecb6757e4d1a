"""The ``autoreply`` command line: one entry point for every verb.

Each verb lives next to the code it drives and registers itself here through an
``add_commands(subparsers)`` function, so this module stays a thin dispatcher.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from service import __version__

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every verb registered."""
    from service import commands, demo, ops_commands, templates_cli
    from service.sandbox import cli as sandbox_cli

    parser = argparse.ArgumentParser(
        prog="autoreply",
        description="Auto-reply service for AgentMail inboxes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_commands(subparsers)
    demo.add_commands(subparsers)
    sandbox_cli.add_commands(subparsers)
    templates_cli.add_commands(subparsers)
    ops_commands.add_commands(subparsers)
    return parser


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
