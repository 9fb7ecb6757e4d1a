"""Which template answers a message: the rules of ``rules.toml``, parsed and matched.

A rule names a template (or ``action = "skip"``: no reply at all) and up to four
conditions: inbox, sender, subject, and when the message was received (``weekly``
windows and ``dates`` ranges in the rule's ``timezone``, see ``handlers.schedule``). A
rule matches when every condition it sets matches; within a condition, any listed value
will do. The first matching rule wins; when none matches, the default template is used.
A rule may also set the reply ``mode`` for what it matches (``send`` or ``draft``).
A rule may also set the grace period (``delay``) of what it matches; without one, the
global ``AUTOREPLY_REPLY_DELAY`` applies (``reply_delay``).
Parsing takes the file's text (no I/O here) and reports errors with their line.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from handlers import policy, schedule
from handlers.message import InboundMessage
from handlers.modes import MODES, ReplyMode
from handlers.schedule import Period, Schedule

#: A template is a folder; its name must be a plain folder name. Folders starting
#: with ``_`` hold partials for ``{% include %}`` and are not templates.
TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

_TOP_KEYS = ("default", "vars", "rule")
_RULE_KEYS = (
    "name",
    "template",
    "action",
    "inbox",
    "sender",
    "subject",
    "timezone",
    "weekly",
    "dates",
    "delay",
    "vars",
    "mode",
)
#: What a matching rule does: answer with its template, or leave the message unanswered.
REPLY, SKIP = "reply", "skip"
ACTIONS = (REPLY, SKIP)

#: How many ``weekly`` / ``dates`` entries one rule may list: far more than a week's
#: opening hours or decades of public holidays; the overlap check compares weekly
#: windows pairwise, and a list of tens of thousands would stall ``templates check``
#: and every reload for minutes.
MAX_ENTRIES = {"weekly": 100, "dates": 1000}
#: The longest ``weekly`` / ``dates`` entry ("2026-12-23 17:00 - 2027-01-04 09:00" has 35).
MAX_ENTRY_LENGTH = 200

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)|\s*\(at end of document\)")


class RulesError(ValueError):
    """``rules.toml`` is not valid; ``line`` is where (1-based), 0 when unknown."""

    def __init__(self, message: str, *, line: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True, kw_only=True, slots=True)
class Rule:
    """One ``[[rule]]``: conditions, the template it picks and its variables."""

    name: str
    #: The template to answer with; None for a ``skip`` rule.
    template: str | None
    action: str = REPLY
    #: Inbox address or domain patterns; empty means any inbox.
    inboxes: tuple[str, ...] = ()
    #: Sender address or domain patterns; empty means any sender.
    senders: tuple[str, ...] = ()
    #: Case-insensitive regular expressions searched in the subject; empty means any.
    subjects: tuple[re.Pattern[str], ...] = ()
    #: When the message must have been received; empty (false) means any time.
    schedule: Schedule = field(default_factory=lambda: Schedule(UTC))
    variables: Mapping[str, Any] = field(default_factory=dict)
    #: The grace period of what this rule matches (``delay = "10m"``; ``"0"`` answers at
    #: once); None leaves it to ``AUTOREPLY_REPLY_DELAY``.
    delay: timedelta | None = None
    #: The reply mode for what this rule matches; None leaves it to ``AUTOREPLY_MODE``.
    mode: ReplyMode | None = None
    #: Line of the rule in ``rules.toml`` (0 when built in code).
    line: int = 0

    def matches(self, message: InboundMessage, *, received_at: datetime) -> bool:
        """True when every condition this rule sets holds for ``message``, received
        (by AgentMail: the message's ``timestamp``) at ``received_at``."""
        if self.inboxes and policy.first_match(message.inbox_id, self.inboxes) is None:
            return False
        if self.senders and policy.first_match(message.sender_address, self.senders) is None:
            return False
        subject = message.subject or ""
        if self.subjects and not any(p.search(subject) for p in self.subjects):
            return False
        return not self.schedule or self.schedule.holds(received_at)


@dataclass(frozen=True, kw_only=True, slots=True)
class Rules:
    """The whole rules file: ordered rules, the default template and global ``[vars]``."""

    rules: tuple[Rule, ...] = ()
    default: str = "default"
    variables: Mapping[str, Any] = field(default_factory=dict)
    #: Line of ``default = ...`` (0 when absent or built in code).
    default_line: int = 0

    def choice(self, rule: Rule | None, *, received_at: datetime | None = None) -> Choice:
        """The choice made when ``rule`` matches a message received at ``received_at``
        (which dates the rule's window, if it has one); None means no rule matched."""
        if rule is None:
            return _choice(self, self.default, None, None)
        window = None
        if rule.schedule and received_at is not None:
            window = rule.schedule.period(received_at)
        return _choice(self, rule.template, rule, window)

    def for_template(self, template: str, *, received_at: datetime | None = None) -> Choice:
        """The choice made by forcing ``template``: variables of the first rule using it
        (not its mode: that rule did not match, so ``AUTOREPLY_MODE`` applies)."""
        rule = next((r for r in self.rules if r.template == template), None)
        window = None
        if rule is not None and rule.schedule and received_at is not None:
            window = rule.schedule.period(received_at)
        return replace(_choice(self, template, rule, window), mode=None)

    @property
    def modes(self) -> frozenset[ReplyMode]:
        """Every mode a rule sets (registration subscribes to what they need)."""
        return frozenset(r.mode for r in self.rules if r.mode is not None)


@dataclass(frozen=True, kw_only=True, slots=True)
class Choice:
    """The template to render (None: a ``skip`` rule matched, nothing is sent), the
    rule that chose it (None: the default), its vars and its matched time window."""

    template: str | None
    rule_name: str | None
    variables: Mapping[str, Any]
    #: The stretch of time the rule's ``weekly``/``dates`` condition holds around the
    #: message's receipt; None when the rule has no time condition (or none matched).
    window: Period | None = None
    #: The mode the rule sets; None: the rule sets none (or no rule matched), so
    #: ``AUTOREPLY_MODE`` decides (see :func:`resolve_mode`).
    mode: ReplyMode | None = None

    @property
    def skip_rule(self) -> str | None:
        """The name of the ``skip`` rule that matched, else None (the policy skips the
        message as ``rule:<name>``)."""
        return self.rule_name if self.template is None else None


def resolve_mode(choice: Choice, default: ReplyMode) -> tuple[ReplyMode, str]:
    """The mode of a reply and what chose it: ``rule 'NAME'`` or ``AUTOREPLY_MODE``."""
    if choice.mode is not None and choice.rule_name is not None:
        return choice.mode, f"rule {choice.rule_name!r}"
    return default, "AUTOREPLY_MODE"


def choose(rules: Rules, message: InboundMessage, *, received_at: datetime) -> Choice:
    """Pick the template for ``message``, received at ``received_at`` (timezone-aware):
    the first matching rule, else the default."""
    rule = matching_rule(rules, message, received_at=received_at)
    return rules.choice(rule, received_at=received_at)


def matching_rule(rules: Rules, message: InboundMessage, *, received_at: datetime) -> Rule | None:
    """The first rule that matches ``message`` received at ``received_at``, or None."""
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    return next((r for r in rules.rules if r.matches(message, received_at=received_at)), None)


@dataclass(frozen=True, kw_only=True, slots=True)
class Delay:
    """A message's grace period and what set it: a rule's name, or None for the global
    ``AUTOREPLY_REPLY_DELAY``."""

    delay: timedelta
    rule_name: str | None


def reply_delay(
    rules: Rules, message: InboundMessage, default: timedelta, *, received_at: datetime
) -> Delay:
    """The grace period of ``message`` received at ``received_at``: the first matching
    rule's ``delay`` if it sets one (first match wins, as for the template), else
    ``default``."""
    rule = matching_rule(rules, message, received_at=received_at)
    if rule is None or rule.delay is None:
        return Delay(delay=default, rule_name=None)
    return Delay(delay=rule.delay, rule_name=rule.name)


def configured_delay(rules: Rules, default: timedelta) -> bool:
    """Whether any message can have a grace period: a global delay or any rule's."""
    return bool(default) or any(rule.delay for rule in rules.rules)


def _choice(rules: Rules, template: str | None, rule: Rule | None, window: Period | None) -> Choice:
    variables = dict(rules.variables)
    if rule is not None:
        variables.update(rule.variables)
    name = None if rule is None else rule.name
    mode = None if rule is None else rule.mode
    return Choice(template=template, rule_name=name, variables=variables, window=window, mode=mode)


def parse_rules(text: str, *, timezone: tzinfo = UTC) -> Rules:
    """Parse the text of ``rules.toml``; raise ``RulesError`` with the line at fault.

    ``timezone`` is the zone of rules that name none (``AUTOREPLY_TIMEZONE``).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _decode_error(exc, text) from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        message = "arrays or tables nested too deep to read"
        raise RulesError(message, line=_deep_line(text)) from None
    where = _Locator(text)
    _reject_unknown(data, _TOP_KEYS, "top-level key", where.top)
    default = data.get("default", "default")
    _check_template_name(default, "default", where.top("default"))
    variables = data.get("vars", {})
    if not isinstance(variables, dict):
        raise RulesError("'vars' must be a table, e.g. [vars]", line=where.top("vars"))
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RulesError("'rule' must be an array of tables: [[rule]]", line=where.top("rule"))
    rules = tuple(_parse_rule(raw, index, where, timezone) for index, raw in enumerate(raw_rules))
    _reject_duplicates(rules)
    return Rules(
        rules=rules, default=default, variables=variables, default_line=where.top("default")
    )


def _parse_rule(raw: object, index: int, where: _Locator, default_zone: tzinfo) -> Rule:
    def line(key: str | None = None) -> int:
        return where.rule(index, key)

    if not isinstance(raw, dict):
        raise RulesError("each [[rule]] must be a table", line=line())
    _reject_unknown(raw, _RULE_KEYS, "key in [[rule]]", line)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RulesError('[[rule]] needs a name, e.g. name = "billing"', line=line("name"))
    action = raw.get("action", REPLY)
    if action not in ACTIONS:
        raise RulesError(
            f'rule {name!r}: action must be "reply" or "skip", got {action!r}',
            line=line("action"),
        )
    template = None
    if action == SKIP:
        for key in ("template", "vars", "delay", "mode"):
            if key in raw:
                message = f"rule {name!r} skips (sends nothing), so it takes no {key}"
                raise RulesError(message, line=line(key))
    elif "template" not in raw:
        raise RulesError(f'rule {name!r} needs a template = "..."', line=line())
    else:
        _check_template_name(raw["template"], "template", line("template"))
        template = raw["template"]
    variables = raw.get("vars", {})
    if not isinstance(variables, dict):
        raise RulesError(f"rule {name!r}: 'vars' must be a table", line=line("vars"))
    return Rule(
        name=name,
        template=template,
        action=action,
        inboxes=_patterns(raw, "inbox", name, line("inbox")),
        senders=_patterns(raw, "sender", name, line("sender")),
        subjects=_regexes(raw, name, line("subject")),
        schedule=_schedule(raw, name, index, where, default_zone),
        variables=variables,
        delay=_delay(raw, name, line("delay")),
        mode=_mode(raw, name, line("mode")),
        line=line(),
    )


def _delay(raw: Mapping[str, Any], rule: str, line: int) -> timedelta | None:
    """The rule's ``delay``: a duration as the settings write it (``"90s"``, ``"10m"``,
    ``"1h"``, ``"0"``), or None when the rule sets none."""
    if "delay" not in raw:
        return None
    value = raw["delay"]
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return timedelta(0)
    if not isinstance(value, str):
        raise RulesError(
            f'rule {rule!r}: delay must be a duration string such as "10m", got {value!r}',
            line=line,
        )
    try:
        return policy.parse_duration(value)
    except ValueError as exc:
        raise RulesError(f"rule {rule!r}: delay: {exc}", line=line) from None


def _schedule(
    raw: Mapping[str, Any], rule: str, index: int, where: _Locator, default_zone: tzinfo
) -> Schedule:
    """The rule's ``timezone``, ``weekly`` and ``dates``, each entry checked on its line."""
    zone = default_zone
    if "timezone" in raw:
        line = where.rule(index, "timezone")
        if "weekly" not in raw and "dates" not in raw:
            message = f"rule {rule!r}: timezone applies to weekly and dates; it has neither"
            raise RulesError(message, line=line)
        zone = _zone(raw["timezone"], rule, line)
    weekly = tuple(
        _entry(schedule.parse_weekly, text, rule, "weekly", line)
        for text, line in _entries(raw, "weekly", rule, index, where)
    )
    dates = tuple(
        _entry(schedule.parse_dates, text, rule, "dates", line)
        for text, line in _entries(raw, "dates", rule, index, where)
    )
    for key, overlap in (
        ("weekly", schedule.weekly_overlap(weekly)),
        ("dates", schedule.dates_overlap(dates)),
    ):
        if overlap is not None:
            message = f"rule {rule!r}: {key}: {overlap}; a rule's windows must not overlap"
            raise RulesError(message, line=where.rule(index, key))
    return Schedule(zone, weekly=weekly, dates=dates)


