"""The catch-up sweep end to end: ``autoreply serve`` processes and ``autoreply sweep``
against the sandbox over HTTP, on SQLite. Each test ends with every message in scope
answered exactly once (the sandbox's sent record) and relabelled."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tests.conftest import SandboxFactory, SandboxHandle
from tests.support.deployment import Deployment, replies_to
from tests.support.service_process import ServiceProcess


def inject(sandbox: SandboxHandle, count: int, tag: str) -> list[str]:
    return [
        sandbox.admin.inject(
            inbox_id=sandbox.inbox,
            from_=f"{tag}{i}@example.com",
            to=sandbox.inbox,
            subject=f"{tag} {i}",
            text="Hello",
        )["message_id"]
        for i in range(count)
    ]


def metric(process: ServiceProcess, line_start: str) -> float | None:
    """The value of the first sample whose line starts with ``line_start``."""
    for line in httpx.get(f"{process.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return None


def wait_for_sweep(deployment: Deployment, process: ServiceProcess) -> None:
    """Until the process completed a sweep pass."""
    deployment.wait_until(
        lambda: (metric(process, 'autoreply_sweep_runs_total{outcome="completed"}') or 0) >= 1,
        what="a completed sweep",
    )


def answered_once(deployment: Deployment, sandbox: SandboxHandle, ids: list[str]) -> None:
    """Every message has exactly one reply and carries the replied label."""
    sent = sandbox.admin.sent()
    for message_id in ids:
        assert len(replies_to(sent, message_id)) == 1, (message_id, deployment.logs())
        labels = sandbox.app_state.messages[(sandbox.inbox, message_id)].labels
        assert "replied" in labels
        assert "unreplied" not in labels


def restart(deployment: Deployment) -> ServiceProcess:
    for process in deployment.processes:
        process.stop()
    return deployment.start()


def test_a_healthy_deployment_sweeps_and_enqueues_nothing(
    sandbox: SandboxHandle, deployment: Deployment
) -> None:
    """Webhooks deliver everything: the sweep at the next start lists the messages and
    finds each with its job, so it enqueues 0 and its metric says so."""
    # The first start's first look sets the mark; mail injected before it ends would
    # lie behind the mark and not be listed again.
    wait_for_sweep(deployment, deployment.start())
    ids = inject(sandbox, 3, "healthy")
    deployment.wait_final(3)

    process = restart(deployment)
    wait_for_sweep(deployment, process)

    assert metric(process, "autoreply_sweep_jobs_enqueued_total") == 0
    assert metric(process, "autoreply_sweep_messages_scanned_total") == 3
    assert (
        metric(
            process,
            f'autoreply_sweep_last_success_timestamp_seconds{{inbox_id="{sandbox.inbox}"}}',
        )
        or 0
    ) > 0
    assert {row[0] for row in deployment.query("SELECT source FROM jobs")} == {"webhook"}
    answered_once(deployment, sandbox, ids)


def test_mail_that_arrived_while_the_webhook_was_disabled_then_deleted_is_answered_once(
    sandbox: SandboxHandle, deployment: Deployment
) -> None:
    """The webhook is disabled, then deleted, at AgentMail while mail arrives: at the
    next start registration re-creates it and the sweep answers what arrived meanwhile;
    mail delivered before and after is answered by its webhook; each exactly once."""
    deployment.start()
    before = inject(sandbox, 2, "before")
    deployment.wait_final(2)
    (webhook,) = sandbox.admin.webhooks()
    sandbox.admin.disable_webhook(webhook["webhook_id"])
    missed = inject(sandbox, 2, "disabled")
    sandbox.admin.delete_webhook(webhook["webhook_id"])
    missed += inject(sandbox, 3, "deleted")

    process = restart(deployment)
    wait_for_sweep(deployment, process)
    after = inject(sandbox, 1, "after")
    jobs = deployment.wait_final(8)

    assert all(state == "done" for state, _ in jobs.values()), jobs
    sources = dict(deployment.query("SELECT message_id, source FROM jobs"))
    assert {sources[m] for m in missed} == {"sweep"}
    assert {sources[m] for m in before + after} == {"webhook"}
    assert metric(process, "autoreply_sweep_jobs_enqueued_total") == 5
    answered_once(deployment, sandbox, before + missed + after)


def test_sweep_since_after_a_lost_database(sandbox: SandboxHandle, deployment: Deployment) -> None:
    """The database is lost while AgentMail keeps its labels: ``autoreply sweep --since``
    on the fresh database answers the unanswered and skips what is labelled replied;
    messages older than the max age are skipped too_old."""
    deployment.start()
    answered = inject(sandbox, 2, "answered")
    deployment.wait_final(2)
    (webhook,) = sandbox.admin.webhooks()
    sandbox.admin.drop_deliveries(webhook["webhook_id"])
    unanswered = inject(sandbox, 2, "unanswered")
    sandbox.admin.advance_clock(-4 * 86_400)
    stale = inject(sandbox, 1, "stale")
    sandbox.admin.advance_clock(4 * 86_400)
    sandbox.admin.stop_dropping(webhook["webhook_id"])
    for process in deployment.processes:
        process.stop()
    for suffix in ("", "-wal", "-shm"):
        deployment.db.with_name(deployment.db.name + suffix).unlink(missing_ok=True)

    process = deployment.start()
    wait_for_sweep(deployment, process)
    assert deployment.jobs() == {}  # the first look does not reach into the past

    since = (datetime.now(UTC) - timedelta(days=5)).strftime("%Y-%m-%dT%H:%MZ")
    dry = deployment.run("sweep", "--since", since, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "already handled 2, would enqueue 3" in dry.stdout
    assert deployment.jobs() == {}

    result = deployment.run("sweep", "--since", since)
    assert result.returncode == 0, result.stderr
    assert "scanned 5, already handled 2, enqueued 3, skipped 0" in result.stdout
    jobs = deployment.wait_final(3)

    assert jobs[stale[0]] == ("skipped", "too_old")
    assert {jobs[m][0] for m in unanswered} == {"done"}
    assert set(jobs) == {*unanswered, *stale}
    answered_once(deployment, sandbox, answered + unanswered)
    assert replies_to(sandbox.admin.sent(), stale[0]) == []

    again = deployment.run("sweep", "--since", "5d", "--inbox", sandbox.inbox)
    assert "scanned 5, already handled 4, enqueued 0, skipped 1" in again.stdout


def test_sweep_refuses_an_unreadable_since(deployment: Deployment) -> None:
    """An unreadable ``--since`` or an inbox outside the configured scope: one line, exit 2."""
    result = deployment.run("sweep", "--since", "last tuesday")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("autoreply: invalid --since 'last tuesday'")
    scoped = deployment.run(
        "sweep", "--since", "1d", "--inbox", "other@agentmail.to",
        AUTOREPLY_INBOX_IDS="demo@agentmail.to",
    )  # fmt: skip
    assert scoped.returncode == 2
    assert scoped.stderr == (
        "autoreply: --inbox other@agentmail.to is not in AUTOREPLY_INBOX_IDS\n"
    )


def test_sweep_refuses_a_database_that_is_not_there(deployment: Deployment) -> None:
    """A mistyped path is an error, not jobs enqueued into a new file no service reads."""
    missing = deployment.folder / "typo.db"
    result = deployment.run("sweep", "--since", "1d", AUTOREPLY_DATABASE_URL=f"sqlite:///{missing}")
    assert result.returncode == 1
    assert "no SQLite database" in result.stderr
    assert not missing.exists()


def test_status_shows_the_sweep_marks(sandbox: SandboxHandle, deployment: Deployment) -> None:
    """``autoreply status`` names the interval and each inbox's mark."""
    process = deployment.start()
    wait_for_sweep(deployment, process)

    result = deployment.run("status", "--no-api")
    assert result.returncode == 0, result.stderr
    assert "Catch-up sweep: every 10m 0s" in result.stdout
    assert f"  {sandbox.inbox}: swept up to " in result.stdout
    assert "last full sweep " in result.stdout
    assert "0 scanned, 0 already handled, 0 enqueued, 0 skipped" in result.stdout
    report = json.loads(deployment.run("status", "--no-api", "--json").stdout)
    assert report["sweep"]["interval_seconds"] == 600
    assert set(report["sweep"]["marks"]) == {sandbox.inbox}
    last = report["sweep"]["last_sweeps"][sandbox.inbox]
    assert last["findings"] == {"scanned": 0, "already_handled": 0, "enqueued": 0, "skipped": 0}


def test_an_outage_longer_than_svix_retries(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """The service is down past Svix's last retry (its ~29 h schedule at a 1:50,000 time
    scale: about 2 s): after the restart the sweep answers the mail of the outage;
    nothing from before is answered again."""
    sandbox = sandbox_factory(time_scale=0.00002)
    deployment = Deployment(sandbox, tmp_path)
    try:
        deployment.start()
        before = inject(sandbox, 2, "before")
        deployment.wait_final(2)
        for process in deployment.processes:
            process.stop()
        during = inject(sandbox, 3, "during")

        def given_up() -> bool:
            states = [d["state"] for d in sandbox.admin.deliveries() if d["message_id"] in during]
            return states == ["failed"] * 3

        deployment.wait_until(given_up, what="Svix giving up on the outage's deliveries")

        process = deployment.start()
        wait_for_sweep(deployment, process)
        jobs = deployment.wait_final(5)

        assert {jobs[m][0] for m in before + during} == {"done"}
        sources = dict(deployment.query("SELECT message_id, source FROM jobs"))
        assert {sources[m] for m in during} == {"sweep"}
        answered_once(deployment, sandbox, before + during)
    finally:
        deployment.stop()
