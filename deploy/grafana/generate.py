"""Build the Grafana dashboard deploy/grafana/autoreply.json with grafana-foundation-sdk.

The JSON is generated, never edited by hand: change this file, then run
``make monitoring`` (or ``python deploy/grafana/generate.py``). A test regenerates it and
fails when the committed file is stale, and another checks every metric and label its
queries use against a running service.

Import it in Grafana (Dashboards > New > Import) or provision it from a ConfigMap; it
asks for a Prometheus data source and filters by the scrape ``job`` and ``instance``.

Counters are per replica, so they are summed; ``autoreply_jobs``,
``autoreply_jobs_waiting`` and the oldest job's age describe the shared queue and every
replica reports the same value, so those take ``max`` per job. The sweep's last success
is per replica and inbox (the replica that swept it), so it takes ``max`` per inbox.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

OUTPUT = Path(__file__).with_name("autoreply.json")

UID = "agentmail-autoreply"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
#: Every query's selector: the deployments and replicas picked at the top.
SEL = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"


def query(expr: str, legend: str | None = None) -> prometheus.Dataquery:
    """A Prometheus range query on the dashboard's data source."""
    built = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    return built.legend_format(legend) if legend is not None else built


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    """Absolute thresholds: the first step's value is None (from minus infinity)."""
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def graph(
    title: str, description: str, unit: str, *targets: prometheus.Dataquery
) -> timeseries.Panel:
    """A time series panel, 12 columns wide, with a table legend showing mean and max."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .height(8)
        .span(12)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def single(
    title: str, description: str, expr: str, unit: str, steps: dash.ThresholdsConfig
) -> stat.Panel:
    """A stat panel, 4 columns wide, coloured by its thresholds."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr).instant())
        .unit(unit)
        .height(4)
        .span(4)
        .thresholds(steps)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )


def overview() -> list[stat.Panel]:
    ok = ("green", "red")
    return [
        single(
            "Replies sent",
            "Auto-replies sent in the dashboard's time range, all replicas (in draft mode, "
            "the drafts people sent).",
            f"sum(increase(autoreply_replies_sent_total{{{SEL}}}[$__range]))",
            "short",
            thresholds((None, "blue")),
        ),
        single(
            "Queue (due)",
            "Jobs pending or running now, less those waiting out a grace period "
            "(AUTOREPLY_REPLY_DELAY, a rule's delay): the work before the workers (the "
            "shared queue, read from the store), jobs waiting out a retry's backoff "
            "included. The waiting ones are the next row.",
            f'sum(max by (job, state) (autoreply_jobs{{{SEL}, state=~"pending|running"}}))'
            f" - sum(max by (job) (autoreply_jobs_waiting{{{SEL}}}))",
            "short",
            thresholds((None, "green"), (100, "orange"), (1000, "red")),
        ),
        single(
            "Oldest unfinished job",
            "How long the oldest pending or running job has waited; "
            "AutoreplyFallingBehind fires above 10 minutes.",
            f"max(autoreply_oldest_pending_job_age_seconds{{{SEL}}})",
            "s",
            thresholds((None, "green"), (600, "orange"), (3600, "red")),
        ),
        single(
            "Dead letters",
            "Dead jobs in the store: messages given up on and left unanswered. "
            "`autoreply status` lists them, `autoreply requeue` retries them.",
            f'sum(max by (job) (autoreply_jobs{{{SEL}, state="dead"}}))',
            "short",
            thresholds((None, ok[0]), (1, ok[1])),
        ),
        single(
            "Store down",
            "Replicas whose store did not answer the last scrape.",
            f"count(autoreply_store_up{{{SEL}}} == 0) or vector(0)",
            "short",
            thresholds((None, ok[0]), (1, ok[1])),
        ),
        single(
            "Registration failing",
            "Replicas whose webhook registration at AgentMail is failing (not ready).",
            f'sum(autoreply_webhook_registration{{{SEL}, state="failing"}}) or vector(0)',
            "short",
            thresholds((None, ok[0]), (1, ok[1])),
        ),
        single(
            "Waiting out a delay",
            "Pending jobs waiting out a grace period, not yet due: a long "
            "AUTOREPLY_REPLY_DELAY makes many, and that is no backlog.",
            f"sum(max by (job) (autoreply_jobs_waiting{{{SEL}}}))",
            "short",
            thresholds((None, "blue")),
        ),
        single(
            "Drafts awaiting review",
            "Draft mode: reply drafts created and not yet sent or deleted by a person "
            "(`autoreply drafts list`). In draft mode Replies sent counts only the drafts "
            "people send, so it stays low.",
            f'sum(max by (job) (autoreply_jobs{{{SEL}, state="drafted"}}))',
            "short",
            thresholds((None, "blue")),
        ),
        single(
            "Drafts discarded",
            "Draft mode: reply drafts deleted without being sent in the dashboard's time "
            "range; their messages stay unanswered.",
            f"sum(increase(autoreply_drafts_discarded_total{{{SEL}}}[$__range]))",
            "short",
            thresholds((None, "blue")),
        ),
        single(
            "Missed mail found",
            "Messages no webhook delivered that the catch-up sweep enqueued in the time "
            "range (AutoreplySweepFoundMissedMail). Normally 0.",
            f"sum(increase(autoreply_sweep_jobs_enqueued_total{{{SEL}}}[$__range]))",
            "short",
            thresholds((None, ok[0]), (1, "orange")),
        ),
        single(
            "Failed sweeps",
            "Catch-up sweep passes that failed in the time range (AutoreplySweepFailing "
            "fires once passes failed and none completed in an hour, for 30 minutes).",
            f'sum(increase(autoreply_sweep_runs_total{{{SEL}, outcome="failed"}}[$__range]))',
            "short",
            thresholds((None, ok[0]), (1, "orange")),
        ),
        single(
            "Last complete sweep",
            "How long ago the inbox swept longest ago was last swept to the end (by any "
            "replica since it started). No data while the sweep is off "
            "(AUTOREPLY_SWEEP_INTERVAL=0) or before a first pass completed.",
            "time() - min(max by (job, inbox_id) "
            f"(autoreply_sweep_last_success_timestamp_seconds{{{SEL}}}))",
            "s",
            thresholds((None, "green"), (1800, "orange"), (3600, "red")),
        ),
    ]


