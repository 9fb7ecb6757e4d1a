"""rules.toml: parsing with line-numbered errors, and first-match-wins template choice."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.message import InboundMessage
from handlers.rules import Choice, RulesError, choose, parse_rules

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
