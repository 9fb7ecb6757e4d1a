"""The grace period end to end: real ``autoreply serve`` processes, the sandbox over HTTP,
SQLite and PostgreSQL. The sandbox's own records (what was sent, which labels changed,
which API calls were made) are the ground truth.

Delays are a few seconds. No assertion depends on timing: a person "answers during the
delay" by answering right after the message arrives, seconds before its delay ends, and
whenever the service gets to the job after that, it reads the thread and finds the answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SandboxHandle
from tests.support.deployment import STORES, Deployment, deployment_on, replies_to


@pytest.fixture(name="grace", params=STORES)
def _grace(
    request: pytest.FixtureRequest, sandbox: SandboxHandle, tmp_path: Path
) -> Iterator[Deployment]:
    """A deployment on a fresh SQLite file or a fresh PostgreSQL schema."""
    with deployment_on(request.param, sandbox, tmp_path, prefix="grace") as deployment:
        yield deployment


def inject(sandbox: SandboxHandle, count: int, tag: str = "q") -> list[str]:
    """``count`` messages from distinct senders, each in a thread of its own."""
    return [
        sandbox.admin.inject(
            from_=f"Customer {tag}{i} <{tag}{i}@example.com>",
            to=sandbox.inbox,
            subject=f"Question {tag}{i}",
            text="Hello?",
        )["message_id"]
        for i in range(count)
    ]


def auto_replies(sandbox: SandboxHandle, message_id: str) -> list[Any]:
    """The service's replies to ``message_id`` (a person's carry no Idempotency-Key)."""
    return [
        email
        for email in replies_to(sandbox.admin.sent(), message_id)
        if (email["idempotency_key"] or "").startswith("autoreply-")
    ]


def labels_changed(sandbox: SandboxHandle, message_id: str) -> list[Any]:
    return [c for c in sandbox.admin.label_changes() if c["message_id"] == message_id]


def thread_reads(sandbox: SandboxHandle) -> int:
    """How many ``threads.get`` calls the sandbox answered."""
    return sum(sandbox.admin.requests()["operations"].get("threads.get", {}).values())


def waiting(deployment: Deployment, message_ids: list[str]) -> bool:
    """Whether every one of these jobs waits out its grace period in the database."""
    jobs = deployment.query("SELECT message_id, state, reason FROM jobs")
    found = {row[0]: (row[1], row[2]) for row in jobs}
    return all(found.get(m) == ("pending", "grace_period") for m in message_ids)


def test_a_person_answering_during_the_delay_means_no_auto_reply(
    sandbox: SandboxHandle, grace: Deployment
) -> None:
    """The person's answer is the answer: skipped answered_in_thread, never labelled."""
    grace.start(AUTOREPLY_REPLY_DELAY="5s")
    [answered, ignored] = inject(sandbox, 2)
    person = sandbox.admin.reply(message_id=answered, text="Hi, Sam here. On it.")

    jobs = grace.wait_final(2)

    assert jobs[answered] == ("skipped", "answered_in_thread")
    assert auto_replies(sandbox, answered) == []
    assert labels_changed(sandbox, answered) == []
    assert [e["message_id"] for e in replies_to(sandbox.admin.sent(), answered)] == [
        person["message_id"]
    ]
    assert jobs[ignored] == ("done", "replied")
    assert len(auto_replies(sandbox, ignored)) == 1
    assert '"answered_in_thread"' in grace.logs()


def test_nobody_answering_gets_exactly_one_reply_after_the_delay(
    sandbox: SandboxHandle, grace: Deployment
) -> None:
    """Each message waits, its thread is read once, and it is answered once."""
    grace.start(AUTOREPLY_REPLY_DELAY="3s")
    message_ids = inject(sandbox, 3)

    jobs = grace.wait_final(3)

    for message_id in message_ids:
        assert jobs[message_id] == ("done", "replied")
        assert len(auto_replies(sandbox, message_id)) == 1
        assert [(c["added"], c["removed"]) for c in labels_changed(sandbox, message_id)] == [
            (["unreplied"], []),
            (["replied"], ["unreplied"]),
        ]
    assert thread_reads(sandbox) == 3
    attempts = grace.attempts()
    assert all(attempts[m] == 1 for m in message_ids), attempts