def intake() -> list[timeseries.Panel]:
    return [
        graph(
            "Deliveries by outcome",
            "Webhook requests per second: accepted 202, duplicate/ignored 200, rejected 4xx "
            "(401: signature), unavailable 503.",
            "reqps",
            query(
                f"sum by (outcome, status) (rate(autoreply_deliveries_total{{{SEL}}}[{RATE}]))",
                "{{outcome}} {{status}}",
            ),
        ),
        graph(
            "Replies sent, skipped, failed",
            "Per second: replies sent, messages skipped by the policy, failed attempts "
            "(transient ones are retried) and jobs dead-lettered.",
            "ops",
            query(f"sum(rate(autoreply_replies_sent_total{{{SEL}}}[{RATE}]))", "sent"),
            query(f"sum(rate(autoreply_replies_skipped_total{{{SEL}}}[{RATE}]))", "skipped"),
            query(
                f"sum by (kind) (rate(autoreply_replies_failed_total{{{SEL}}}[{RATE}]))",
                "failed ({{kind}})",
            ),
            query(
                f"sum(rate(autoreply_replies_dead_lettered_total{{{SEL}}}[{RATE}]))",
                "dead-lettered",
            ),
        ),
    ]


def replies() -> list[timeseries.Panel]:
    return [
        graph(
            "Skipped by reason",
            "Messages the reply policy did not answer, per second, by reason.",
            "ops",
            query(
                f"sum by (reason) (rate(autoreply_replies_skipped_total{{{SEL}}}[{RATE}]))",
                "{{reason}}",
            ),
        ),
        graph(
            "Job attempts by outcome",
            "Worker attempts per second: replied, skipped, retry, dead, lease_lost, "
            "store_unavailable...",
            "ops",
            query(
                f"sum by (outcome) (rate(autoreply_job_attempts_total{{{SEL}}}[{RATE}]))",
                "{{outcome}}",
            ),
        ),
        graph(
            "Delivery to reply latency",
            "From recording the delivery to the reply being sent: percentiles over all "
            "replicas (histogram buckets up to a day, so retried replies show too).",
            "s",
            *[
                query(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(autoreply_delivery_to_reply_seconds_bucket{{{SEL}}}[{RATE}])))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.9, 0.99)
            ],
            query(
                f"sum(rate(autoreply_delivery_to_reply_seconds_sum{{{SEL}}}[{RATE}]))"
                f" / sum(rate(autoreply_delivery_to_reply_seconds_count{{{SEL}}}[{RATE}]))",
                "mean",
            ),
        ),
        graph(
            "Failed attempts by kind",
            "Transient failures (AgentMail 5xx, 429, timeouts) are retried; permanent ones "
            "are dead-lettered at once.",
            "ops",
            query(
                f"sum by (kind) (rate(autoreply_replies_failed_total{{{SEL}}}[{RATE}]))",
                "{{kind}}",
            ),
        ),
        graph(
            "Suppression list by cause",
            "Addresses never answered (reason suppressed), by cause: bounce, "
            "transient_bounces, complaint, manual. A jump of complaints means people report "
            "the auto-replies as spam (docs/operations.md).",
            "short",
            query(
                f"sum by (cause) (max by (job, cause) (autoreply_suppressions{{{SEL}}}))",
                "{{cause}}",
            ),
        ),
    ]


