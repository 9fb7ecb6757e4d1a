"""rules.toml: parsing with line-numbered errors, and first-match-wins template choice."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from handlers.message import InboundMessage
from handlers.modes import ReplyMode
from handlers.rules import (
    Choice,
    Delay,
    RulesError,
    choose,
    configured_delay,
    parse_rules,
    reply_delay,
    resolve_mode,
)

#: When the messages below were received (rules without a time condition ignore it).
AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)

RULES = """\
default = "general"

[vars]
team = "The Example team"
hours = "9:00-17:00"

[[rule]]
name = "vip"
sender = ["ceo@partner.com", "@bigcustomer.com"]
template = "vip"
[rule.vars]
team = "Your account manager"

[[rule]]
name = "billing"
inbox = "support@example.agentmail.to"
subject = ["invoice", "^billing\\\\b"]
template = "billing"

[[rule]]
name = "sales inbox"
inbox = "@sales.example.com"
template = "sales"
"""


def message(**fields: Any) -> InboundMessage:
    base: dict[str, Any] = {
        "event_type": "message.received",
        "inbox_id": "support@example.agentmail.to",
        "message_id": "<m1@example.com>",
        "thread_id": "t1",
        "sender": "jane@example.com",
        "subject": "Hello",
    }
    return InboundMessage(**(base | fields))


@pytest.mark.parametrize(
    ("fields", "template", "rule"),
    [
        ({}, "general", None),
        ({"sender": "CEO <CEO@Partner.com>"}, "vip", "vip"),
        ({"sender": "a@eu.bigcustomer.com", "subject": "Invoice 12"}, "vip", "vip"),
        ({"subject": "Your INVOICE is late"}, "billing", "billing"),
        ({"subject": "Billing question"}, "billing", "billing"),
        ({"subject": "Re: billing question"}, "general", None),
        ({"subject": None}, "general", None),
        ({"inbox_id": "other@example.agentmail.to", "subject": "invoice"}, "general", None),
        ({"inbox_id": "Team@Sales.Example.com"}, "sales", "sales inbox"),
    ],
)
def test_first_matching_rule_wins(fields: dict[str, Any], template: str, rule: str | None) -> None:
    """Rules are tried in file order; every condition a rule sets must hold."""
    choice = choose(parse_rules(RULES), message(**fields), received_at=AT)
    assert (choice.template, choice.rule_name) == (template, rule)


def test_rule_vars_override_global_vars() -> None:
    """A rule's [rule.vars] are merged over [vars]."""
    rules = parse_rules(RULES)
    vip = choose(rules, message(sender="ceo@partner.com"), received_at=AT)
    assert vip.variables == {"team": "Your account manager", "hours": "9:00-17:00"}
    assert choose(rules, message(), received_at=AT).variables == {
        "team": "The Example team",
        "hours": "9:00-17:00",
    }


def test_forcing_a_template_uses_the_vars_of_its_first_rule() -> None:
    """Previewing a template by name renders it with the vars its rule would give."""
    rules = parse_rules(RULES)
    assert rules.for_template("vip") == Choice(
        template="vip",
        rule_name="vip",
        variables={"team": "Your account manager", "hours": "9:00-17:00"},
    )
    assert rules.for_template("general").rule_name is None


def test_empty_file_means_the_default_template() -> None:
    """No rules file content: everything gets the template called default."""
    assert choose(parse_rules(""), message(), received_at=AT) == Choice(
        template="default", rule_name=None, variables={}
    )


@pytest.mark.parametrize(
    "name",
    [
        "Europe",  # a folder of the zone data: ZoneInfo raised IsADirectoryError
        "x" * 5000,  # longer than a file name may be: ZoneInfo raised OSError
        "A/" * 2000 + "B",
        "../../etc/passwd",
        "/etc/passwd",
        "Europe/../../etc/passwd",
        "zone.tab",  # a file of the zone data that is not a zone
        "right/Europe/Berlin",  # counts leap seconds: 27 s off AgentMail's clock
        "Europe/Berlin\\u0000",  # a NUL, written as TOML escapes it
        "",
    ],
)
def test_a_hostile_time_zone_name_is_refused_on_its_line(name: str) -> None:
    """Whatever string names the zone, the answer is an error on the line of
    ``timezone``, never an exception from reading the zone data."""
    text = rule(f'timezone = "{name}"', 'weekly = "Sat-Sun"')
    with pytest.raises(RulesError) as caught:
        parse_rules(text)
    assert caught.value.line == 4
    assert "time zone" in caught.value.message or "timezone" in caught.value.message
    assert len(caught.value.message) < 200


