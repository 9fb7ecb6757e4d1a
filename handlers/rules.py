"""Which template answers a message: the rules of ``rules.toml``, parsed and matched.

A rule names a template and up to three conditions (inbox, sender, subject). A rule
matches when every condition it sets matches; within a condition, any listed value
will do. The first matching rule wins; when none matches, the default template is used.
A rule may also set the grace period (``delay``) of what it matches; without one, the
global ``AUTOREPLY_REPLY_DELAY`` applies (``reply_delay``).
Parsing takes the file's text (no I/O here) and reports errors with their line.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from handlers import policy
from handlers.message import InboundMessage

#: A template is a folder; its name must be a plain folder name. Folders starting
#: with ``_`` hold partials for ``{% include %}`` and are not templates.
TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

_TOP_KEYS = ("default", "vars", "rule")
_RULE_KEYS = ("name", "template", "inbox", "sender", "subject", "delay", "vars")
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
    template: str
    #: Inbox address or domain patterns; empty means any inbox.
    inboxes: tuple[str, ...] = ()
    #: Sender address or domain patterns; empty means any sender.
    senders: tuple[str, ...] = ()
    #: Case-insensitive regular expressions searched in the subject; empty means any.
    subjects: tuple[re.Pattern[str], ...] = ()
    variables: Mapping[str, Any] = field(default_factory=dict)
    #: The grace period of what this rule matches (``delay = "10m"``; ``"0"`` answers at
    #: once); None leaves it to ``AUTOREPLY_REPLY_DELAY``.
    delay: timedelta | None = None
    #: Line of the rule in ``rules.toml`` (0 when built in code).
    line: int = 0

    def matches(self, message: InboundMessage) -> bool:
        """True when every condition this rule sets holds for ``message``."""
        if self.inboxes and policy.first_match(message.inbox_id, self.inboxes) is None:
            return False
        if self.senders and policy.first_match(message.sender_address, self.senders) is None:
            return False
        subject = message.subject or ""
        return not self.subjects or any(p.search(subject) for p in self.subjects)


@dataclass(frozen=True, kw_only=True, slots=True)
class Rules:
    """The whole rules file: ordered rules, the default template and global ``[vars]``."""

    rules: tuple[Rule, ...] = ()
    default: str = "default"
    variables: Mapping[str, Any] = field(default_factory=dict)
    #: Line of ``default = ...`` (0 when absent or built in code).
    default_line: int = 0

    def choice(self, rule: Rule | None) -> Choice:
        """The choice made when ``rule`` matches; None means no rule matched."""
        return _choice(self, self.default if rule is None else rule.template, rule)

    def for_template(self, template: str) -> Choice:
        """The choice made by forcing ``template``: variables of the first rule using it."""
        rule = next((r for r in self.rules if r.template == template), None)
        return _choice(self, template, rule)


@dataclass(frozen=True, kw_only=True, slots=True)
class Choice:
    """The template to render, the rule that chose it (None: the default) and its vars."""

    template: str
    rule_name: str | None
    variables: Mapping[str, Any]


def choose(rules: Rules, message: InboundMessage) -> Choice:
    """Pick the template for ``message``: the first matching rule, else the default."""
    return rules.choice(matching_rule(rules, message))


def matching_rule(rules: Rules, message: InboundMessage) -> Rule | None:
    """The first rule that matches ``message``, or None."""
    return next((r for r in rules.rules if r.matches(message)), None)


@dataclass(frozen=True, kw_only=True, slots=True)
class Delay:
    """A message's grace period and what set it: a rule's name, or None for the global
    ``AUTOREPLY_REPLY_DELAY``."""

    delay: timedelta
    rule_name: str | None


def reply_delay(rules: Rules, message: InboundMessage, default: timedelta) -> Delay:
    """The grace period of ``message``: the first matching rule's ``delay`` if it sets
    one (first match wins, as for the template), else ``default``."""
    rule = matching_rule(rules, message)
    if rule is None or rule.delay is None:
        return Delay(delay=default, rule_name=None)
    return Delay(delay=rule.delay, rule_name=rule.name)


def configured_delay(rules: Rules, default: timedelta) -> bool:
    """Whether any message can have a grace period: a global delay or any rule's."""
    return bool(default) or any(rule.delay for rule in rules.rules)


def _choice(rules: Rules, template: str, rule: Rule | None) -> Choice:
    variables = dict(rules.variables)
    if rule is not None:
        variables.update(rule.variables)
    name = None if rule is None else rule.name
    return Choice(template=template, rule_name=name, variables=variables)


def parse_rules(text: str) -> Rules:
    """Parse the text of ``rules.toml``; raise ``RulesError`` with the line at fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _decode_error(exc, text) from None
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
    rules = tuple(_parse_rule(raw, index, where) for index, raw in enumerate(raw_rules))
    _reject_duplicates(rules)
    return Rules(
        rules=rules, default=default, variables=variables, default_line=where.top("default")
    )


def _parse_rule(raw: object, index: int, where: _Locator) -> Rule:
    def line(key: str | None = None) -> int:
        return where.rule(index, key)

    if not isinstance(raw, dict):
        raise RulesError("each [[rule]] must be a table", line=line())
    _reject_unknown(raw, _RULE_KEYS, "key in [[rule]]", line)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RulesError('[[rule]] needs a name, e.g. name = "billing"', line=line("name"))
    if "template" not in raw:
        raise RulesError(f'rule {name!r} needs a template = "..."', line=line())
    _check_template_name(raw["template"], "template", line("template"))
    variables = raw.get("vars", {})
    if not isinstance(variables, dict):
        raise RulesError(f"rule {name!r}: 'vars' must be a table", line=line("vars"))
    return Rule(
        name=name,
        template=raw["template"],
        inboxes=_patterns(raw, "inbox", name, line("inbox")),
        senders=_patterns(raw, "sender", name, line("sender")),
        subjects=_regexes(raw, name, line("subject")),
        variables=variables,
        delay=_delay(raw, name, line("delay")),
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

    def rule(self, index: int, key: str | None = None) -> int:
        """Line of ``key`` in the ``index``-th rule, else of the rule itself; 0 if unknown."""
        start = self._rules[index] if index < len(self._rules) else 0
        return self._rule_keys.get((index, key), start) if key else start
