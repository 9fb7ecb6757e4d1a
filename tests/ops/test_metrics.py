"""``GET /metrics`` on a real service process: what an operator's Prometheus scrapes."""

from __future__ import annotations

from typing import Any

import httpx

from tests.ops.conftest import sample, scrape
from tests.support import mail
from tests.support.deployment import Deployment, replies_to


def test_metrics_count_deliveries_replies_and_the_queue(
    sandbox: Any, deployment: Deployment
) -> None:
    """One email delivered three times: one accepted, two duplicates, one reply, no queue."""
    service = deployment.start()
    result = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="Hi", text="Hello", copies=3
    )
    deployment.wait_final(1)
    sandbox.admin.wait_for_deliveries()
    assert len(replies_to(sandbox.admin.sent(), result["message_id"])) == 1

    metrics = scrape(service.url)
    deliveries = "autoreply_deliveries_total"
    assert sample(metrics, deliveries, outcome="accepted", status="202") == 1
    assert sample(metrics, deliveries, outcome="duplicate", status="200") == 2
    assert sample(metrics, "autoreply_replies_sent_total") == 1
    assert sample(metrics, "autoreply_job_attempts_total", outcome="replied") == 1
    assert sample(metrics, "autoreply_delivery_to_reply_seconds_count") == 1
    # Computed at scrape time from the store: the queue is empty, the job is done.
    assert sample(metrics, "autoreply_store_up") == 1
    assert sample(metrics, "autoreply_jobs", state="done") == 1
    assert sample(metrics, "autoreply_jobs", state="pending") == 0
    assert sample(metrics, "autoreply_jobs", state="dead") == 0
    assert sample(metrics, "autoreply_oldest_pending_job_age_seconds") == 0
    assert sample(metrics, "autoreply_jobs_waiting") == 0
    assert sample(metrics, "autoreply_webhook_registration", state="registered") == 1
    assert sample(metrics, "autoreply_webhook_registration", state="failing") == 0


def test_skips_are_counted_by_reason(sandbox: Any, deployment: Deployment) -> None:
    """Mail the policy does not answer shows up under its reason."""
    service = deployment.start()
    mail.list_post(sandbox)
    [(state, reason)] = deployment.wait_final(1).values()
    assert state == "skipped"
    metrics = scrape(service.url)
    assert reason is not None
    assert sample(metrics, "autoreply_replies_skipped_total", reason=reason) == 1
    assert sample(metrics, "autoreply_replies_sent_total") == 0
    assert sample(metrics, "autoreply_jobs", state="skipped") == 1


def test_jobs_waiting_out_a_grace_period_are_pending_but_not_due(
    sandbox: Any, deployment: Deployment
) -> None:
    """With a reply delay the job is pending and waiting, and no backlog: not yet due."""
    service = deployment.start(AUTOREPLY_REPLY_DELAY="1h")
    sandbox.admin.inject(from_="Jane <jane@example.com>", to=sandbox.inbox, subject="Hi")
    deployment.wait_until(
        lambda: sample(scrape(service.url), "autoreply_jobs_waiting") == 1,
        what="one job waiting out its delay",
    )
    metrics = scrape(service.url)
    assert sample(metrics, "autoreply_jobs", state="pending") == 1
    assert sample(metrics, "autoreply_oldest_pending_job_age_seconds") == 0


def test_sweep_outcomes_show_from_0_while_the_sweep_runs_and_not_when_it_is_off(
    deployment: Deployment,
) -> None:
    """A sweeping replica exposes every outcome of its passes, those that never happened
    at 0 (so a failure after the first scrape is an increase AutoreplySweepFailing
    sees); a replica whose sweep is off exposes none, so that alert never fires for it."""
    off = deployment.start(AUTOREPLY_SWEEP_INTERVAL="0")
    assert not [key for key in scrape(off.url) if key[0].startswith("autoreply_sweep_runs")]
    off.stop()

    on = deployment.start()
    deployment.wait_until(
        lambda: (
            (sample(scrape(on.url), "autoreply_sweep_runs_total", outcome="completed") or 0) >= 1
        ),
        what="a completed sweep",
    )
    metrics = scrape(on.url)
    assert sample(metrics, "autoreply_sweep_runs_total", outcome="failed") == 0
    assert sample(metrics, "autoreply_sweep_runs_total", outcome="interrupted") == 0


def test_a_scraper_asking_for_openmetrics_gets_it(deployment: Deployment) -> None:
    """Prometheus asks for OpenMetrics first; the answer must be valid OpenMetrics."""
    service = deployment.start()
    response = httpx.get(
        f"{service.url}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
    assert response.text.count("# EOF") == 1
    assert 'autoreply_webhook_registration{state="registered"} 1.0' in response.text


def test_registration_failures_show_until_they_clear(sandbox: Any, deployment: Deployment) -> None:
    """While AgentMail refuses the webhook, the gauge says failing; then registered."""
    sandbox.admin.add_fault("webhooks.create", status=500)
    service = deployment.start(wait_ready=False)
    deployment.wait_until(
        lambda: sample(scrape(service.url), "autoreply_webhook_registration", state="failing") == 1,
        what="registration state failing",
    )
    sandbox.admin.clear_faults()
    deployment.wait_until(
        lambda: (
            sample(scrape(service.url), "autoreply_webhook_registration", state="registered") == 1
        ),
        what="registration state registered",
    )