@pytest.mark.parametrize(
    ("text", "line", "message_part"),
    [
        ('default = "x"\n[[rule]\n', 2, "Expected"),
        ('default = "x"\nname = \n', 2, "Invalid value"),
        ('default = "x"\ncolour = "red"\n', 2, "unknown top-level key 'colour'"),
        ('default = "../etc"\n', 1, "must name a template folder"),
        ("vars = 3\n", 1, "'vars' must be a table"),
        ('\n[[rule]]\nname = "a"\ntemplate = "a"\nsenders = "x@y.z"\n', 5, "did you mean 'sender'"),
        ('\n[[rule]]\ntemplate = "a"\n', 2, "needs a name"),
        ('[[rule]]\nname = "a"\n', 1, "needs a template"),
        ('[[rule]]\nname = "a"\ntemplate = "a"\nsubject = "(unclosed"\n', 4, "not a valid regex"),
        ('[[rule]]\nname = "a"\ntemplate = "a"\nsender = "not an address"\n', 4, "sender"),
        ('[[rule]]\nname = "a"\ntemplate = "a"\ninbox = 3\n', 4, "string or a list of strings"),
        ('[[rule]]\nname = "a"\ntemplate = "a"\n[rule.vars]\n', 0, None),
        ('[[rule]]\nname = "a"\ntemplate = "a"\nvars = "x"\n', 4, "'vars' must be a table"),
        (
            '[[rule]]\nname = "a"\ntemplate = "a"\n\n[[rule]]\nname = "a"\ntemplate = "b"\n',
            5,
            "two rules",
        ),
        ("rule = 1\n", 1, "array of tables"),
        ('[[rule]]\nname = "a"\ntemplate = "a"\ndelay = "5 minutes"\n', 4, "invalid duration"),
        ('[[rule]]\nname = "a"\ntemplate = "a"\ndelay = 300\n', 4, "duration string"),
        ('[[rule]]\nname = "a"\ntemplate = "a"\n\ndelay = "-1m"\n', 5, "rule 'a': delay"),
        ('[[rule]]\nname = "a"\ntemplate = "a"\ndelai = "1m"\n', 4, "did you mean 'delay'"),
        ('[[rule]]\nname = "a"\ntemplate = "a"\nmode = "later"\n', 4, "mode must be one of"),
        ('[[rule]]\nname = "a"\ntemplate = "a"\nmode = 1\n', 4, "'send', 'draft'"),
    ],
)
def test_errors_name_the_line(text: str, line: int, message_part: str | None) -> None:
    """Every mistake in rules.toml is reported with the line to fix."""
    if message_part is None:
        parse_rules(text)  # an empty [rule.vars] table is fine
        return
    with pytest.raises(RulesError, match=message_part) as caught:
        parse_rules(text)
    assert caught.value.line == line


DELAYS = """\
[[rule]]
name = "vip"
sender = "@vip.example"
template = "default"
delay = "0"

[[rule]]
name = "billing"
subject = "invoice"
template = "default"
delay = "15m"

[[rule]]
name = "sales"
inbox = "@sales.example.com"
template = "default"
"""


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, Delay(delay=timedelta(minutes=5), rule_name=None)),
        ({"subject": "Invoice 1"}, Delay(delay=timedelta(minutes=15), rule_name="billing")),
        (
            {"sender": "a@vip.example", "subject": "Invoice"},
            Delay(delay=timedelta(0), rule_name="vip"),
        ),
        ({"inbox_id": "x@sales.example.com"}, Delay(delay=timedelta(minutes=5), rule_name=None)),
    ],
)
def test_the_first_matching_rule_chooses_the_delay(fields: dict[str, Any], expected: Delay) -> None:
    """The delay follows first-match-wins like the template; a matching rule without a
    delay leaves it to the global one, and delay "0" answers at once."""
    rules = parse_rules(DELAYS)
    assert reply_delay(rules, message(**fields), timedelta(minutes=5), received_at=AT) == expected