def _zone(value: object, rule: str, line: int) -> tzinfo:
    if not isinstance(value, str) or not value:
        raise RulesError(f"rule {rule!r}: timezone must be a name like Europe/Paris", line=line)
    try:
        return schedule.zone(value)
    except ValueError as exc:
        raise RulesError(f"rule {rule!r}: {exc}", line=line) from None


def _entries(
    raw: Mapping[str, Any], key: str, rule: str, index: int, where: _Locator
) -> list[tuple[str, int]]:
    """The strings of list key ``key``, each with its own line (a single string will do;
    a TOML date in ``dates`` stands for that one day)."""
    if key not in raw:
        return []
    line = where.rule(index, key)
    value = raw[key]
    values = [value] if isinstance(value, str | date) else value
    if not isinstance(values, list) or not values:
        raise RulesError(f"rule {rule!r}: {key} must be a string or a non-empty list", line=line)
    if len(values) > MAX_ENTRIES[key]:
        message = f"rule {rule!r}: {key} has {len(values)} entries, more than {MAX_ENTRIES[key]}"
        raise RulesError(message, line=line)
    entries = []
    for item in values:
        if key == "dates" and isinstance(item, date) and not isinstance(item, datetime):
            item = item.isoformat()
        if not isinstance(item, str):
            message = f"rule {rule!r}: {key} entries are strings, e.g. " + (
                '"Mon-Fri 09:00-17:00"' if key == "weekly" else '"2026-12-24 - 2027-01-01"'
            )
            raise RulesError(message, line=line)
        if len(item) > MAX_ENTRY_LENGTH:
            message = (
                f"rule {rule!r}: a {key} entry of {len(item)} characters "
                f"(at most {MAX_ENTRY_LENGTH}): {item[:40]!r}..."
            )
            raise RulesError(message, line=line)
        entries.append((item, where.entry(line, item)))
    return entries


