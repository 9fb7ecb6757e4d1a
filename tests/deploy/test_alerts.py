"""deploy/prometheus: the alert rules load, behave as their unit tests say, and lead to
the runbook.

``promtool`` (Debian package ``prometheus``) checks the rules and runs their unit tests
(alerts_test.yaml, alerts_week_test.yaml). Without it these tests skip, except under CI,
which installs it (.ci/run) and must run them. That every metric and label the rules use
exists on a running service is tests/deploy/test_monitoring_metrics.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import promql
from tests.deploy.promql import ALERTS, ROOT, alert_rules

RUNBOOK = ROOT / "docs" / "operations.md"
UNIT_TESTS = sorted(ALERTS.parent.glob("*_test.yaml"))


def run_promtool(*args: str, cwd: Path = ALERTS.parent) -> subprocess.CompletedProcess[str]:
    return promql.run_promtool(*args, cwd=cwd)


@pytest.mark.slow
def test_promtool_checks_the_rules() -> None:
    result = run_promtool("check", "rules", "--lint=all", "--lint-fatal", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


@pytest.mark.slow
def test_promtool_unit_tests_pass() -> None:
    assert UNIT_TESTS, "no promtool unit tests next to alerts.yaml"
    result = run_promtool("test", "rules", *(path.name for path in UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests have teeth: move one threshold and they fail."""
    rules = ALERTS.read_text()
    assert "autoreply_store_up == 0" in rules
    broken = rules.replace("autoreply_store_up == 0", "autoreply_store_up == 2")
    (tmp_path / ALERTS.name).write_text(broken)
    for path in UNIT_TESTS:
        shutil.copy(path, tmp_path / path.name)
    result = run_promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "AutoreplyStoreDown" in result.stdout + result.stderr


def _unit_test_cases() -> list[dict[str, Any]]:
    cases = []
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            cases.extend(test.get("alert_rule_test", []))
    return cases


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = _unit_test_cases()
    for rule in alert_rules():
        name = rule["alert"]
        own = [case for case in cases if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in own), f"{name}: no test where it fires"
        quiet = [case for case in own if not case.get("exp_alerts")]
        assert quiet, f"{name}: no test where it stays quiet"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    anchors = {_anchor(line) for line in RUNBOOK.read_text().splitlines() if line.startswith("#")}
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert annotations["summary"], name
        assert annotations["description"], name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert (ROOT / path) == RUNBOOK, name
        assert anchor == name.lower(), name
        assert anchor in anchors, f"{name}: docs/operations.md has no section #{anchor}"


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.lstrip("#").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")