def queue() -> list[timeseries.Panel]:
    return [
        graph(
            "Queue depth",
            "The shared queue, as every replica reads it from the store: jobs due (pending "
            "and not waiting out a grace period; some may wait for a retry's backoff), "
            "waiting out a grace period (not yet due: no backlog), and running.",
            "short",
            query(
                f'max by (job) (autoreply_jobs{{{SEL}, state="pending"}})'
                f" - max by (job) (autoreply_jobs_waiting{{{SEL}}})",
                "{{job}} due",
            ),
            query(
                f"max by (job) (autoreply_jobs_waiting{{{SEL}}})",
                "{{job}} waiting out a delay",
            ),
            query(
                f'max by (job) (autoreply_jobs{{{SEL}, state="running"}})',
                "{{job}} running",
            ),
        ),
        graph(
            "Oldest unfinished job",
            "Age of the oldest pending or running job; 0 when the queue is empty.",
            "s",
            query(
                f"max by (job) (autoreply_oldest_pending_job_age_seconds{{{SEL}}})",
                "{{job}}",
            ),
        )
        .thresholds(thresholds((None, "green"), (600, "red")))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        ),
        graph(
            "Dead letters",
            "Dead jobs in the store: they stay until `autoreply requeue` retries them.",
            "short",
            query(f'max by (job) (autoreply_jobs{{{SEL}, state="dead"}})', "{{job}}"),
        ),
        graph(
            "Finished jobs",
            "Jobs done (replied) and skipped, as the store keeps them.",
            "short",
            query(
                f'max by (job, state) (autoreply_jobs{{{SEL}, state=~"done|skipped"}})',
                "{{job}} {{state}}",
            ),
        ),
    ]


def drafts() -> list[timeseries.Panel]:
    return [
        graph(
            "Drafts awaiting review",
            "Draft mode (AUTOREPLY_MODE=draft, a rule's mode): reply drafts waiting for a "
            "person to send or delete them, and the jobs whose draft was deleted unsent.",
            "short",
            query(
                f'max by (job) (autoreply_jobs{{{SEL}, state="drafted"}})',
                "{{job}} awaiting review",
            ),
            query(
                f'max by (job) (autoreply_jobs{{{SEL}, state="discarded"}})',
                "{{job}} discarded",
            ),
        ),
        graph(
            "Drafts created, sent, discarded",
            "Per second: reply drafts created, replies sent (in draft mode, the drafts "
            "people sent) and drafts deleted without being sent.",
            "ops",
            query(f"sum(rate(autoreply_drafts_created_total{{{SEL}}}[{RATE}]))", "created"),
            query(f"sum(rate(autoreply_replies_sent_total{{{SEL}}}[{RATE}]))", "sent"),
            query(f"sum(rate(autoreply_drafts_discarded_total{{{SEL}}}[{RATE}]))", "discarded"),
        ),
    ]


