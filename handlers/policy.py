"""Whether to answer an inbound message: RFC 3834 loop protection plus our own limits.

``decide`` is pure: it gets the message, the configuration, what the store knows about
earlier replies (``History``) and the current time, and returns a ``Decision`` with a
machine-readable reason. The checks run cheapest and most certain first, in the spirit
of Dovecot Pigeonhole's ``act_vacation_commit``, so the reason names the strongest
signal. Every rule only ever turns a reply into a skip; none can force a reply.

A ``skip`` rule of ``rules.toml`` that matched (``rule:<name>``) is checked right after
the allow and deny lists and the suppression list: it is the operator's choice, like
them, so loop protection keeps its more certain reasons and the limits below never count
such a message.

The message's age (``too_old``) is checked after every rule about the message itself and
before the thread cap and the sender cooldown: a message the other rules would skip
anyway keeps their reason, so ``too_old`` counts exactly the messages that would have
been answered had they come in time, and a message too old never reserves a reply.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from handlers.message import MAX_ADDRESS_CHARS, MESSAGE_RECEIVED, InboundMessage, addresses_of

#: Every reason ``decide`` can return, for metrics and logs.
REASONS: tuple[str, ...] = (
    "ok",
    "not_plain_received",
    "spam_label",
    "already_replied",
    "invalid_sender",
    "null_return_path",
    "own_address",
    "auto_submitted",
    "precedence",
    "list_header",
    "x_auto_response_suppress",
    "system_sender",
    "not_a_recipient",
    "too_many_recipients",
    "denied",
    "not_allowed",
    "suppressed",
    "too_old",
    "thread_cap",
    "sender_cooldown",
)
#: A message a ``skip`` rule matched is skipped with this prefix and the rule's name,
#: ``rule:<name>``: one reason per rule, so operators see which rule held it back.
RULE_REASON_PREFIX = "rule:"

#: AgentMail labels that mark mail we must never answer.
BAD_LABELS = frozenset({"spam", "blocked", "unauthenticated"})

#: RFC 2369 / RFC 2919 list headers (RFC 5230 section 4.6 lists exactly these).
LIST_HEADERS = (
    "List-Id",
    "List-Unsubscribe",
    "List-Post",
    "List-Owner",
    "List-Subscribe",
    "List-Help",
    "List-Archive",
)

#: Headers that name recipients, for the RFC 5230 section 4.5 "sent to us" check.
RECIPIENT_HEADERS = ("To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc")

#: Recipient lists longer than this, in characters all together (a few hundred
#: addresses), are mass mail: skipped unparsed, since parsing costs about a second
#: per megabyte on the event loop.
MAX_RECIPIENT_CHARS = MAX_ADDRESS_CHARS

_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})
_SUPPRESS_VALUES = frozenset({"all", "autoreply", "oof"})
_SYSTEM_LOCAL_PARTS = frozenset(
    {
        "mailer-daemon",
        "postmaster",
        "listserv",
        "majordomo",
        "noreply",
        "no-reply",
        "no_reply",
        "donotreply",
        "do-not-reply",
        "do_not_reply",
    }
)
_DOMAIN = re.compile(r"[\w-]+(\.[\w-]+)*")
_COMMENT = re.compile(r"\([^()]*\)")
_DURATION = re.compile(r"\s*(\d+)\s*([smhdw]?)\s*", re.IGNORECASE)
_UNITS = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicyConfig:
    """What the operator can tune; the defaults follow RFC 3834 and RFC 5230."""

    #: Lower-cased addresses that are ours: every inbox the service handles plus
    #: ``AUTOREPLY_OWN_ADDRESSES``. Mail from any of them is never answered.
    own_addresses: frozenset[str] = frozenset()
    #: RFC 5230 section 4.5: answer only when the inbox is in To, Cc (or Bcc, Resent-*).
    require_recipient: bool = True
    #: Auto-replies per thread; 0 means no cap.
    thread_cap: int = 1
    #: Minimum time between two replies to one sender from one inbox; 0 disables.
    sender_cooldown: timedelta = timedelta(days=1)
    #: Address or domain patterns (see ``check_pattern``); empty means everyone.
    allow: tuple[str, ...] = ()
    #: Address or domain patterns that are never answered; wins over ``allow``.
    deny: tuple[str, ...] = ()
    #: A message older than this when it is decided is not answered (``too_old``),
    #: whatever brought it in: a catch-up sweep, a late webhook retry, a requeue. An
    #: auto-reply days late surprises more than it helps. 0 disables.
    max_age: timedelta = timedelta(days=3)

    def __post_init__(self) -> None:
        if self.thread_cap < 0:
            raise ValueError("thread_cap must be 0 (no cap) or more")
        if self.sender_cooldown < timedelta(0):
            raise ValueError("sender_cooldown must not be negative")
        if self.max_age < timedelta(0):
            raise ValueError("max_age must not be negative")
        for pattern in (*self.allow, *self.deny):
            check_pattern(pattern)


@dataclass(frozen=True, kw_only=True, slots=True)
class History:
    """What the store knows about earlier auto-replies relevant to this message.

    Both counts include replies that are only reserved (decided, not yet confirmed sent):
    the reservation is what keeps a burst from getting one reply per message.
    """

    #: Auto-replies sent or reserved in this message's thread.
    replies_in_thread: int = 0
    #: When this inbox last auto-replied to this sender, or reserved a reply to them.
    last_reply_to_sender_at: datetime | None = None
    #: Why the sender is on the inbox's suppression list (its cause and reason), or
    #: None when they are not (see ``handlers.suppression``).
    suppressed: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """Reply or skip, with a reason from ``REASONS`` and a human-readable detail."""

    reply: bool
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class _Case:
    """Everything one check may look at."""

    message: InboundMessage
    config: PolicyConfig
    history: History
    now: datetime
    replied_label: str
    enqueued_at: datetime | None
    skip_rule: str | None


def decide(
    message: InboundMessage,
    config: PolicyConfig,
    history: History,
    *,
    now: datetime,
    replied_label: str = "replied",
    enqueued_at: datetime | None = None,
    skip_rule: str | None = None,
) -> Decision:
    """Decide whether ``message`` gets an automatic reply; the first failing rule wins.

    ``enqueued_at`` is when the service first knew of the message (its job's creation):
    the message is at least that old, so it dates the message for the age check when the
    message carries no ``timestamp`` (see ``check_age``). ``skip_rule`` names the
    ``action = "skip"`` rule of ``rules.toml`` that matched the message, if one did.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    case = _Case(message, config, history, now, replied_label, enqueued_at, skip_rule)
    for check in _CHECKS:
        decision = check(case)
        if decision is not None:
            return decision
    return Decision(reply=True, reason="ok")


def check_limits(config: PolicyConfig, history: History, *, now: datetime) -> Decision:
    """The thread cap and the sender cooldown alone, in ``decide``'s order.

    The store calls this while it holds the ledger for the thread and the sender, so the
    check and the reservation of the reply are one atomic step (``Store.reserve``): of
    two jobs deciding at once, the second sees the first's reservation. ``decide``
    applies the same two checks, first, to the history read before.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    skip = _thread_cap(config, history) or _cooldown(config, history, now)
    return skip or Decision(reply=True, reason="ok")


def check_age(
    config: PolicyConfig, received_at: datetime | None, *, now: datetime
) -> Decision | None:
    """Skip with ``too_old`` when the message was received more than ``max_age`` before
    ``now``; None when it is young enough, the check is off (0), or its age is unknown.

    ``received_at`` is the message's ``timestamp``, or failing that when its job was
    created (the message cannot be younger). With neither, the message is not held to be
    too old: nothing says it is, and the sweep's mark already keeps old mail out.
    """
    if not config.max_age or received_at is None:
        return None
    if now - received_at > config.max_age:
        return _skip("too_old", f"received {received_at.isoformat()}, max age {config.max_age}")
    return None


def _skip(reason: str, detail: str = "") -> Decision:
    return Decision(reply=False, reason=reason, detail=detail)


def _check_event(case: _Case) -> Decision | None:
    event_type = case.message.event_type
    return None if event_type == MESSAGE_RECEIVED else _skip("not_plain_received", event_type)


def _check_labels(case: _Case) -> Decision | None:
    bad = sorted(label for label in case.message.labels if label.lower() in BAD_LABELS)
    return _skip("spam_label", ", ".join(bad)) if bad else None


def _check_replied(case: _Case) -> Decision | None:
    wanted = case.replied_label.lower()
    if any(label.lower() == wanted for label in case.message.labels):
        return _skip("already_replied", f"labelled {case.replied_label!r}")
    return None


def _check_sender(case: _Case) -> Decision | None:
    if not is_address(case.message.sender_address):
        return _skip("invalid_sender", case.message.sender)
    return None


def _check_return_path(case: _Case) -> Decision | None:
    for value in case.message.headers.get_all("Return-Path"):
        if "".join(value.split()) in {"", "<>"}:
            return _skip("null_return_path", f"Return-Path: {value}")
    return None


def _check_own(case: _Case) -> Decision | None:
    sender = case.message.sender_address
    if sender == case.message.inbox_id.lower() or sender in case.config.own_addresses:
        return _skip("own_address", sender)
    return None


def _check_auto_submitted(case: _Case) -> Decision | None:
    for value in case.message.headers.get_all("Auto-Submitted"):
        if _keyword(value) != "no":
            return _skip("auto_submitted", f"Auto-Submitted: {value}")
    return None


def _check_precedence(case: _Case) -> Decision | None:
    for value in case.message.headers.get_all("Precedence"):
        if _keyword(value) in _BULK_PRECEDENCE:
            return _skip("precedence", f"Precedence: {value}")
    return None


def _check_list(case: _Case) -> Decision | None:
    for name in LIST_HEADERS:
        if name in case.message.headers:
            return _skip("list_header", name)
    return None


def _check_suppress(case: _Case) -> Decision | None:
    for value in case.message.headers.get_all("X-Auto-Response-Suppress"):
        tokens = {token.strip().lower() for token in value.split(",")}
        if tokens & _SUPPRESS_VALUES:
            return _skip("x_auto_response_suppress", f"X-Auto-Response-Suppress: {value}")
    return None


def _check_system(case: _Case) -> Decision | None:
    message = case.message
    candidates = [("From", message.sender_address)]
    return_paths = addresses_of(message.headers.get_all("Return-Path"))
    candidates += [("Return-Path", address) for address in return_paths]
    for header, address in candidates:
        if is_system_address(address):
            return _skip("system_sender", f"{header}: {address}")
    return None


def _check_recipient(case: _Case) -> Decision | None:
    if not case.config.require_recipient:
        return None
    message = case.message
    inbox = message.inbox_id.lower()
    fields = [*message.to, *message.cc]
    for name in RECIPIENT_HEADERS:
        fields += message.headers.get_all(name)
    size = sum(map(len, fields))
    if size > MAX_RECIPIENT_CHARS:
        return _skip("too_many_recipients", f"{size} characters of recipients")
    listed = set(addresses_of(fields))
    return None if inbox in listed else _skip("not_a_recipient", f"{inbox} not in To or Cc")


def _check_allow_deny(case: _Case) -> Decision | None:
    sender, config = case.message.sender_address, case.config
    if (pattern := first_match(sender, config.deny)) is not None:
        return _skip("denied", f"{sender} matches {pattern}")
    if config.allow and first_match(sender, config.allow) is None:
        return _skip("not_allowed", f"{sender} matches no allow entry")
    return None


def _check_suppressed(case: _Case) -> Decision | None:
    suppressed = case.history.suppressed
    return None if suppressed is None else _skip("suppressed", suppressed)


def _check_skip_rule(case: _Case) -> Decision | None:
    if case.skip_rule is None:
        return None
    return _skip(RULE_REASON_PREFIX + case.skip_rule, f"rules.toml: rule {case.skip_rule!r} skips")


def _check_age(case: _Case) -> Decision | None:
    received_at = case.message.timestamp or case.enqueued_at
    return check_age(case.config, received_at, now=case.now)


def _check_thread(case: _Case) -> Decision | None:
    return _thread_cap(case.config, case.history)


def _check_cooldown(case: _Case) -> Decision | None:
    return _cooldown(case.config, case.history, case.now)


def _thread_cap(config: PolicyConfig, history: History) -> Decision | None:
    cap, sent = config.thread_cap, history.replies_in_thread
    return _skip("thread_cap", f"{sent} of {cap} sent") if cap and sent >= cap else None


def _cooldown(config: PolicyConfig, history: History, now: datetime) -> Decision | None:
    cooldown, last = config.sender_cooldown, history.last_reply_to_sender_at
    if cooldown and last is not None and now - last < cooldown:
        return _skip("sender_cooldown", f"last reply at {last.isoformat()}")
    return None


_CHECKS: tuple[Callable[[_Case], Decision | None], ...] = (
    _check_event,
    _check_labels,
    _check_replied,
    _check_sender,
    _check_return_path,
    _check_own,
    _check_auto_submitted,
    _check_precedence,
    _check_list,
    _check_suppress,
    _check_system,
    _check_recipient,
    _check_allow_deny,
    _check_suppressed,
    _check_skip_rule,
    _check_age,
    _check_thread,
    _check_cooldown,
)


def _keyword(value: str) -> str:
    """The keyword of a structured header value: parameters and comments dropped."""
    return _COMMENT.sub("", value.split(";", 1)[0]).strip().lower()


def is_address(address: str) -> bool:
    """True for a bare ``local@domain`` address with both parts present, holding no
    whitespace, control character (NUL, ESC...) or lone surrogate.

    No mail can be addressed to such a thing, and PostgreSQL cannot even compare a text
    holding NUL: a sender like that made every look-up of the ledger and the suppression
    list fail, so the job failed as "store unavailable" on every attempt.
    """
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain) and not any(
        c.isspace() or c < " " or "\x7f" <= c < "\xa0" or "\ud800" <= c <= "\udfff" for c in address
    )


def is_system_address(address: str) -> bool:
    """True for senders that responders must not answer (RFC 3834 section 2, RFC 5230 4.6).

    MAILER-DAEMON, postmaster, LISTSERV, majordomo, ``owner-*``, ``*-request`` and the
    no-reply family; a ``+tag`` sub-address does not hide them.
    """
    local = address.rpartition("@")[0].lower()
    base = local.split("+", 1)[0]
    return base in _SYSTEM_LOCAL_PARTS or local.startswith("owner-") or base.endswith("-request")


def check_pattern(pattern: str) -> str:
    """Validate an allow/deny/rule pattern and return it normalised (lower-cased).

    A pattern is an address (``jane@example.org``) or a domain (``example.com`` or
    ``@example.com``); a domain also matches its subdomains.
    """
    normal = pattern.strip().lower()
    local, _, domain = normal.rpartition("@")
    if _DOMAIN.fullmatch(domain) is None or (local and not is_address(normal)):
        raise ValueError(f"{pattern!r} is not an address or a domain like example.com")
    return normal


def matches(address: str, pattern: str) -> bool:
    """True when ``address`` is the pattern's address or lies in the pattern's domain."""
    address = address.lower()
    normal = pattern.strip().lower()
    local, _, domain = normal.rpartition("@")
    if local:
        return address == normal
    sender_domain = address.rpartition("@")[2]
    return sender_domain == domain or sender_domain.endswith("." + domain)


def first_match(address: str, patterns: Iterable[str]) -> str | None:
    """The first pattern ``address`` matches, or None."""
    return next((p for p in patterns if matches(address, p)), None)


def parse_patterns(text: str) -> tuple[str, ...]:
    """Parse a comma- or space-separated list of patterns, e.g. from the environment."""
    return tuple(check_pattern(p) for p in re.split(r"[\s,]+", text) if p)


def parse_duration(text: str) -> timedelta:
    """Parse ``0``, ``90s``, ``15m``, ``12h``, ``1d``, ``7d`` or ``1w`` into a timedelta."""
    match = _DURATION.fullmatch(text)
    if match is None or (not match[2] and int(match[1]) != 0):
        raise ValueError(
            f"invalid duration {text!r}: use a whole number with a unit "
            "s, m, h, d or w (e.g. 90s, 12h, 7d), or 0"
        )
    return int(match[1]) * _UNITS.get(match[2].lower(), timedelta(0))
