"""Every metric and label the alerts and the dashboard use, checked against a running service.

A real ``autoreply serve`` is driven until the labelled series the queries name exist (a
counter with labels appears in /metrics only with its first child): a reply that fails
once with a retryable error and is then sent, a message the policy skips, a delivery
with a forged signature (401), and a catch-up sweep that fails once (AgentMail refuses to
list the inboxes) and then completes, which sets its last success per inbox. Then its
/metrics is scraped and every vector selector of
every alert expression, dashboard query and dashboard variable is checked:

* the metric is exposed, under that exact sample name (``_total``, ``_bucket``...);
* each label it matches on is one of the metric's labels, and each literal value it
  matches (``state="failing"``, ``status="401"``, ``state=~"pending|running"``) is a value
  the service really produced;
* ``rate``/``increase`` only ever read counters (or a histogram's series);
* each ``by``/``on``/``without`` label is a label of the metrics in that expression.

Every metric the scrape shows must also have its row in the README's metrics table.

``job``, ``instance`` and ``namespace`` are not the service's: Prometheus adds them at
scrape time (``namespace`` with the Prometheus Operator), so they are accepted by name.
Syntax is promtool's part (test_alerts.py, test_dashboard.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.promql import (
    Uses,
    alert_expressions,
    dashboard_expressions,
    dashboard_variable_selectors,
    uses,
)
from tests.support import mail
from tests.support.deployment import Deployment

#: Labels Prometheus attaches to every scraped sample; not the service's to expose.
TARGET_LABELS = {"job", "instance", "namespace"}
#: Functions that need a counter (or a histogram's _bucket/_sum/_count series).
COUNTER_FUNCTIONS = {"rate", "increase", "irate", "resets"}


@dataclass
class Exposed:
    """One sample name of a scrape: its family's type and every label value seen."""

    kind: str
    labels: dict[str, set[str]] = field(default_factory=dict)


def index(text: str) -> dict[str, Exposed]:
    """Sample name -> what the scrape shows of it."""
    found: dict[str, Exposed] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            exposed = found.setdefault(sample.name, Exposed(family.type))
            for label, value in sample.labels.items():
                exposed.labels.setdefault(label, set()).add(value)
    return found


def problems(name: str, used: Uses, exposed: dict[str, Exposed]) -> list[str]:
    """What ``used`` refers to that the scrape does not have, as sentences."""
    found = []
    labels_here = set(TARGET_LABELS)
    for selector in used.selectors:
        metric = exposed.get(selector.name)
        if metric is None:
            found.append(f"{name}: {selector.name} is not exposed")
            continue
        labels_here |= set(metric.labels)
        if selector.function in COUNTER_FUNCTIONS and metric.kind not in ("counter", "histogram"):
            found.append(f"{name}: {selector.function}() of {selector.name}, a {metric.kind}")
        for matcher in selector.matchers:
            if matcher.label in TARGET_LABELS:
                continue
            values = metric.labels.get(matcher.label)
            if values is None:
                found.append(f"{name}: {selector.name} has no label {matcher.label}")
            elif "$" not in matcher.value and not _matches(matcher.op, matcher.value, values):
                found.append(
                    f"{name}: {selector.name}{{{matcher.label}{matcher.op}{matcher.value!r}}} "
                    f"matches none of the values the service produced ({sorted(values)})"
                )
    for label in sorted(used.grouping - labels_here):
        found.append(f"{name}: groups by {label}, a label of none of its metrics")
    return found


def _matches(op: str, pattern: str, values: set[str]) -> bool:
    if op == "=":
        return pattern in values
    if op == "=~":
        # Every alternative of a plain alternation must exist; any regex must match one.
        if re.fullmatch(r"[\w|]+", pattern):
            return set(pattern.split("|")) <= values
        return any(re.fullmatch(pattern, value) for value in values)
    return True  # != and !~ select what is not there: nothing to check


def everything_used() -> dict[str, Uses]:
    """Every expression of the alerts and the dashboard (and its variables), by where."""
    used = {f"alert {name}": uses(expr) for name, expr in alert_expressions().items()}
    used.update({f"dashboard {name}": uses(expr) for name, expr in dashboard_expressions().items()})
    for variable, (selector, label) in dashboard_variable_selectors().items():
        found = uses(selector)
        found.grouping.add(label)  # label_values(selector, label) reads that label
        used[f"dashboard variable ${variable}"] = found
    return used