def sweep() -> list[timeseries.Panel]:
    return [
        graph(
            "Sweep runs by outcome",
            "Catch-up sweep passes in the last hour by outcome (completed, failed, "
            "interrupted), and the messages no webhook delivered that they enqueued. "
            "AutoreplySweepFailing fires when passes fail and none completes for an hour.",
            "short",
            query(
                f"sum by (outcome) (increase(autoreply_sweep_runs_total{{{SEL}}}[1h]))",
                "{{outcome}}",
            ),
            query(
                f"sum(increase(autoreply_sweep_jobs_enqueued_total{{{SEL}}}[1h]))",
                "missed messages enqueued",
            ),
        ),
        graph(
            "Since the last complete sweep, by inbox",
            "How long ago each inbox was last swept to the end (by any replica since it "
            "started): a sawtooth up to the interval when healthy; an inbox whose line "
            "keeps growing is the one failing.",
            "s",
            query(
                "time() - max by (job, inbox_id) "
                f"(autoreply_sweep_last_success_timestamp_seconds{{{SEL}}})",
                "{{job}} {{inbox_id}}",
            ),
        ),
    ]


def per_replica() -> list[timeseries.Panel]:
    return [
        graph(
            "Deliveries per replica",
            "Webhook requests per second each replica answered.",
            "reqps",
            query(
                f"sum by (instance) (rate(autoreply_deliveries_total{{{SEL}}}[{RATE}]))",
                "{{instance}}",
            ),
        ),
        graph(
            "Replies sent per replica",
            "Replies per second each replica's worker sent.",
            "ops",
            query(
                f"sum by (instance) (rate(autoreply_replies_sent_total{{{SEL}}}[{RATE}]))",
                "{{instance}}",
            ),
        ),
        graph(
            "Latency p90 per replica",
            "90th percentile of delivery to reply, per replica that sent the reply.",
            "s",
            query(
                "histogram_quantile(0.9, sum by (instance, le) "
                f"(rate(autoreply_delivery_to_reply_seconds_bucket{{{SEL}}}[{RATE}])))",
                "{{instance}}",
            ),
        ),
        graph(
            "Store and registration per replica",
            "1 while the replica's store answers; registration 1 while it is failing.",
            "short",
            query(f"autoreply_store_up{{{SEL}}}", "{{instance}} store up"),
            query(
                f'autoreply_webhook_registration{{{SEL}, state="failing"}}',
                "{{instance}} registration failing",
            ),
        ).max(1),
    ]


def variables() -> list[dash.DatasourceVariable | dash.QueryVariable]:
    def labels(name: str, label: str, source: str) -> dash.QueryVariable:
        return (
            dash.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(f"label_values({source}, {name})")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )

    return [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        labels("job", "Job", "autoreply_store_up"),
        labels("instance", "Replica", 'autoreply_store_up{job=~"$job"}'),
    ]


def build() -> dash.Dashboard:
    """The whole dashboard."""
    board = (
        dash.Dashboard("AgentMail auto-reply")
        .uid(UID)
        .description(
            "Deliveries, replies, latency, the queue, dead letters, draft mode and the "
            "catch-up sweep of agentmail-autoreply. "
            "Generated by deploy/grafana/generate.py; the runbook is docs/operations.md."
        )
        .tags(["agentmail-autoreply"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
    )
    for variable in variables():
        board = board.with_variable(variable)
    sections: list[tuple[str, list[stat.Panel] | list[timeseries.Panel]]] = [
        ("Overview", overview()),
        ("Deliveries and replies", intake()),
        ("Reply details and latency", replies()),
        ("Queue and dead letters", queue()),
        ("Draft mode", drafts()),
        ("Catch-up sweep", sweep()),
        ("Per replica", per_replica()),
    ]
    panel_id = 0
    for title, panels in sections:
        panel_id += 1
        board = board.with_row(dash.Row(title).id(panel_id))
        for panel in panels:
            panel_id += 1
            board = board.with_panel(panel.id(panel_id))
    return board


def render() -> str:
    """The dashboard as the JSON committed in deploy/grafana/autoreply.json."""
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"


def main() -> int:
    """Write the file; the tests fail while the committed one differs from ``render()``."""
    OUTPUT.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