def test_a_delay_is_configured_when_global_or_in_any_rule() -> None:
    """What registration asks to decide whether to subscribe to message.sent."""
    assert configured_delay(parse_rules(DELAYS), timedelta(0))
    assert configured_delay(parse_rules(""), timedelta(seconds=1))
    assert not configured_delay(parse_rules(""), timedelta(0))
    only_zero = '[[rule]]\nname = "a"\ntemplate = "a"\ndelay = "0"\n'
    assert not configured_delay(parse_rules(only_zero), timedelta(0))


TIMED = """\
[[rule]]
name = "partner ticketing"
sender = "@tickets.partner.example"
action = "skip"

[[rule]]
name = "vacation"
dates = ["2026-12-24 - 2026-12-31"]
template = "away"

[[rule]]
name = "after hours"
timezone = "America/New_York"
weekly = [
  "Mon-Thu 17:00-09:00",
  "Fri 17:00 - Mon 09:00",
]
subject = "order"
template = "closed"
"""


@pytest.mark.parametrize(
    ("received", "fields", "template", "rule"),
    [
        # Outside New York's hours, but only for subjects the rule names.
        ("2026-12-01T23:00Z", {"subject": "My order"}, "closed", "after hours"),
        ("2026-12-01T23:00Z", {"subject": "Hello"}, "general", None),
        ("2026-12-01T15:00Z", {"subject": "My order"}, "general", None),
        # The vacation is in the service's zone (Europe/Berlin here): its first minute
        # is 23:00 UTC the day before.
        ("2026-12-23T22:59Z", {}, "general", None),
        ("2026-12-23T23:00Z", {}, "away", "vacation"),
        ("2026-12-31T22:59Z", {}, "away", "vacation"),
        ("2026-12-31T23:00Z", {}, "general", None),
        # A skip rule wins whatever the time, being first.
        ("2026-12-25T12:00Z", {"sender": "bot@tickets.partner.example"}, None, "partner ticketing"),
    ],
)
def test_rules_with_times_and_skips(
    received: str, fields: dict[str, Any], template: str | None, rule: str | None
) -> None:
    """Time conditions add to the others; a rule without a zone uses the default one."""
    rules = parse_rules('default = "general"\n' + TIMED, timezone=ZoneInfo("Europe/Berlin"))
    choice = choose(rules, message(**fields), received_at=datetime.fromisoformat(received))
    assert (choice.template, choice.rule_name) == (template, rule)
    assert choice.skip_rule == (rule if template is None else None)


def test_the_chosen_rule_carries_its_window() -> None:
    """A rule with a time condition gives the stretch it holds for; others give none."""
    rules = parse_rules(TIMED, timezone=ZoneInfo("Europe/Berlin"))
    friday_night = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)  # Fri 20:00 in New York
    choice = choose(rules, message(subject="order 7"), received_at=friday_night)
    assert choice.window is not None
    assert choice.window.end == datetime(2026, 12, 7, 9, 0, tzinfo=ZoneInfo("America/New_York"))
    assert str(choice.window.end) == "2026-12-07 09:00:00-05:00"
    assert choose(rules, message(), received_at=friday_night).window is None


def rule(*lines: str) -> str:
    """A one-rule file: the rule's header on line 1, then ``lines`` from line 2."""
    return "\n".join(["[[rule]]", 'name = "r"', 'template = "t"', *lines]) + "\n"


