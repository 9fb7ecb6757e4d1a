"""``autoreply sandbox``: run the sandbox, or talk to a running one.

* ``autoreply sandbox [--host] [--port] [--api-key KEY ...] [--inbox ADDR ...] [--time-scale X]``
  serves it with uvicorn until Ctrl-C;
* ``autoreply sandbox send --from … --to … --subject … --text …`` injects an inbound email;
* ``autoreply sandbox reply --message-id ID | --thread-id ID [--text …]`` answers it in its
  thread as a person would (a sent reply from the inbox, with its ``message.sent`` event);
* ``autoreply sandbox sent | deliveries | webhooks | reset`` read back or reset;
* ``autoreply sandbox bounce INBOX MESSAGE_ID [--type T] [--recipient ADDR ...]`` and
  ``autoreply sandbox complain INBOX MESSAGE_ID ...`` make a sent message bounce, or a
  recipient report it as spam (``message.bounced`` / ``message.complained``);
* ``autoreply sandbox drafts | send-draft ID | delete-draft ID`` list the drafts, and send
  or discard one as a person would from AgentMail's console;
* ``autoreply sandbox disable-webhook ID | delete-webhook ID | drop ID [--seconds N | --stop]``
  create the missed-webhook situations, and ``autoreply sandbox clock [--advance S | --set T]``
  reads or moves the sandbox clock.

The verbs talk to ``--url`` (default: ``$AUTOREPLY_SANDBOX_URL`` or
``http://127.0.0.1:9100``). Failures print one line to stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from service.sandbox.app import create_sandbox_app
from service.sandbox.client import (
    DEFAULT_URL,
    SERVER_KEEP_ALIVE_SECONDS,
    SandboxClient,
    SandboxError,
)
from service.sandbox.reports import FeedbackResult
from service.sandbox.state import DEFAULT_API_KEYS, DEFAULT_INBOXES

URL_ENV = "AUTOREPLY_SANDBOX_URL"
DEFAULT_PORT = 9100


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``sandbox`` and its verbs on the ``autoreply`` parser."""
    parser = subparsers.add_parser(
        "sandbox",
        help="run the local AgentMail sandbox, or inject mail into a running one",
        description="Run the local AgentMail sandbox (REST API under /v0, admin API under "
        "/_sandbox) until Ctrl-C, or use a verb to talk to a running one.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on (0: any free port)"
    )
    parser.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        metavar="KEY",
        help=f"accepted API key, repeatable (default: {DEFAULT_API_KEYS[0]})",
    )
    parser.add_argument(
        "--inbox",
        dest="inboxes",
        action="append",
        metavar="ADDR",
        help=f"inbox created at start, repeatable (default: {DEFAULT_INBOXES[0]})",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply webhook retry delays by this (e.g. 0.001)",
    )
    parser.add_argument(
        "--attempt-timeout",
        type=float,
        default=15.0,
        help="seconds a webhook receiver may take per attempt",
    )
    parser.add_argument("--seed", type=int, help="make ids and fault draws repeatable")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level (info shows each request)",
    )
    parser.set_defaults(handler=run_server)

    verbs = parser.add_subparsers(dest="sandbox_verb", metavar="VERB")
    send = verbs.add_parser("send", help="inject an inbound email into a running sandbox")
    send.add_argument("--from", dest="sender", required=True, metavar="ADDR")
    send.add_argument("--to", action="append", required=True, metavar="ADDR")
    send.add_argument("--cc", action="append", metavar="ADDR")
    send.add_argument("--reply-to", action="append", metavar="ADDR")
    send.add_argument("--subject")
    send.add_argument("--text")
    send.add_argument("--html")
    send.add_argument(
        "--header", action="append", default=[], metavar="'NAME: VALUE'", help="repeatable"
    )
    send.add_argument(
        "--event-type",
        choices=[
            "message.received",
            "message.received.spam",
            "message.received.blocked",
            "message.received.unauthenticated",
        ],
    )
    send.add_argument("--in-reply-to", metavar="MESSAGE_ID")
    send.add_argument("--inbox-id", help="target inbox (default: the first sandbox --to)")
    send.add_argument("--copies", type=int, help="deliver N copies at once (duplicate storm)")
    send.add_argument("--json", action="store_true", help="print the raw JSON answer")
    _add_url(send)
    send.set_defaults(handler=_verb(_send))

    reply = verbs.add_parser(
        "reply",
        help="answer a message in its thread as a person would",
        description="Reply from the inbox, as a person in AgentMail's console would: the "
        "reply is sent in the thread like one through the API, with its message.sent event.",
    )
    which = reply.add_mutually_exclusive_group(required=True)
    which.add_argument("--message-id", metavar="MESSAGE_ID", help="the message to answer")
    which.add_argument(
        "--thread-id", metavar="THREAD_ID", help="answer the thread's newest received message"
    )
    reply.add_argument("--inbox-id", help="the inbox (when several hold the message)")
    reply.add_argument("--text", help="the reply's text (default: a short answer)")
    reply.add_argument("--html")
    reply.add_argument("--json", action="store_true", help="print the raw JSON answer")
    _add_url(reply)
    reply.set_defaults(handler=_verb(_reply))

    for name, fn, text in (
        ("sent", _sent, "list the emails the sandbox sent"),
        ("deliveries", _deliveries, "list webhook deliveries and their attempts"),
    ):
        verb = verbs.add_parser(name, help=text)
        verb.add_argument("--json", action="store_true", help="print the raw JSON answer")
        _add_url(verb)
        verb.set_defaults(handler=_verb(fn))

    for name, fn, text, default in (
        ("bounce", _bounce, "make a sent message bounce (message.bounced)", "Permanent"),
        ("complain", _complain, "report a sent message as spam (message.complained)", "abuse"),
    ):
        verb = verbs.add_parser(name, help=text)
        verb.add_argument("inbox_id", metavar="INBOX")
        verb.add_argument("message_id", metavar="MESSAGE_ID", help="a message the inbox sent")
        verb.add_argument("--type", dest="type_", help=f"the event's type (default {default})")
        verb.add_argument("--sub-type", help="the event's sub_type")
        verb.add_argument(
            "--recipient",
            dest="recipients",
            action="append",
            metavar="ADDR",
            help="repeatable (default: every recipient of the message)",
        )
        verb.add_argument("--json", action="store_true", help="print the raw JSON answer")
        _add_url(verb)
        verb.set_defaults(handler=_verb(fn))

    listing = verbs.add_parser("webhooks", help="list every webhook and its drop window")
    listing.add_argument("--json", action="store_true", help="print the raw JSON answer")
    _add_url(listing)
    listing.set_defaults(handler=_verb(_webhooks))

    drafts = verbs.add_parser("drafts", help="list the drafts of every inbox")
    drafts.add_argument("--json", action="store_true", help="print the raw JSON answer")
    _add_url(drafts)
    drafts.set_defaults(handler=_verb(_drafts))

    for name, fn, text in (
        ("send-draft", _send_draft, "send a draft as a person would from the console"),
        ("delete-draft", _delete_draft, "discard a draft as a person would from the console"),
    ):
        verb = verbs.add_parser(name, help=text)
        verb.add_argument("draft_id", metavar="DRAFT_ID")
        _add_url(verb)
        verb.set_defaults(handler=_verb(fn))

    for name, fn, text in (
        ("disable-webhook", _disable_webhook, "disable a webhook (as after repeated failures)"),
        ("delete-webhook", _delete_webhook, "delete a webhook"),
    ):
        verb = verbs.add_parser(name, help=text)
        verb.add_argument("webhook_id", metavar="WEBHOOK_ID")
        _add_url(verb)
        verb.set_defaults(handler=_verb(fn))

    drop = verbs.add_parser(
        "drop", help="drop deliveries to a webhook for a while (they are never sent)"
    )
    drop.add_argument("webhook_id", metavar="WEBHOOK_ID")
    window = drop.add_mutually_exclusive_group()
    window.add_argument(
        "--seconds", type=float, help="length of the window in sandbox time (default: until --stop)"
    )
    window.add_argument("--stop", action="store_true", help="end the drop window now")
    _add_url(drop)
    drop.set_defaults(handler=_verb(_drop))

    clock = verbs.add_parser("clock", help="show or move the sandbox clock")
    move = clock.add_mutually_exclusive_group()
    move.add_argument("--advance", type=float, metavar="SECONDS", help="move it (negative: back)")
    move.add_argument("--set", dest="set_to", metavar="ISO-8601", help="set it to this time")
    _add_url(clock)
    clock.set_defaults(handler=_verb(_clock))

    reset = verbs.add_parser("reset", help="clear everything but the start-up inboxes")
    _add_url(reset)
    reset.set_defaults(handler=_verb(_reset))