def _entry(parse: Callable[[str], Any], text: str, rule: str, key: str, line: int) -> Any:
    try:
        return parse(text)
    except ValueError as exc:
        raise RulesError(f"rule {rule!r}: {key}: {exc}", line=line) from None


def _mode(raw: Mapping[str, Any], rule: str, line: int) -> ReplyMode | None:
    value = raw.get("mode")
    if value is None:
        return None
    if not isinstance(value, str) or value not in MODES:
        raise RulesError(
            f"rule {rule!r}: mode must be one of {', '.join(repr(m) for m in MODES)},"
            f" got {value!r}",
            line=line,
        )
    return ReplyMode(value)


def _strings(raw: Mapping[str, Any], key: str, rule: str, line: int) -> tuple[str, ...]:
    value = raw.get(key, [])
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise RulesError(f"rule {rule!r}: {key!r} must be a string or a list of strings", line=line)
    return tuple(values)


def _patterns(raw: Mapping[str, Any], key: str, rule: str, line: int) -> tuple[str, ...]:
    try:
        return tuple(policy.check_pattern(p) for p in _strings(raw, key, rule, line))
    except ValueError as exc:
        raise RulesError(f"rule {rule!r}: {key}: {exc}", line=line) from None


def _regexes(raw: Mapping[str, Any], rule: str, line: int) -> tuple[re.Pattern[str], ...]:
    patterns = []
    for pattern in _strings(raw, "subject", rule, line):
        try:
            patterns.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            message = f"rule {rule!r}: subject {pattern!r} is not a valid regex: {exc}"
            raise RulesError(message, line=line) from None
    return tuple(patterns)