@pytest.mark.parametrize(
    ("text", "line", "message_part"),
    [
        (rule('weekly = "Mnday 09:00-17:00"'), 4, "'Mnday' is not a day of the week"),
        (rule('weekly = "Mon-Fri 25:00-26:00"'), 4, "25:00 is not a time of day"),
        (rule("weekly = [", '  "Mon-Fri 09:00-17:00",', '  "Sat 9:00-9:00",', "]"), 6, "empty"),
        (rule("weekly = []"), 4, "non-empty list"),
        (rule("weekly = [3]"), 4, "entries are strings"),
        (rule('dates = "2027-01-06 - 2026-12-24"'), 4, "ends before it starts"),
        (rule('dates = "2026-02-30"'), 4, "2026-02-30 is not a date"),
        (rule("dates = [", '  "2026-12-24",', '  "2026-13-01",', "]"), 6, "not a date"),
        (rule('timezone = "Mars/Olympus"', 'weekly = "Sat-Sun"'), 4, "unknown time zone"),
        (rule('timezone = "Europe/Paris"'), 4, "it has neither"),
        # Hostile sizes: refused at once, on their line, not minutes of pairwise checks.
        (
            rule("weekly = [", *[f'  "Mon {h:02d}:00-{h:02d}:30",' for h in range(24)] * 5, "]"),
            4,
            "weekly has 120 entries, more than 100",
        ),
        (
            rule(
                "dates = [",
                *[f'  "{2026 + n // 300}-01-01 - {2026 + n // 300}-01-02",' for n in range(1001)],
                "]",
            ),
            4,
            "dates has 1001 entries",
        ),
        (rule('weekly = "' + "Mon-" * 50_000 + 'Tue"'), 4, "a weekly entry of 200003 characters"),
        (rule("weekly = " + "[" * 5000 + "]" * 5000), 4, "nested too deep"),
        (
            rule("weekly = [", '  "Mon-Fri 09:00-17:00",', '  "Fri 12:00-18:00",', "]"),
            4,
            "'Mon-Fri 09:00-17:00' and 'Fri 12:00-18:00' overlap (Fri 12:00 to Fri 17:00)",
        ),
        (
            rule('dates = ["2026-12-20 - 2026-12-27", "2026-12-27 - 2027-01-03"]'),
            4,
            "overlap (from 2026-12-27 00:00)",
        ),
        (rule('action = "ignore"'), 4, 'action must be "reply" or "skip"'),
        (rule('action = "skip"'), 3, "takes no template"),
        ('[[rule]]\nname = "s"\naction = "skip"\n[rule.vars]\nx = 1\n', 4, "takes no vars"),
        ('[[rule]]\nname = "s"\naction = "skip"\ndelay = "5m"\n', 4, "takes no delay"),
        ('[[rule]]\nname = "s"\naction = "skip"\nmode = "draft"\n', 4, "takes no mode"),
    ],
)
def test_time_and_action_errors_name_the_line(text: str, line: int, message_part: str) -> None:
    """Impossible days, hours, dates, zones, empty or overlapping windows: refused at
    the line of the entry (for lists spread over lines, the entry's own line)."""
    with pytest.raises(RulesError, match=re.escape(message_part)) as caught:
        parse_rules(text)
    assert caught.value.line == line


def test_windows_that_only_touch_and_a_toml_date_are_fine() -> None:
    """Adjacent windows are how after-hours are written; a bare TOML date is one day."""
    parsed = parse_rules(
        rule(
            'weekly = ["Mon-Thu 18:00-09:00", "Fri 18:00 - Mon 09:00"]',
            "dates = [2026-12-24, '2026-12-25 - 2026-12-26']",
        )
    )
    [only] = parsed.rules
    assert [d.text for d in only.schedule.dates] == ["2026-12-24", "2026-12-25 - 2026-12-26"]


def test_a_rule_sets_the_mode_of_what_it_matches() -> None:
    """A matching rule's ``mode`` wins; otherwise (no rule, a rule without one, or a
    forced template) ``AUTOREPLY_MODE`` decides, and the choice says who chose."""
    rules = parse_rules(
        '[[rule]]\nname = "vip"\ntemplate = "vip"\nsender = "vip.example"\nmode = "draft"\n'
        '[[rule]]\nname = "other"\ntemplate = "general"\nsubject = "x"\n'
    )
    assert rules.modes == {ReplyMode.DRAFT}
    vip = choose(rules, message(sender="a@vip.example"), received_at=AT)
    assert resolve_mode(vip, ReplyMode.SEND) == (ReplyMode.DRAFT, "rule 'vip'")
    other = choose(rules, message(subject="x"), received_at=AT)
    assert resolve_mode(other, ReplyMode.DRAFT) == (ReplyMode.DRAFT, "AUTOREPLY_MODE")
    nothing = choose(rules, message(), received_at=AT)
    assert resolve_mode(nothing, ReplyMode.SEND) == (ReplyMode.SEND, "AUTOREPLY_MODE")
    forced = rules.for_template("vip")
    assert resolve_mode(forced, ReplyMode.SEND) == (ReplyMode.SEND, "AUTOREPLY_MODE")
