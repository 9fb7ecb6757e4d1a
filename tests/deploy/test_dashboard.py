"""deploy/grafana: the committed dashboard is what generate.py builds, and its queries parse.

That every metric and label the queries use exists on a running service is
tests/deploy/test_monitoring_metrics.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.deploy import promql
from tests.deploy.promql import DASHBOARD, dashboard, dashboard_expressions, uses

GENERATOR = DASHBOARD.with_name("generate.py")


def test_the_committed_dashboard_is_the_generated_one() -> None:
    generated = promql.load_script(GENERATOR).render()
    assert DASHBOARD.read_text() == generated, (
        "deploy/grafana/autoreply.json is stale: run `make monitoring` and commit it"
    )


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule promtool checks."""
    queries = dashboard_expressions()
    rules = [
        {"record": f"dashboard_query_{number}", "expr": promql.substitute_grafana(expr)}
        for number, expr in enumerate(queries.values())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promql.run_promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_every_query_follows_the_data_source_and_the_picked_replicas() -> None:
    for panel in _panels():
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for selector in uses(target["expr"]).selectors:
                matchers = {(m.label, m.op, m.value) for m in selector.matchers}
                assert ("job", "=~", "$job") in matchers, (panel["title"], target["expr"])
                assert ("instance", "=~", "$instance") in matchers, (panel["title"], target["expr"])


def test_it_shows_what_an_operator_looks_for() -> None:
    """Deliveries by outcome, replies by fate, latency percentiles, the queue (due apart
    from waiting out a grace period), dead letters, draft mode, the catch-up sweep, and
    the replicas one by one."""
    exprs = "\n".join(dashboard_expressions().values())
    for needle in (
        "sum by (outcome, status) (rate(autoreply_deliveries_total",
        "autoreply_replies_sent_total",
        "sum by (reason) (rate(autoreply_replies_skipped_total",
        "sum by (kind) (rate(autoreply_replies_failed_total",
        "histogram_quantile(0.99, sum by (le) (rate(autoreply_delivery_to_reply_seconds_bucket",
        'autoreply_jobs{job=~"$job", instance=~"$instance", state=~"pending|running"}',
        "autoreply_oldest_pending_job_age_seconds",
        'state="dead"',
        "sum by (instance) (rate(autoreply_deliveries_total",
        "max by (job) (autoreply_jobs_waiting",
        'state="drafted"',
        "autoreply_drafts_created_total",
        "autoreply_drafts_discarded_total",
        "sum by (outcome) (increase(autoreply_sweep_runs_total",
        'autoreply_sweep_runs_total{job=~"$job", instance=~"$instance", outcome="failed"}',
        "time() - max by (job, inbox_id) (autoreply_sweep_last_success_timestamp_seconds",
    ):
        assert needle in exprs, needle


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = _panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = dashboard()["panels"]
    return panels