def _check_template_name(value: object, key: str, line: int) -> None:
    if not isinstance(value, str) or TEMPLATE_NAME.fullmatch(value) is None:
        raise RulesError(
            f"{key} must name a template folder (letters, digits, '.', '_', '-'), got {value!r}",
            line=line,
        )


def _reject_unknown(
    data: Mapping[str, Any], known: Sequence[str], what: str, line_of: Callable[[str], int]
) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            raise RulesError(f"unknown {what} {key!r}{hint}", line=line_of(key))


def _reject_duplicates(rules: Iterable[Rule]) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise RulesError(f"two rules are named {rule.name!r}", line=rule.line)
        seen.add(rule.name)


def _deep_line(text: str, depth: int = 100) -> int:
    """The line where brackets and braces first nest ``depth`` deep (strings are not
    told apart: good enough to point at the culprit); 0 if none does."""
    level = 0
    for number, text_line in enumerate(text.splitlines(), start=1):
        for char in text_line:
            level += 1 if char in "[{" else -1 if char in "]}" else 0
            if level >= depth:
                return number
    return 0


def _decode_error(exc: tomllib.TOMLDecodeError, text: str) -> RulesError:
    message = str(exc)
    match = _TOML_POSITION.search(message)
    if match is None:
        return RulesError(message)
    line = int(match[1]) if match[1] else max(1, text.count("\n") + 1)
    return RulesError(_TOML_POSITION.sub("", message), line=line)


