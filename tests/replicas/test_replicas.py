"""Three replicas on one PostgreSQL database: still exactly one reply per message.

Real ``autoreply serve`` processes behind a load balancer that sends each delivery to a
random replica; the sandbox's record of what it actually sent is the ground truth.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.replicas.conftest import ReplicaSet, assert_replied_once, inject, replies_to
from tests.support import mail

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_duplicates_spread_across_replicas_reply_once(sandbox: Any, replicas: ReplicaSet) -> None:
    """Copies of a delivery, resends under new svix-ids and second events, all at once.

    The sweep is off: its pass at startup may list a message injected meanwhile and
    enqueue it first, which is right (one reply still) but leaves its deliveries no
    202, and this test counts the 202s to check intake's deduplication."""
    replicas.start(3, AUTOREPLY_SWEEP_INTERVAL="0")
    messages = inject(sandbox, 8, copies=3)
    for message in messages:
        [first, *_] = message["deliveries"]
        sandbox.admin.redeliver(first["delivery_id"], copies=2, new_svix_id=True)
        sandbox.admin.redeliver(first["delivery_id"], copies=2, new_event_id=True)
    message_ids = [m["message_id"] for m in messages]

    deliveries = sandbox.admin.wait_for_deliveries(timeout=60)
    jobs = replicas.wait_final(len(message_ids))
    assert {jobs[m][:2] for m in message_ids} == {("done", "replied")}
    assert_replied_once(sandbox, message_ids)

    assert len(deliveries) == 8 * 7
    assert all(d["state"] == "succeeded" for d in deliveries)
    accepted = accepted_per_message(deliveries)
    assert accepted == dict.fromkeys(message_ids, 1), accepted
    # The balancer really spread them: every replica took deliveries.
    assert len(replicas.balancer.forwarded) == 3
    assert min(replicas.balancer.forwarded.values()) > 0


def accepted_per_message(deliveries: list[Any]) -> dict[str, int]:
    """message_id -> number of attempts answered 202 (a new job) over all its deliveries."""
    counts: dict[str, int] = {}
    for delivery in deliveries:
        accepted = sum(a["status"] == 202 for a in delivery["attempts"])
        counts[delivery["message_id"]] = counts.get(delivery["message_id"], 0) + accepted
    return counts


def test_killed_replica_jobs_are_finished_by_the_others_once(
    sandbox: Any, replicas: ReplicaSet
) -> None:
    """SIGKILL a replica while it holds claimed jobs mid-send: the others finish them
    after the lease ran out, resending under the same Idempotency-Key, and nothing is
    sent twice."""
    sandbox.admin.add_fault("messages.reply", latency_ms=5000)
    processes = replicas.start(3, AUTOREPLY_JOB_LEASE_SECONDS="8")
    message_ids = [m["message_id"] for m in inject(sandbox, 9)]
    replicas.wait_until(
        lambda: sandbox.admin.requests()["in_flight"].get("messages.reply", 0) == 9,
        timeout=30,
        what="every reply in flight",
    )
    owners = dict(
        replicas.query(
            "SELECT lease_owner, count(*) FROM jobs WHERE state = 'running' GROUP BY lease_owner"
        )
    )
    victim = max(processes, key=lambda p: owners.get(replicas.worker_of(p), 0))
    held = [
        row[0]
        for row in replicas.query(
            f"SELECT message_id FROM jobs WHERE lease_owner = '{replicas.worker_of(victim)}'"  # noqa: S608
        )
    ]
    assert held, owners
    replicas.kill(victim)
    sandbox.admin.clear_faults()
    # The sandbox finishes what it accepted: those emails go out, their answers are lost.
    sandbox.admin.wait_for_sent(9, timeout=30)

    jobs = replicas.wait_final(9)
    assert {jobs[m][:2] for m in message_ids} == {("done", "replied")}
    attempts = replicas.attempts()
    assert all(attempts[m] >= 2 for m in held), attempts  # claimed again after the lease
    assert_replied_once(sandbox, message_ids)
    survivors = "".join(p.log() for p in processes if p is not victim)
    assert all(m in survivors for m in held)


def test_cooldown_and_thread_cap_hold_across_replicas(sandbox: Any, replicas: ReplicaSet) -> None:
    """The reply ledger is shared: the replica that answered is gone, the others still
    know the sender was answered and the thread had its reply."""
    processes = replicas.start(3, AUTOREPLY_SENDER_COOLDOWN="1h", AUTOREPLY_THREAD_CAP="1")
    first = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="Hi", text="Hello"
    )
    replicas.wait_final(1)
    [answered_by] = [p for p in processes if '"replied"' in _attempts(p.log(), first)]
    replicas.terminate(answered_by)

    again = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="New topic", text="Me again"
    )
    in_thread = sandbox.admin.inject(
        from_="Bob <bob@example.com>",
        to=sandbox.inbox,
        subject="Re: Hi",
        text="Me too",
        in_reply_to=first["message_id"],
    )
    assert in_thread["thread_id"] == first["thread_id"]
    jobs = replicas.wait_final(3)
    assert jobs[first["message_id"]][:2] == ("done", "replied")
    assert jobs[again["message_id"]][:2] == ("skipped", "sender_cooldown")
    assert jobs[in_thread["message_id"]][:2] == ("skipped", "thread_cap")
    assert len(replies_to(sandbox.admin.sent(), first["message_id"])) == 1
    assert len(sandbox.admin.sent()) == 1


def _attempts(log: str, injected: dict[str, Any]) -> str:
    """The ``job_attempt`` lines of one message in a replica's log."""
    return "\n".join(
        line
        for line in log.splitlines()
        if '"job_attempt"' in line and injected["message_id"] in line
    )


def test_bursts_from_one_sender_and_in_one_thread_reply_once_across_replicas(
    sandbox: Any, replicas: ReplicaSet
) -> None:
    """Five messages from one sender (five threads) and five in one thread (five other
    senders) arrive together and are decided by the workers of three replicas at once:
    one reply per burst, the rest skipped as ``sender_cooldown`` / ``thread_cap``.

    Replies are slowed down, so every message is decided while the first replies are
    still on their way; the reservation in the shared ledger is all that stops them.
    """
    sandbox.admin.add_fault("messages.reply", latency_ms=2000)
    replicas.start(3, AUTOREPLY_SENDER_COOLDOWN="1d", AUTOREPLY_THREAD_CAP="1")
    from_jane = mail.from_one_sender(sandbox)
    in_thread = mail.in_one_thread(sandbox)

    jobs = replicas.wait_final(10)
    assert (
        sorted(jobs[m["message_id"]][:2] for m in from_jane)
        == [("done", "replied")] + [("skipped", "sender_cooldown")] * 4
    )
    assert (
        sorted(jobs[m["message_id"]][:2] for m in in_thread)
        == [("done", "replied")] + [("skipped", "thread_cap")] * 4
    )
    sent = sandbox.admin.sent()
    assert sum(email["to"] == ["jane@example.com"] for email in sent) == 1
    assert len(sent) == 2
    # The decisions really were spread: more than one replica's worker took jobs.
    deciders = {p.log_path.name for p in replicas.processes if '"job_attempt"' in p.log()}
    assert len(deciders) > 1, replicas.logs()