def test_a_restart_and_a_kill_during_the_delay_neither_lose_nor_repeat_the_reply(
    sandbox: SandboxHandle, grace: Deployment
) -> None:
    """The waiting jobs are in the database: SIGKILL, then SIGTERM, during the delay; the
    last process answers each message exactly once."""
    first = grace.start(AUTOREPLY_REPLY_DELAY="10s")
    message_ids = inject(sandbox, 3)
    grace.wait_until(lambda: waiting(grace, message_ids), what="jobs waiting out the delay")
    status = grace.run("status", "--json", "--no-api")
    assert status.returncode == 0, status.stderr
    queue = json.loads(status.stdout)["queue"]
    assert queue["waiting_out_grace_period"] == 3
    assert queue["oldest_unfinished_age_seconds"] == 0, "a delay is not a backlog"
    first.kill()
    second = grace.start(AUTOREPLY_REPLY_DELAY="10s")
    assert waiting(grace, message_ids)
    second.terminate()
    assert "worker_stopped" in second.log()
    grace.start(AUTOREPLY_REPLY_DELAY="10s")

    jobs = grace.wait_final(3)

    for message_id in message_ids:
        assert jobs[message_id] == ("done", "replied")
        assert len(auto_replies(sandbox, message_id)) == 1
    assert len(sandbox.admin.sent()) == 3


def test_a_lost_message_sent_event_does_not_matter(
    sandbox: SandboxHandle, grace: Deployment
) -> None:
    """Every delivery to the webhook is dropped after the message arrived, so the
    person's message.sent never reaches the service: the thread read still finds it."""
    grace.start(AUTOREPLY_REPLY_DELAY="5s")
    [message_id] = inject(sandbox, 1)
    [webhook] = sandbox.admin.webhooks()
    grace.wait_until(lambda: grace.jobs().get(message_id) is not None, what="the message's job")
    sandbox.admin.drop_deliveries(webhook["webhook_id"])
    sandbox.admin.reply(message_id=message_id)

    jobs = grace.wait_final(1)

    assert jobs[message_id] == ("skipped", "answered_in_thread")
    assert auto_replies(sandbox, message_id) == []
    assert "message.sent" in webhook["event_types"]
    [lost] = [d for d in sandbox.admin.deliveries() if d["event_type"] == "message.sent"]
    assert lost["state"] == "dropped"


def test_a_persons_answer_ends_a_long_delay_early(
    sandbox: SandboxHandle, grace: Deployment
) -> None:
    """With an hour's delay, the person's answer (its message.sent) wakes the job, which
    reads the thread and ends at once; the other message keeps waiting."""
    grace.start(AUTOREPLY_REPLY_DELAY="1h")
    [answered, waits] = inject(sandbox, 2)
    grace.wait_until(lambda: waiting(grace, [answered, waits]), what="both jobs waiting")
    sandbox.admin.reply(message_id=answered)

    grace.wait_until(
        lambda: grace.jobs()[answered] == ("skipped", "answered_in_thread"),
        what="the answered message's job to end early",
    )

    assert waiting(grace, [waits])
    assert auto_replies(sandbox, answered) == []
    assert labels_changed(sandbox, answered) == []
    [sent_event] = [d for d in sandbox.admin.deliveries() if d["event_type"] == "message.sent"]
    assert sent_event["attempts"][-1]["status"] == 202


def test_rules_choose_the_delay_per_message(
    sandbox: SandboxHandle, deployment: Deployment, tmp_path: Path
) -> None:
    """A key account's rule answers at once (no thread read) although a person answers
    too; everyone else waits the global delay and steps aside for the person."""
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "rules.toml").write_text(
        '[[rule]]\nname = "key account"\nsender = "vip.example"\ntemplate = "default"\n'
        'delay = "0"\n'
    )
    deployment.start(AUTOREPLY_REPLY_DELAY="5s", AUTOREPLY_TEMPLATES_DIR=str(folder))
    vip = sandbox.admin.inject(from_="boss@vip.example", to=sandbox.inbox, subject="Now")
    other = sandbox.admin.inject(from_="ann@example.com", to=sandbox.inbox, subject="Later")
    deployment.wait_until(
        lambda: deployment.jobs().get(vip["message_id"]) == ("done", "replied"),
        what="the key account answered at once",
    )
    for message in (vip, other):
        sandbox.admin.reply(message_id=message["message_id"])

    jobs = deployment.wait_final(2)

    assert jobs[other["message_id"]] == ("skipped", "answered_in_thread")
    assert len(auto_replies(sandbox, vip["message_id"])) == 1
    assert auto_replies(sandbox, other["message_id"]) == []
    assert thread_reads(sandbox) == 1


def test_without_a_delay_no_thread_is_read(sandbox: SandboxHandle, deployment: Deployment) -> None:
    """Delay 0, the default: the same calls as ever, and no message.sent subscription."""
    deployment.start()
    message_ids = inject(sandbox, 2)

    jobs = deployment.wait_final(2)

    assert {jobs[m] for m in message_ids} == {("done", "replied")}
    assert thread_reads(sandbox) == 0
    [webhook] = sandbox.admin.webhooks()
    assert "message.sent" not in webhook["event_types"]
