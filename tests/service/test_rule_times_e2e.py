"""Rules over time and skip rules in the running service, against the sandbox.

The sandbox's clock dates each injected message (its ``timestamp``), so one sender can
write inside and outside business hours without the test waiting for the evening; the
service reads that timestamp, not its own clock, to choose the rule.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.support.deployment import Deployment, replies_to

RULES = """\
[[rule]]
name = "partner tickets"
sender = "@tickets.partner.example"
action = "skip"

[[rule]]
name = "after hours"
timezone = "Europe/Berlin"
weekly = ["Mon-Thu 18:00-09:00", "Fri 18:00 - Mon 09:00"]
template = "closed"
"""


def templates(root: Path) -> Path:
    """Office hours in Berlin, the partner's ticketing system never answered."""
    for name, body in {
        "closed": 'We are closed; back {{ window.end.strftime("%A %H:%M %Z") }}.\n',
        "default": "We are open and on it.\n",
    }.items():
        (root / name).mkdir(parents=True)
        (root / name / "body.txt").write_text(body)
    (root / "rules.toml").write_text(RULES)
    return root


def test_one_sender_inside_and_outside_business_hours_gets_each_template(
    sandbox: Any, deployment: Deployment, tmp_path: Path
) -> None:
    """Jane writes on Tuesday at 10:00 and again at 20:00 (Berlin): the first gets the
    default, the second the after-hours reply saying when the office opens. The sender
    cooldown is off (its default, a day on the service's clock, would skip the second as
    ``sender_cooldown``: it counts across rules); max age is off since the sandbox's
    dates are not the service's now. They lie in the past: a timestamp later than the
    delivery is not believed (the rule would be chosen on the service's clock)."""
    folder = templates(tmp_path / "templates")
    deployment.start(
        AUTOREPLY_TEMPLATES_DIR=str(folder),
        AUTOREPLY_SENDER_COOLDOWN="0",
        AUTOREPLY_MAX_AGE="0",
    )
    sandbox.admin.set_clock("2026-11-24T10:00:00+01:00")
    morning = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="Order 1", text="Hi"
    )
    deployment.wait_final(1)
    sandbox.admin.set_clock("2026-11-24T20:00:00+01:00")
    evening = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="Order 2", text="Hi again"
    )
    jobs = deployment.wait_final(2)

    assert jobs[morning["message_id"]] == ("done", "replied")
    assert jobs[evening["message_id"]] == ("done", "replied")
    sent = sandbox.admin.sent()
    [open_reply] = replies_to(sent, morning["message_id"])
    [closed_reply] = replies_to(sent, evening["message_id"])
    assert open_reply["text"] == "We are open and on it.\n"
    assert closed_reply["text"] == "We are closed; back Wednesday 09:00 CET.\n"
    rules = dict(deployment.query("SELECT message_id, json_extract(reply, '$.rule') FROM jobs"))
    assert rules == {morning["message_id"]: None, evening["message_id"]: "after hours"}


def test_a_skip_rule_answers_nothing_and_records_why(
    sandbox: Any, deployment: Deployment, tmp_path: Path
) -> None:
    """The partner's ticketing system gets no reply at any hour: the job is skipped
    ``rule:partner tickets``, the message keeps its labels, the skip is counted."""
    folder = templates(tmp_path / "templates")
    service = deployment.start(AUTOREPLY_TEMPLATES_DIR=str(folder), AUTOREPLY_MAX_AGE="0")
    sandbox.admin.set_clock("2026-11-24T20:00:00+01:00")
    ticket = sandbox.admin.inject(
        from_="Desk <desk@tickets.partner.example>",
        to=sandbox.inbox,
        subject="[TICKET-7] opened",
        text="We opened a ticket.",
    )
    jobs = deployment.wait_final(1)

    assert jobs[ticket["message_id"]] == ("skipped", "rule:partner tickets")
    assert sandbox.admin.sent() == []
    assert sandbox.admin.label_changes() == []
    metrics = httpx.get(f"{service.url}/metrics", timeout=10).text
    assert 'autoreply_replies_skipped_total{reason="rule:partner tickets"} 1.0' in metrics
    lines = [json.loads(line) for line in service.log().splitlines() if line.startswith("{")]
    [attempt] = [line for line in lines if line["event"] == "job_attempt"]
    assert (attempt["outcome"], attempt["reason"]) == ("skipped", "rule:partner tickets")
