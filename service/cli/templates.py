"""``autoreply templates check|preview``: tune replies without sending anything.

``check`` renders every template and rule against sample messages and prints each
problem as ``file:line: message``; ``preview`` prints a reply exactly as it would be
sent, which rule chose it, the message's grace period (``delay``) and the reply's mode
(``send`` or ``draft``) and what chose that (a rule's ``mode``, else ``AUTOREPLY_MODE``);
``--at`` says when the message was received, for rules with ``weekly`` or ``dates``.
Both read ``AUTOREPLY_TEMPLATES_DIR``, ``AUTOREPLY_TIMEZONE`` (and ``preview``
``AUTOREPLY_REPLY_DELAY`` and ``AUTOREPLY_MODE``) when ``--dir`` and ``--timezone`` are
not given.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from handlers.grace import format_delay
from handlers.message import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    MESSAGE_RECEIVED,
    InboundMessage,
    PayloadError,
)
from handlers.modes import ReplyMode
from handlers.rules import Delay, reply_delay, resolve_mode
from handlers.schedule import instants
from service import templates
from service.settings import SettingsError, mode_setting, reply_delay_setting, template_settings

DEFAULT_INBOX = "inbox@example.agentmail.to"


class _Usage(Exception):
    """A one-line error for the user; the command exits 1."""


def add_commands(subparsers: Any) -> None:
    """Register ``templates check`` and ``templates preview``."""
    group = subparsers.add_parser("templates", help="check and preview reply templates")
    actions = group.add_subparsers(dest="templates_action", metavar="ACTION", required=True)

    check = actions.add_parser("check", help="render every template and rule; report errors")
    _add_common(check)
    check.set_defaults(handler=_check)

    preview = actions.add_parser("preview", help="print a reply exactly as it would be sent")
    _add_common(preview)
    preview.add_argument("--template", metavar="NAME", help="template to use (default: rules)")
    preview.add_argument("--from", dest="sender", metavar="ADDR", help="sender, 'Name <a@b>'")
    preview.add_argument("--subject", metavar="S", help="subject of the inbound message")
    preview.add_argument("--text", metavar="T", help="text body of the inbound message")
    preview.add_argument("--to", metavar="INBOX", help=f"receiving inbox (default {DEFAULT_INBOX})")
    preview.add_argument(
        "--message", type=Path, metavar="FILE", help="a message or webhook event as JSON"
    )
    preview.add_argument(
        "--at",
        metavar="WHEN",
        help="when the message was received, e.g. 2026-12-24T18:30 (in --timezone) or "
        "2026-12-24T18:30+01:00 (default: now, or the --message's timestamp)",
    )
    preview.set_defaults(handler=_preview)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", type=Path, help="templates folder (default: $AUTOREPLY_TEMPLATES_DIR)"
    )
    parser.add_argument("--timezone", help="zone for received_at (default: $AUTOREPLY_TIMEZONE)")


def _settings(args: argparse.Namespace) -> tuple[Path | None, str]:
    """The folder and zone: the flags, else the settings the service would read."""
    if args.dir is not None and args.timezone is not None:
        templates.parse_timezone(args.timezone)
        return args.dir, args.timezone
    try:
        directory, timezone = template_settings()
    except SettingsError as exc:
        raise _Usage(f"configuration error: {exc}") from None
    timezone = args.timezone or timezone
    templates.parse_timezone(timezone)
    return args.dir or directory, timezone


def _check(args: argparse.Namespace) -> int:
    """Exit 0 with a summary when every template renders, else 1 with one line per error."""
    try:
        directory, timezone = _settings(args)
    except (_Usage, ValueError) as exc:
        return _fail(str(exc))
    problems = templates.check(directory, timezone=timezone)
    for problem in problems:
        sys.stdout.write(problem + "\n")
    if problems:
        sys.stdout.write(f"{len(problems)} problem(s) found\n")
        return 1
    loaded = templates.TemplateSet.load(directory, timezone=timezone)
    where = directory or "shipped templates only"
    sys.stdout.write(
        f"ok: {len(loaded.names)} template(s) ({', '.join(loaded.names)}), "
        f"{len(loaded.rules.rules)} rule(s), default {loaded.rules.default!r} [{where}]\n"
    )
    return 0


def _preview(args: argparse.Namespace) -> int:
    """Print the reply the service would send for one message, and what chose it."""
    try:
        directory, timezone = _settings(args)
        message = _message(args)
        if args.at is not None:
            message = replace(message, timestamp=_received_at(args.at, timezone))
        loaded = templates.TemplateSet.load(directory, timezone=timezone)
        choice = loaded.choose(message, template=args.template)
        rendered = None
        if choice.skip_rule is None:
            rendered = loaded.render_choice(choice, message, received_at=message.timestamp)
        received = message.timestamp or datetime.now(UTC)  # _message always sets it
        delay = reply_delay(loaded.rules, message, _default_delay(), received_at=received)
        mode, mode_by = resolve_mode(choice, _global_mode())
    except (_Usage, ValueError, templates.TemplateError) as exc:
        return _fail(str(exc))
    out = sys.stdout
    if args.at is not None or choice.window is not None:
        out.write(f"received: {_when(received.astimezone(loaded.timezone))}\n")
    if choice.window is not None:
        start, end = choice.window.start, choice.window.end
        out.write(f"window: {_when(start)} to {_when(end)}\n")
    if rendered is None:
        out.write(f"chosen by: rule {choice.rule_name!r}\n")
        out.write(f"action: skip, no reply is sent (reason rule:{choice.rule_name})\n")
        return 0
    out.write(f"template: {rendered.template} ({loaded.source(rendered.template)})\n")
    out.write(f"chosen by: {_chosen_by(args.template, rendered.rule)}\n")
    out.write(f"delay: {_delay(delay)}\n")
    out.write(f"mode: {mode} (chosen by {mode_by})\n")
    _write_part(templates.TEXT_FILE, rendered.text)
    if rendered.html is None:
        out.write(f"--- {templates.HTML_FILE}: none, the reply is plain text only ---\n")
    else:
        _write_part(templates.HTML_FILE, rendered.html)
    return 0


def _default_delay() -> timedelta:
    """``AUTOREPLY_REPLY_DELAY`` as the service would read it."""
    try:
        return reply_delay_setting()
    except SettingsError as exc:
        raise _Usage(f"configuration error: {exc}") from None


def _global_mode() -> ReplyMode:
    """``AUTOREPLY_MODE`` as the service would read it."""
    try:
        return mode_setting()
    except SettingsError as exc:
        raise _Usage(f"configuration error: {exc}") from None


def _delay(delay: Delay) -> str:
    """The grace period line: how long, what set it, and what it means."""
    source = f"rule {delay.rule_name!r}" if delay.rule_name else "AUTOREPLY_REPLY_DELAY"
    if not delay.delay:
        return f"0 ({source}): answered at once"
    return (
        f"{format_delay(delay.delay)} ({source}): decided {format_delay(delay.delay)} after "
        "it arrives; not answered if someone answers the thread first"
    )


def _received_at(text: str, timezone: str) -> datetime:
    """``--at``: an ISO 8601 date and time; without an offset, wall-clock time in the
    templates' zone, refused when that zone's clock skips it or shows it twice."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _Usage(
            f"--at {text!r} is not a date and time; write e.g. 2026-12-24T18:30 "
            "or 2026-12-24T18:30+01:00"
        ) from None
    first, last = EARLIEST_TIMESTAMP.year, LATEST_TIMESTAMP.year - 1
    if not first <= moment.year <= last or (
        moment.tzinfo is not None and not EARLIEST_TIMESTAMP <= moment <= LATEST_TIMESTAMP
    ):
        # As for a message's timestamp: the rules' date arithmetic stops at the calendar's ends.
        raise _Usage(f"--at {text}: use a year from {first} to {last}")
    if moment.tzinfo is not None:
        return moment
    zone = ZoneInfo(timezone)
    found = instants(moment, zone)
    if len(found) == 2:
        offsets = " or ".join(_offset(m) for m in found)
        raise _Usage(
            f"--at {text}: clocks in {timezone} show that time twice (they go back); "
            f"add the offset: {offsets}"
        )
    if found[0].replace(tzinfo=None) != moment:
        raise _Usage(
            f"--at {text}: clocks in {timezone} skip that time (they jump forward to "
            f"{found[0]:%H:%M}); no message can be received then"
        )
    return found[0]