def _add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV) or DEFAULT_URL,
        help=f"sandbox URL (default: ${URL_ENV} or {DEFAULT_URL})",
    )


# -- running the server -----------------------------------------------------------


def run_server(args: argparse.Namespace) -> int:
    """Serve the sandbox until Ctrl-C; print one line with URL, API key and inboxes."""
    api_keys = args.api_keys or list(DEFAULT_API_KEYS)
    try:
        app = create_sandbox_app(
            api_keys=api_keys,
            inboxes=args.inboxes or list(DEFAULT_INBOXES),
            time_scale=args.time_scale,
            attempt_timeout=args.attempt_timeout,
            seed=args.seed,
        )
    except ValueError as exc:
        return _error(str(exc))
    sandbox = app.state.sandbox
    try:
        sock = _listen(args.host, args.port)
    except OSError as exc:
        return _error(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"AgentMail sandbox on http://{host}:{port} - API key {', '.join(api_keys)} - "
        f"inboxes {', '.join(sandbox.initial_inbox_ids)} (Ctrl-C to stop)",
        flush=True,
    )
    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        ws="none",
        lifespan="on",
        timeout_keep_alive=SERVER_KEEP_ALIVE_SECONDS,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front, so a busy port is a clear error, not a log line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening now means connections made right after the banner wait in the backlog.
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