README = Path(__file__).resolve().parents[2] / "README.md"


def documented() -> set[str]:
    """The metric names of the README's table (its rows start with a name in backticks)."""
    return set(re.findall(r"^\| `(autoreply_\w+)", README.read_text(), re.MULTILINE))


def family_names(text: str) -> set[str]:
    """The service's metric names in a scrape, as a reader writes them (``_total`` on counters).

    prometheus_client adds a ``<name>_created`` gauge beside each counter and histogram
    (when it was created); those are not metrics of their own.
    """
    families = {
        family.name: family.type
        for family in text_string_to_metric_families(text)
        if family.name.startswith("autoreply_")
    }
    return {
        f"{name}_total" if kind == "counter" else name
        for name, kind in families.items()
        if not (name.endswith("_created") and name.removesuffix("_created") in families)
    }


def drive(sandbox: Any, deployment: Deployment) -> str:
    """Start a service, make it produce every labelled series the queries need, scrape it."""
    # The sweep at startup fails (a permanent error listing the inboxes); the next one,
    # an interval later, completes.
    sandbox.admin.add_fault("inboxes.list", status=403, times=1)
    service = deployment.start(AUTOREPLY_SWEEP_INTERVAL="10s")
    # The first send fails with a retryable error, the retry sends it.
    sandbox.admin.add_fault("messages.reply", status=503, times=1)
    sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="Hi", text="Hello"
    )
    mail.list_post(sandbox)
    states = deployment.wait_final(2)
    assert sorted(state for state, _ in states.values()) == ["done", "skipped"], states
    sandbox.admin.wait_for_deliveries()
    forged = httpx.post(
        f"{service.url}/webhooks/agentmail",
        content=b'{"event_type": "message.received"}',
        headers={
            "svix-id": "msg_forged",
            "svix-timestamp": str(int(time.time())),
            "svix-signature": "v1,Zm9yZ2VkIHNpZ25hdHVyZSwgbm90IGEgcmVhbCBvbmU=",
        },
        timeout=10,
    )
    assert forged.status_code == 401

    def swept() -> bool:
        text = httpx.get(f"{service.url}/metrics", timeout=10).text
        runs = {
            sample.labels["outcome"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "autoreply_sweep_runs_total"
        }
        return runs.get("failed", 0) >= 1 and runs.get("completed", 0) >= 1

    deployment.wait_until(swept, what="a failed and then a completed sweep")
    response = httpx.get(f"{service.url}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


@pytest.mark.slow
def test_every_metric_and_label_used_exists_on_a_running_service(
    sandbox: Any, tmp_path: Path
) -> None:
    deployment = Deployment(sandbox, tmp_path)
    try:
        text = drive(sandbox, deployment)
    finally:
        deployment.stop()
    # An operator reads what a metric means in the README's table: none is left out.
    undocumented = family_names(text) - documented()
    assert not undocumented, f"metrics missing from the README's table: {sorted(undocumented)}"
    exposed = index(text)
    used = everything_used()
    assert len([name for name in used if name.startswith("alert ")]) == len(alert_expressions())
    found = [problem for name, one in used.items() for problem in problems(name, one, exposed)]
    assert not found, "\n".join(found)

    # The check has teeth: a renamed metric, a label or a value the service does not
    # produce, a rate over a gauge, a grouping label no metric has.
    for expr, complaint in [
        ("rate(autoreply_deliveries_count[5m])", "is not exposed"),
        ('autoreply_store_up{state="x"}', "has no label state"),
        ('autoreply_webhook_registration{state="broken"}', "matches none of the values"),
        ('autoreply_jobs{state=~"pending|waiting"}', "matches none of the values"),
        ("rate(autoreply_jobs[5m])", "a gauge"),
        ("sum by (pod_name) (autoreply_store_up)", "groups by pod_name"),
    ]:
        assert any(complaint in p for p in problems("probe", uses(expr), exposed)), expr
