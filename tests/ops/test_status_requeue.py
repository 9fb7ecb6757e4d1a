"""``autoreply status`` and ``autoreply requeue`` over the real command line, beside a
real service process, on its real SQLite file, against the sandbox."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx

from handlers.retry import SEND_WINDOW
from tests.ops.conftest import Cli, sample, scrape, status_json
from tests.support.deployment import Deployment, replies_to


def dead_letter(sandbox: Any, deployment: Deployment, subject: str) -> str:
    """Inject an email whose reply AgentMail refuses for good (422): its job goes dead."""
    sandbox.admin.add_fault("messages.reply", status=422, times=1)
    result = sandbox.admin.inject(
        from_=f"Jane <jane+{subject.lower()}@example.com>", to=sandbox.inbox, subject=subject
    )
    message_id: str = result["message_id"]
    deployment.wait_until(
        lambda: deployment.jobs().get(message_id, ("", None))[0] == "dead",
        what=f"{message_id} dead",
    )
    return message_id


def test_status_reports_an_empty_queue_and_a_matching_webhook(
    deployment: Deployment, cli: Cli
) -> None:
    deployment.start()
    result = cli("status")
    assert result.returncode == 0, result.stderr
    assert (
        "pending 0   running 0   drafted 0   done 0   skipped 0   dead 0   discarded 0"
        in result.stdout
    )
    assert "Dead letters: none" in result.stdout
    assert "Drafts: none awaiting review, none discarded" in result.stdout
    assert f"configured: {deployment.env()['AUTOREPLY_PUBLIC_URL']}/webhooks/agentmail" in (
        result.stdout
    )
    assert "ok: registered and matching" in result.stdout


def test_status_names_webhook_drift_and_never_prints_secrets(
    sandbox: Any, deployment: Deployment, cli: Cli
) -> None:
    """A webhook disabled behind the service's back is reported; no secret is printed."""
    deployment.start()
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}
    [webhook] = httpx.get(f"{sandbox.url}/v0/webhooks", headers=headers).json()["webhooks"]
    httpx.patch(
        f"{sandbox.url}/v0/webhooks/{webhook['webhook_id']}",
        headers=headers,
        json={"enabled": False},
    ).raise_for_status()

    report = status_json(cli)
    assert report["webhook"]["check"] == "drift"
    assert "disabled" in report["webhook"]["detail"]
    assert report["webhook"]["found"]["webhook_id"] == webhook["webhook_id"]
    for output in (cli("status").stdout, cli("status", "--json").stdout):
        assert webhook["secret"] not in output
        assert sandbox.api_key not in output


def test_status_before_the_service_ever_ran(deployment: Deployment, cli: Cli) -> None:
    """A migrated database and no webhook yet: missing; --no-api does not ask AgentMail."""
    assert cli("migrate").returncode == 0
    report = status_json(cli)
    assert report["queue"]["pending"] == 0
    assert report["webhook"]["check"] == "missing"
    assert status_json(cli, "--no-api")["webhook"]["check"] == "unchecked"


def test_status_flags_a_webhook_under_another_client_id(deployment: Deployment, cli: Cli) -> None:
    """Our URL registered under another client_id: the service would add a second one."""
    deployment.start()
    report = status_json(cli, AUTOREPLY_WEBHOOK_CLIENT_ID="someone-else")
    assert report["webhook"]["check"] == "drift"
    assert "client_id is autoreply, not someone-else" in report["webhook"]["detail"]


def test_status_refuses_a_database_that_is_not_there(deployment: Deployment, cli: Cli) -> None:
    """A mistyped path is an error, not an empty queue (and no file is created)."""
    missing = deployment.folder / "typo.db"
    result = cli("status", AUTOREPLY_DATABASE_URL=f"sqlite:///{missing}")
    assert result.returncode == 1
    assert "no SQLite database" in result.stderr
    assert not missing.exists()


def test_dead_letter_shows_in_status_and_metrics_then_requeue_replies_once(
    sandbox: Any, deployment: Deployment, cli: Cli
) -> None:
    service = deployment.start()
    message_id = dead_letter(sandbox, deployment, "Refused")

    report = status_json(cli)
    assert report["queue"]["dead"] == 1
    [dead] = report["dead_letters"]
    assert dead["message_id"] == message_id
    assert "422" in dead["reason"]
    assert dead["requeueable"] is True
    text = cli("status").stdout
    assert "Dead letters: 1" in text
    assert message_id in text
    assert "not requeueable" not in text

    metrics = scrape(service.url)
    assert sample(metrics, "autoreply_jobs", state="dead") == 1
    assert sample(metrics, "autoreply_replies_dead_lettered_total") == 1
    assert sample(metrics, "autoreply_replies_failed_total", kind="permanent") == 1
    assert replies_to(sandbox.admin.sent(), message_id) == []

    result = cli("requeue", message_id)
    assert result.returncode == 0, result.stderr
    assert "requeued 1 job(s)" in result.stdout
    deployment.wait_until(
        lambda: deployment.jobs()[message_id][0] == "done", what=f"{message_id} replied"
    )
    assert len(replies_to(sandbox.admin.sent(), message_id)) == 1
    assert status_json(cli)["queue"]["dead"] == 0
    assert sample(scrape(service.url), "autoreply_replies_sent_total") == 1

    again = cli("requeue", message_id)
    assert again.returncode == 1
    assert "no dead job" in again.stderr


def test_requeue_leaves_jobs_whose_key_may_have_expired(
    sandbox: Any, deployment: Deployment, cli: Cli
) -> None:
    """A dead job first sent longer ago than the key window stays dead, and says so."""
    deployment.start()
    fresh = dead_letter(sandbox, deployment, "Fresh")
    stale = dead_letter(sandbox, deployment, "Stale")
    with sqlite3.connect(deployment.db) as conn:
        conn.execute(
            "UPDATE jobs SET first_send_at = first_send_at - ? WHERE message_id = ?",
            (SEND_WINDOW + 3600, stale),
        )

    report = status_json(cli)
    requeueable = {job["message_id"]: job["requeueable"] for job in report["dead_letters"]}
    assert requeueable == {fresh: True, stale: False}
    assert "not requeueable" in cli("status").stdout

    result = cli("requeue", "--dead")
    assert result.returncode == 1
    assert "requeued 1 job(s)" in result.stdout
    assert f"left dead: {stale}" in result.stderr
    assert "Idempotency-Key" in result.stderr
    deployment.wait_until(lambda: deployment.jobs()[fresh][0] == "done", what="fresh replied")
    assert deployment.jobs()[stale][0] == "dead"
    assert len(replies_to(sandbox.admin.sent(), fresh)) == 1
    assert replies_to(sandbox.admin.sent(), stale) == []

    only_stale = cli("requeue", stale)
    assert only_stale.returncode == 1
    assert f"left dead: {stale}" in only_stale.stderr
    assert "requeued" not in only_stale.stdout