class _Locator:
    """Finds the line of a key in TOML text, well enough for error messages.

    tomllib reports positions only for syntax errors, so the line of a rule or key is
    found by scanning table headers and ``key =`` lines; unusual layouts (inline
    tables, dotted keys) fall back to the line of the rule itself.
    """

    _HEADER = re.compile(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?")
    _KEY = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=")

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._top: dict[str, int] = {}
        self._rules: list[int] = []
        self._rule_keys: dict[tuple[int, str], int] = {}
        section: str | None = None
        for number, text_line in enumerate(text.splitlines(), start=1):
            section = self._scan(number, text_line, section)

    def _scan(self, number: int, text_line: str, section: str | None) -> str | None:
        if header := self._HEADER.match(text_line):
            name = header[1]
            if text_line.lstrip().startswith("[[") and name == "rule":
                self._rules.append(number)
            elif name.startswith("rule.") and self._rules:
                self._rule_keys.setdefault((len(self._rules) - 1, name[5:]), number)
            self._top.setdefault(name.split(".")[0], number)
            return name
        if (key := self._KEY.match(text_line)) is None:
            return section
        if section is None:
            self._top.setdefault(key[1], number)
        elif section == "rule" and self._rules:
            self._rule_keys.setdefault((len(self._rules) - 1, key[1]), number)
        return section

    def top(self, key: str) -> int:
        """Line of a top-level key or table; 0 when not found."""
        return self._top.get(key, 0)

    def entry(self, line: int, value: str) -> int:
        """Line of the list entry ``value`` of a key on ``line``: the first line from
        there holding it quoted (an entry of a list spread over lines), else ``line``."""
        if line <= 0:
            return line
        quoted = (f'"{value}"', f"'{value}'")
        for number in range(line, len(self._lines) + 1):
            if any(q in self._lines[number - 1] for q in quoted):
                return number
        return line

    def rule(self, index: int, key: str | None = None) -> int:
        """Line of ``key`` in the ``index``-th rule, else of the rule itself; 0 if unknown."""
        start = self._rules[index] if index < len(self._rules) else 0
        return self._rule_keys.get((index, key), start) if key else start