def _offset(moment: datetime) -> str:
    text = moment.strftime("%z")
    return f"{text[:3]}:{text[3:]}"


def _when(moment: datetime | None) -> str:
    """A moment as people read it: ``Thursday 2026-12-24 18:30 CET (+01:00)``."""
    if moment is None:
        return "(none within 400 days)"
    return f"{moment:%A %Y-%m-%d %H:%M} {moment.tzname()} ({_offset(moment)})"


def _chosen_by(forced: str | None, rule: str | None) -> str:
    if forced is not None:
        return "--template" + (f" (with the vars of rule {rule!r})" if rule else "")
    return f"rule {rule!r}" if rule else "default (no rule matched)"


def _write_part(name: str, body: str) -> None:
    sys.stdout.write(f"--- {name} ---\n{body}")
    if not body.endswith("\n"):
        sys.stdout.write("\n--- (no newline at end of the body) ---\n")


def _message(args: argparse.Namespace) -> InboundMessage:
    flags = [args.sender, args.subject, args.text, args.to]
    if args.message is not None:
        if any(flag is not None for flag in flags):
            raise _Usage("--message cannot be combined with --from, --subject, --text or --to")
        return _message_from_file(args.message)
    inbox = args.to or DEFAULT_INBOX
    return InboundMessage(
        event_type=MESSAGE_RECEIVED,
        inbox_id=inbox,
        message_id="<preview@autoreply.invalid>",
        thread_id="preview",
        sender=args.sender or "Jane Doe <jane@example.com>",
        to=(inbox,),
        subject="Hello" if args.subject is None else args.subject,
        text="Hello, I have a question about my order." if args.text is None else args.text,
        timestamp=datetime.now(UTC),
    )


def _message_from_file(path: Path) -> InboundMessage:
    """A message from a JSON file holding a webhook event or a bare message object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _Usage(f"{path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _Usage(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _Usage(f"{path}: expected a JSON object")
    event_type = data.get("event_type", MESSAGE_RECEIVED)
    payload = data.get("message", data)
    try:
        message = InboundMessage.from_payload(payload, event_type=str(event_type))
    except PayloadError as exc:
        raise _Usage(f"{path}: {exc}") from None
    if message.timestamp is None:
        return replace(message, timestamp=datetime.now(UTC))
    return message


def _fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 1