# -- verbs ------------------------------------------------------------------------


def _verb(fn: Callable[[SandboxClient, argparse.Namespace], int]) -> Callable[..., int]:
    """Run a verb with a client for ``--url``; SandboxErrors become one-line errors."""

    def handler(args: argparse.Namespace) -> int:
        try:
            with SandboxClient(args.url) as client:
                return fn(client, args)
        except SandboxError as exc:
            if exc.status is None:
                return _error(f"{exc}; is `autoreply sandbox` running?")
            return _error(str(exc))

    return handler


def _headers(raw: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise SandboxError(f"--header wants 'Name: value', got {item!r}", 400)
        headers[name.strip()] = value.strip()
    return headers


def _send(client: SandboxClient, args: argparse.Namespace) -> int:
    result = client.inject(
        inbox_id=args.inbox_id,
        from_=args.sender,
        to=args.to,
        cc=args.cc,
        reply_to=args.reply_to,
        subject=args.subject,
        text=args.text,
        html=args.html,
        headers=_headers(args.header) or None,
        event_type=args.event_type,
        in_reply_to=args.in_reply_to,
        copies=args.copies,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"message {result['message_id']} in {result['inbox_id']} (thread {result['thread_id']})")
    print(f"event {result['event_id']}, {len(result['deliveries'])} deliveries")
    for ref in result["deliveries"]:
        print(f"  {ref['delivery_id']} -> webhook {ref['webhook_id']} (svix-id {ref['svix_id']})")
    return 0


def _bounce(client: SandboxClient, args: argparse.Namespace) -> int:
    result = client.bounce(
        args.inbox_id,
        args.message_id,
        type_=args.type_,
        sub_type=args.sub_type,
        recipients=args.recipients,
    )
    return _print_feedback(result, args)


def _complain(client: SandboxClient, args: argparse.Namespace) -> int:
    result = client.complain(
        args.inbox_id,
        args.message_id,
        type_=args.type_,
        sub_type=args.sub_type,
        recipients=args.recipients,
    )
    return _print_feedback(result, args)


def _print_feedback(result: FeedbackResult, args: argparse.Namespace) -> int:
    if args.json:
        return _print_json(result)
    print(
        f"{result['event_type']} {result['event_id']} for {result['message_id']}"
        f" ({', '.join(result['recipients'])}), {len(result['deliveries'])} deliveries"
    )
    for ref in result["deliveries"]:
        print(f"  {ref['delivery_id']} -> webhook {ref['webhook_id']} (svix-id {ref['svix_id']})")
    return 0


def _reply(client: SandboxClient, args: argparse.Namespace) -> int:
    result = client.reply(
        message_id=args.message_id,
        thread_id=args.thread_id,
        inbox_id=args.inbox_id,
        text=args.text,
        html=args.html,
    )
    if args.json:
        return _print_json(result)
    print(
        f"replied {result['message_id']} from {result['inbox_id']} to {result['in_reply_to']} "
        f"(thread {result['thread_id']})"
    )
    return 0


def _print_json(data: Any) -> int:
    print(json.dumps(data, indent=2))
    return 0


def _sent(client: SandboxClient, args: argparse.Namespace) -> int:
    emails = client.sent()
    if args.json:
        return _print_json(emails)
    if not emails:
        print("no emails sent")
    for email in emails:
        to = ", ".join(email["to"])
        key = f" key={email['idempotency_key']}" if email["idempotency_key"] else ""
        print(
            f"{email['at']} {email['operation']} {email['inbox_id']} -> {to} "
            f"{email['subject']!r} {email['message_id']}{key}"
        )
    return 0


def _deliveries(client: SandboxClient, args: argparse.Namespace) -> int:
    reports = client.deliveries()
    if args.json:
        return _print_json(reports)
    if not reports:
        print("no deliveries")
    for report in reports:
        statuses = ",".join(
            str(a["status"]) if a["status"] is not None else "-" for a in report["attempts"]
        )
        print(
            f"{report['delivery_id']} {report['event_type']} {report['state']} "
            f"attempts=[{statuses}] svix-id={report['svix_id']} {report['url']}"
        )
    return 0


def _reset(client: SandboxClient, _args: argparse.Namespace) -> int:
    client.reset()
    print("sandbox reset")
    return 0


def _webhooks(client: SandboxClient, args: argparse.Namespace) -> int:
    reports = client.webhooks()
    if args.json:
        return _print_json(reports)
    if not reports:
        print("no webhooks")
    for report in reports:
        state = "enabled" if report.get("enabled") else "disabled"
        if report.get("dropping"):
            state += f", dropping until {report.get('drop_until') or 'cleared'}"
        scope = report.get("inbox_id") or "org"
        print(f"{report.get('webhook_id')} {scope} {report.get('url')} ({state})")
    return 0


def _drafts(client: SandboxClient, args: argparse.Namespace) -> int:
    found = client.drafts()
    if args.json:
        return _print_json(found)
    if not found:
        print("no drafts")
    for draft in found:
        to = ", ".join(draft.get("to") or [])
        reply = f" in reply to {draft['in_reply_to']}" if draft.get("in_reply_to") else ""
        print(f"{draft['draft_id']} {draft['inbox_id']} -> {to} {draft.get('subject')!r}{reply}")
    return 0


def _send_draft(client: SandboxClient, args: argparse.Namespace) -> int:
    result = client.send_draft(args.draft_id)
    print(f"draft {args.draft_id} sent as {result['message_id']} (thread {result['thread_id']})")
    return 0


def _delete_draft(client: SandboxClient, args: argparse.Namespace) -> int:
    client.delete_draft(args.draft_id)
    print(f"draft {args.draft_id} deleted")
    return 0


def _disable_webhook(client: SandboxClient, args: argparse.Namespace) -> int:
    client.disable_webhook(args.webhook_id)
    print(f"webhook {args.webhook_id} disabled")
    return 0


def _delete_webhook(client: SandboxClient, args: argparse.Namespace) -> int:
    client.delete_webhook(args.webhook_id)
    print(f"webhook {args.webhook_id} deleted")
    return 0


def _drop(client: SandboxClient, args: argparse.Namespace) -> int:
    if args.stop:
        client.stop_dropping(args.webhook_id)
        print(f"webhook {args.webhook_id}: deliveries resume")
        return 0
    report = client.drop_deliveries(args.webhook_id, seconds=args.seconds)
    print(
        f"webhook {args.webhook_id}: dropping deliveries until "
        f"{report.get('drop_until') or 'cleared with --stop'}"
    )
    return 0


def _clock(client: SandboxClient, args: argparse.Namespace) -> int:
    if args.set_to is not None:
        report = client.set_clock(args.set_to)
    elif args.advance is not None:
        report = client.advance_clock(args.advance)
    else:
        report = client.clock()
    print(f"sandbox time {report['now']} (offset {report['offset_seconds']:g} s)")
    return 0
