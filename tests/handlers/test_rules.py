"""rules.toml: parsing with line-numbered errors, and first-match-wins template choice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from handlers.message import InboundMessage
from handlers.rules import (
    Choice,
    Delay,
    RulesError,
    choose,
    configured_delay,
    parse_rules,
    reply_delay,
)

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
    choice = choose(parse_rules(RULES), message(**fields))
    assert (choice.template, choice.rule_name) == (template, rule)


def test_rule_vars_override_global_vars() -> None:
    """A rule's [rule.vars] are merged over [vars]."""
    rules = parse_rules(RULES)
    vip = choose(rules, message(sender="ceo@partner.com"))
    assert vip.variables == {"team": "Your account manager", "hours": "9:00-17:00"}
    assert choose(rules, message()).variables == {"team": "The Example team", "hours": "9:00-17:00"}


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
    assert choose(parse_rules(""), message()) == Choice(
        template="default", rule_name=None, variables={}
    )


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
    assert reply_delay(rules, message(**fields), timedelta(minutes=5)) == expected


def test_a_delay_is_configured_when_global_or_in_any_rule() -> None:
    """What registration asks to decide whether to subscribe to message.sent."""
    assert configured_delay(parse_rules(DELAYS), timedelta(0))
    assert configured_delay(parse_rules(""), timedelta(seconds=1))
    assert not configured_delay(parse_rules(""), timedelta(0))
    only_zero = '[[rule]]\nname = "a"\ntemplate = "a"\ndelay = "0"\n'
    assert not configured_delay(parse_rules(only_zero), timedelta(0))
