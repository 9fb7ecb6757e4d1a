"""The reply policy: one row per rule, with the near misses that must still be answered."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.message import Headers, InboundMessage
from handlers.policy import (
    REASONS,
    Decision,
    History,
    PolicyConfig,
    check_limits,
    decide,
    parse_duration,
    parse_patterns,
)

INBOX = "support@example.agentmail.to"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def message(*, headers: Any = (), **fields: Any) -> InboundMessage:
    """An ordinary message to INBOX from Jane, changed by ``fields``."""
    base: dict[str, Any] = {
        "event_type": "message.received",
        "inbox_id": INBOX,
        "message_id": "<m1@example.com>",
        "thread_id": "t1",
        "sender": "Jane Doe <jane@example.com>",
        "to": (f"Support <{INBOX}>",),
        "subject": "Hello",
        "text": "Hi!",
        "labels": frozenset({"received", "unread"}),
        "headers": Headers.parse([list(pair) for pair in headers]),
    }
    return InboundMessage(**(base | fields))


ROWS: list[tuple[str, InboundMessage, PolicyConfig, History, str]] = []


def row(
    name: str,
    reason: str,
    msg: InboundMessage | None = None,
    *,
    config: PolicyConfig | None = None,
    history: History | None = None,
) -> None:
    ROWS.append((name, msg or message(), config or PolicyConfig(), history or History(), reason))


row("plain mail is answered", "ok")
# Event and labels
row("spam event variant", "not_plain_received", message(event_type="message.received.spam"))
row("blocked event variant", "not_plain_received", message(event_type="message.received.blocked"))
for label in ("spam", "blocked", "unauthenticated", "Spam"):
    row(f"label {label}", "spam_label", message(labels=frozenset({"received", label})))
row("replied label", "already_replied", message(labels=frozenset({"received", "replied"})))
row("replied label, other case", "already_replied", message(labels=frozenset({"Replied"})))
# Sender
row("sender without address", "invalid_sender", message(sender="undisclosed-recipients"))
row("sender with empty address", "invalid_sender", message(sender="Jane <>"))
for bad in ("ja\x00ne@example.com", "Jane <jane@exa\x1bmple.com>", "jane\x85@example.com"):
    row(f"sender with control character {bad!r}", "invalid_sender", message(sender=bad))
row("sender with lone surrogate", "invalid_sender", message(sender="jane\udcff@example.com"))
row("sender with non-ASCII address", "ok", message(sender="Zoë <zoë@exämple.com>"))
# Return-Path
for value in ("<>", "", " < > "):
    rp = message(headers=[("Return-Path", value)])
    row(f"Return-Path {value!r}", "null_return_path", rp)
row("Return-Path with address", "ok", message(headers=[("Return-Path", "<jane@example.com>")]))
row(
    "repeated Return-Path, one null",
    "null_return_path",
    message(headers=[("Return-Path", "<jane@example.com>"), ("return-path", "<>")]),
)
# Own addresses
row("from the inbox itself", "own_address", message(sender=f"Us <{INBOX.upper()}>"))
row(
    "from another inbox we handle",
    "own_address",
    message(sender="sales@example.agentmail.to"),
    config=PolicyConfig(own_addresses=frozenset({"sales@example.agentmail.to"})),
)
# Auto-Submitted (RFC 3834 section 5)
for value in ("auto-replied", "auto-generated", "Auto-Replied; owner-email=x@y", "x-custom"):
    row(f"Auto-Submitted: {value}", "auto_submitted", message(headers=[("Auto-Submitted", value)]))
row(
    "auto-replied with comment",
    "auto_submitted",
    message(headers=[("Auto-Submitted", "auto-replied (vacation)")]),
)
row(
    "header name in lower case",
    "auto_submitted",
    message(headers=[("auto-submitted", "auto-replied")]),
)
row(
    "header name in upper case",
    "auto_submitted",
    message(headers=[("AUTO-SUBMITTED", "auto-replied")]),
)
row(
    "repeated Auto-Submitted, second not no",
    "auto_submitted",
    message(headers=[("Auto-Submitted", "no"), ("Auto-Submitted", "auto-generated")]),
)
for value in ("no", "No", "no; reason=human", "no (typed by hand)"):
    row(f"near miss Auto-Submitted: {value}", "ok", message(headers=[("Auto-Submitted", value)]))
# Precedence
for value in ("bulk", "JUNK", "list", "bulk (newsletter)"):
    row(f"Precedence: {value}", "precedence", message(headers=[("Precedence", value)]))
for value in ("first-class", "normal", "bulky"):
    row(f"near miss Precedence: {value}", "ok", message(headers=[("Precedence", value)]))
row(
    "repeated Precedence, second bulk",
    "precedence",
    message(headers=[("Precedence", "normal"), ("precedence", "bulk")]),
)
# List headers (RFC 2369, RFC 2919)
for name in (
    "List-Id",
    "List-Unsubscribe",
    "List-Post",
    "List-Owner",
    "List-Subscribe",
    "List-Help",
    "List-Archive",
    "list-id",
    "LIST-UNSUBSCRIBE",
):
    row(f"{name} header", "list_header", message(headers=[(name, "<x.lists.example.com>")]))
row("near miss List-Whatever", "ok", message(headers=[("List-Whatever", "x")]))
# The X-Auto-Response-Suppress header of Exchange, MS-OXCMAIL 2.1.3.2.20
for value in ("All", "OOF", "AutoReply", "DR, RN, NRN, OOF, AutoReply", "all", "dr,autoreply"):
    msg = message(headers=[("X-Auto-Response-Suppress", value)])
    row(f"X-Auto-Response-Suppress: {value}", "x_auto_response_suppress", msg)
for value in ("DR", "None", "NDR, RN"):
    msg = message(headers=[("x-auto-response-suppress", value)])
    row(f"near miss X-Auto-Response-Suppress: {value}", "ok", msg)
# System senders (RFC 3834 section 2, RFC 5230 section 4.6)
for local in (
    "MAILER-DAEMON",
    "postmaster",
    "LISTSERV",
    "majordomo",
    "owner-list",
    "list-request",
    "noreply",
    "No-Reply",
    "donotreply",
    "noreply+123",
):
    row(f"sender {local}@", "system_sender", message(sender=f"{local}@lists.example.com"))
for local in ("owner", "request", "requests-team", "replyno", "jane-requester", "owners"):
    row(f"near miss sender {local}@", "ok", message(sender=f"{local}@example.com"))
row(
    "Return-Path of a list owner",
    "system_sender",
    message(headers=[("Return-Path", "<owner-announce@lists.example.com>")]),
)
# Recipient check (RFC 5230 section 4.5)
not_to_us = message(to=("someone-else@example.com",))
row("inbox in neither To nor Cc", "not_a_recipient", not_to_us)
row("inbox in Cc", "ok", message(to=("a@example.com",), cc=(INBOX,)))
row("inbox in To, other case", "ok", message(to=(f"<{INBOX.upper()}>",)))
for header in ("Bcc", "Resent-To", "resent-cc", "Resent-Bcc"):
    msg = message(to=("a@example.com",), headers=[(header, f"Support <{INBOX}>")])
    row(f"inbox in {header} header", "ok", msg)
row(
    "recipient check turned off",
    "ok",
    not_to_us,
    config=PolicyConfig(require_recipient=False),
)
mass_mail = (*(f"user{i}@example.com" for i in range(900)), INBOX)
row("mass mail: a To list of 900 addresses", "too_many_recipients", message(to=mass_mail))
row(
    "mass mail in a Bcc header",
    "too_many_recipients",
    message(headers=[("Bcc", ", ".join(mass_mail))]),
)
row("a To list of 300 addresses is read", "ok", message(to=mass_mail[-300:]))
row(
    "mass mail with the recipient check turned off",
    "ok",
    message(to=mass_mail),
    config=PolicyConfig(require_recipient=False),
)
# Deny and allow lists
for pattern in ("example.com", "@example.com", "jane@example.com", "JANE@EXAMPLE.COM"):
    row(f"deny {pattern}", "denied", config=PolicyConfig(deny=(pattern,)))
row(
    "deny a parent domain",
    "denied",
    message(sender="jane@mail.example.com"),
    config=PolicyConfig(deny=("example.com",)),
)
row("near miss deny ample.com", "ok", config=PolicyConfig(deny=("ample.com",)))
row("near miss deny another address", "ok", config=PolicyConfig(deny=("john@example.com",)))
row("not on the allow list", "not_allowed", config=PolicyConfig(allow=("example.org",)))
row("on the allow list", "ok", config=PolicyConfig(allow=("example.org", "example.com")))
row(
    "deny wins over allow",
    "denied",
    config=PolicyConfig(allow=("example.com",), deny=("jane@example.com",)),
)
# The suppression list (the store looks the sender up; History carries the entry)
gone = History(suppressed="bounce: Permanent/General")
row("sender on the suppression list", "suppressed", history=gone)
row(
    "suppressed and too old: suppressed, the stronger reason",
    "suppressed",
    message(timestamp=NOW - timedelta(days=4)),
    history=gone,
)
row(
    "denied and suppressed: denied comes first",
    "denied",
    config=PolicyConfig(deny=("example.com",)),
    history=gone,
)
# Age (AUTOREPLY_MAX_AGE, default 3 days)
row("older than the max age", "too_old", message(timestamp=NOW - timedelta(days=3, seconds=1)))
row("exactly the max age", "ok", message(timestamp=NOW - timedelta(days=3)))
row("two days old", "ok", message(timestamp=NOW - timedelta(days=2)))
row("from the future (clock skew)", "ok", message(timestamp=NOW + timedelta(hours=1)))
row("without a timestamp", "ok", message(timestamp=None))
row(
    "max age disabled",
    "ok",
    message(timestamp=NOW - timedelta(days=365)),
    config=PolicyConfig(max_age=timedelta(0)),
)
row(
    "a shorter max age",
    "too_old",
    message(timestamp=NOW - timedelta(hours=2)),
    config=PolicyConfig(max_age=timedelta(hours=1)),
)
# Per-thread cap
row("thread cap reached", "thread_cap", history=History(replies_in_thread=1))
row(
    "below a larger cap",
    "ok",
    config=PolicyConfig(thread_cap=2),
    history=History(replies_in_thread=1),
)
row("no cap", "ok", config=PolicyConfig(thread_cap=0), history=History(replies_in_thread=9))
# Sender cooldown
recent = History(last_reply_to_sender_at=NOW - timedelta(hours=1))
row("answered this sender an hour ago", "sender_cooldown", history=recent)
row(
    "answered this sender two days ago",
    "ok",
    history=History(last_reply_to_sender_at=NOW - timedelta(days=2)),
)
row(
    "exactly one cooldown ago",
    "ok",
    history=History(last_reply_to_sender_at=NOW - timedelta(days=1)),
)
row("cooldown disabled", "ok", config=PolicyConfig(sender_cooldown=timedelta(0)), history=recent)


@pytest.mark.parametrize(
    ("msg", "config", "history", "reason"),
    [pytest.param(*rest, id=name) for name, *rest in ROWS],
)
def test_decide(msg: InboundMessage, config: PolicyConfig, history: History, reason: str) -> None:
    """Each rule skips with its reason, and each near miss is still answered."""
    decision = decide(msg, config, history, now=NOW)
    assert (decision.reply, decision.reason) == (reason == "ok", reason), decision.detail


LIMIT_ROWS = [
    r for r in ROWS if r[1] == message() and r[-1] in ("ok", "thread_cap", "sender_cooldown")
]


@pytest.mark.parametrize(
    ("config", "history", "reason"),
    [
        pytest.param(config, history, reason, id=name)
        for name, _, config, history, reason in LIMIT_ROWS
    ],
)
def test_check_limits_agrees_with_decide(
    config: PolicyConfig, history: History, reason: str
) -> None:
    """The limits the store enforces when it reserves are decide's own two rules, with
    the same reasons: a skip at reservation reads like a skip at decision."""
    assert check_limits(config, history, now=NOW) == decide(message(), config, history, now=NOW)
    assert check_limits(config, history, now=NOW).reason == reason


def test_check_limits_names_the_thread_cap_first() -> None:
    """Both limits reached: the thread cap is the reason, as in decide."""
    both = History(replies_in_thread=1, last_reply_to_sender_at=NOW)
    assert check_limits(PolicyConfig(), both, now=NOW).reason == "thread_cap"
    with pytest.raises(ValueError, match="timezone"):
        check_limits(PolicyConfig(), both, now=datetime(2025, 1, 1))


def test_every_reason_is_exercised_and_listed() -> None:
    """REASONS is exactly the set of reasons decide() returns, so metrics cover them all."""
    assert {r[-1] for r in ROWS} == set(REASONS)
    assert len(REASONS) == len(set(REASONS))


def test_custom_replied_label() -> None:
    """The label marking answered messages is configurable."""
    msg = message(labels=frozenset({"auto-answered"}))
    assert decide(msg, PolicyConfig(), History(), now=NOW).reply
    skipped = decide(msg, PolicyConfig(), History(), now=NOW, replied_label="auto-answered")
    assert skipped.reason == "already_replied"


def test_the_first_rule_in_order_names_the_reason() -> None:
    """A message failing several rules reports the most certain one."""
    msg = message(
        labels=frozenset({"spam"}),
        headers=[("List-Id", "x"), ("Auto-Submitted", "auto-generated")],
    )
    assert decide(msg, PolicyConfig(), History(), now=NOW).reason == "spam_label"
    assert decide(replace(msg, labels=frozenset()), PolicyConfig(), History(), now=NOW) == Decision(
        reply=False, reason="auto_submitted", detail="Auto-Submitted: auto-generated"
    )


def test_the_age_comes_after_the_message_rules_and_before_the_limits() -> None:
    """An old mailing-list message keeps its list reason; an old message in a thread
    that got its reply is too old, so it never reaches the ledger."""
    old = message(timestamp=NOW - timedelta(days=4))
    listed = replace(old, headers=Headers.parse({"List-Id": "<x.example.com>"}))
    assert decide(listed, PolicyConfig(), History(), now=NOW).reason == "list_header"
    capped = History(replies_in_thread=1, last_reply_to_sender_at=NOW)
    assert decide(old, PolicyConfig(), capped, now=NOW).reason == "too_old"


@pytest.mark.parametrize(
    ("timestamp", "enqueued_at", "reason"),
    [
        (None, NOW - timedelta(days=4), "too_old"),
        (None, NOW - timedelta(days=1), "ok"),
        (None, None, "ok"),
        (NOW - timedelta(days=4), NOW - timedelta(hours=1), "too_old"),
        (NOW - timedelta(days=1), NOW - timedelta(hours=1), "ok"),
    ],
    ids=[
        "no timestamp, job older than max age",
        "no timestamp, recent job",
        "no timestamp, no job time",
        "old message found lately (a sweep)",
        "recent message",
    ],
)
def test_the_age_falls_back_to_when_the_job_was_enqueued(
    timestamp: datetime | None, enqueued_at: datetime | None, reason: str
) -> None:
    """Without a ``timestamp`` the message is at least as old as its job: a requeued job
    that waited past the max age is too old even when its message carries no time."""
    msg = message(timestamp=timestamp)
    assert decide(msg, PolicyConfig(), History(), now=NOW, enqueued_at=enqueued_at).reason == (
        reason
    )


def test_skip_detail_names_what_matched() -> None:
    """The detail tells an operator which header or entry caused the skip."""
    msg = message(headers=[("list-unsubscribe", "<mailto:x@y>")])
    assert decide(msg, PolicyConfig(), History(), now=NOW).detail == "List-Unsubscribe"


def test_naive_now_is_refused() -> None:
    """Comparing with stored aware times needs an aware clock reading."""
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(message(), PolicyConfig(), History(), now=datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("1d", timedelta(days=1)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        (" 2D ", timedelta(days=2)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    """Durations are a whole number with a unit, or 0."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "90", "1.5d", "-1d", "1y", "d", "1d12h", "one day"])
def test_parse_duration_rejects(text: str) -> None:
    """Anything else is refused with a message showing valid forms."""
    with pytest.raises(ValueError, match=r"invalid duration .*e\.g\. 90s, 12h, 7d"):
        parse_duration(text)


def test_parse_patterns() -> None:
    """Allow and deny lists read from the environment are split and lower-cased."""
    assert parse_patterns("Example.com, @x.org  jane@Y.io,") == (
        "example.com",
        "@x.org",
        "jane@y.io",
    )


@pytest.mark.parametrize("bad", ["@", "jane@", "not an address", "a b@c.com", "@.com"])
def test_bad_patterns_are_refused(bad: str) -> None:
    """A typo in an allow or deny list fails at startup rather than matching nothing."""
    with pytest.raises(ValueError, match="not an address or a domain"):
        PolicyConfig(deny=(bad,))


@pytest.mark.parametrize(
    "fields",
    [
        {"thread_cap": -1},
        {"sender_cooldown": timedelta(seconds=-1)},
        {"max_age": timedelta(seconds=-1)},
    ],
)
def test_bad_limits_are_refused(fields: dict[str, Any]) -> None:
    """Negative limits are configuration mistakes."""
    with pytest.raises(ValueError, match="must"):
        PolicyConfig(**fields)
