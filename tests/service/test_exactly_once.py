"""Exactly one reply per inbound message, whatever the deliveries and the API do.

Real ``autoreply serve`` processes on a real SQLite file, the sandbox over HTTP, the
sandbox's own record of what was actually sent as the ground truth.
"""

from __future__ import annotations

from typing import Any

from tests.support.deployment import Deployment, replies_to


def inject(sandbox: Any, n: int, **fields: Any) -> list[str]:
    """Inject ``n`` distinct inbound emails from distinct senders; return message ids."""
    ids = []
    for i in range(n):
        result = sandbox.admin.inject(
            from_=f"Sender {i} <sender{i}@example.com>",
            to=sandbox.inbox,
            subject=f"Question {i}",
            text=f"Hello, question number {i}.",
            **fields,
        )
        ids.append(result["message_id"])
    return ids


def assert_replied_once(sandbox: Any, message_ids: list[str]) -> None:
    """Each message got exactly one sent reply and ends labelled replied, not unreplied."""
    sent = sandbox.admin.sent()
    for message_id in message_ids:
        assert len(replies_to(sent, message_id)) == 1, message_id
    final: dict[str, list[str]] = {}
    for change in sandbox.admin.label_changes():
        final[change["message_id"]] = change["labels_after"]
    for message_id in message_ids:
        assert "replied" in final[message_id]
        assert "unreplied" not in final[message_id]


def test_reply_goes_to_the_sender_with_auto_reply_headers(
    sandbox: Any, deployment: Deployment
) -> None:
    """The reply answers the sender only, marked as an automatic reply, then relabels once."""
    deployment.start()
    [message_id] = inject(sandbox, 1, cc=["someone@example.net"], reply_to=["list@example.org"])
    deployment.wait_final(1)
    [reply] = replies_to(sandbox.admin.sent(), message_id)
    assert reply["to"] == ["sender0@example.com"]
    assert not reply["cc"]
    headers = {k.lower(): v for k, v in reply["headers"].items()}
    assert headers["auto-submitted"] == "auto-replied"
    assert headers["x-auto-response-suppress"] == "All"
    assert reply["idempotency_key"].startswith("autoreply-")
    changes = [c for c in sandbox.admin.label_changes() if c["message_id"] == message_id]
    assert [(c["added"], c["removed"]) for c in changes] == [
        (["unreplied"], []),
        (["replied"], ["unreplied"]),
    ]
    assert deployment.jobs()[message_id] == ("done", "replied")


def test_duplicate_storm_same_svix_id(sandbox: Any, deployment: Deployment) -> None:
    """The same delivery five times at once: one reply."""
    deployment.start()
    [message_id] = inject(sandbox, 1, copies=5)
    deployment.wait_final(1)
    sandbox.admin.wait_for_deliveries(timeout=30)
    assert_replied_once(sandbox, [message_id])
    statuses = sorted(
        attempt["status"]
        for delivery in sandbox.admin.deliveries()
        for attempt in delivery["attempts"]
    )
    assert statuses.count(202) == 1
    assert set(statuses) <= {200, 202}


def test_same_event_under_new_svix_ids_and_second_event(
    sandbox: Any, deployment: Deployment
) -> None:
    """Resends with new svix-ids and a second event for the same message: still one reply."""
    deployment.start()
    result = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="Hi", text="Hello"
    )
    delivery_id = result["deliveries"][0]["delivery_id"]
    sandbox.admin.redeliver(delivery_id, copies=3, new_svix_id=True)
    sandbox.admin.redeliver(delivery_id, copies=2, new_event_id=True)
    sandbox.admin.wait_for_deliveries(timeout=30)
    deployment.wait_final(1)
    assert_replied_once(sandbox, [result["message_id"]])


def test_killed_mid_send_replies_exactly_once_after_restart(
    sandbox: Any, deployment: Deployment
) -> None:
    """SIGKILL while replies are in flight; restart on the same database; redeliver."""
    sandbox.admin.add_fault("messages.reply", latency_ms=2000)
    service = deployment.start(AUTOREPLY_JOB_LEASE_SECONDS="5")
    message_ids = inject(sandbox, 6)
    deployment.wait_until(
        lambda: sandbox.admin.requests()["in_flight"].get("messages.reply", 0) == 6,
        timeout=30,
        what="every reply in flight",
    )
    service.kill()
    # The sandbox finishes what it accepted: each email is sent, its answer lost.
    sandbox.admin.wait_for_sent(6, timeout=30)
    deployment.start(AUTOREPLY_JOB_LEASE_SECONDS="5")
    for delivery in sandbox.admin.deliveries():
        sandbox.admin.redeliver(delivery["delivery_id"])
    jobs = deployment.wait_final(6, timeout=90)
    assert {jobs[m] for m in message_ids} == {("done", "replied")}
    sandbox.admin.clear_faults()
    assert_replied_once(sandbox, message_ids)


def test_api_faults_still_reply_once_and_relabel(sandbox: Any, deployment: Deployment) -> None:
    """500s, a 429 with Retry-After, a timeout and a 500 after sending: one reply each."""
    admin = sandbox.admin
    admin.add_fault("messages.reply", status=500, times=2)
    admin.add_fault("messages.reply", status=429, retry_after=1, times=1)
    admin.add_fault("messages.reply", after_send=True, status=500, times=2)
    admin.add_fault("messages.reply", latency_ms=3000, times=1)
    admin.add_fault("messages.update", status=503, times=2)
    deployment.start(AUTOREPLY_API_TIMEOUT_SECONDS="1")
    message_ids = inject(sandbox, 5)
    jobs = deployment.wait_final(5, timeout=120)
    assert {jobs[m] for m in message_ids} == {("done", "replied")}
    fired = {f["fault_id"]: f for f in admin.faults()}
    assert all(f["fired"] >= 1 for f in fired.values()), fired
    assert_replied_once(sandbox, message_ids)


def test_sigterm_drains_and_nothing_is_lost(sandbox: Any, deployment: Deployment) -> None:
    """A graceful stop finishes or hands back in-flight work; a restart completes the rest."""
    sandbox.admin.add_fault("messages.reply", latency_ms=500)
    service = deployment.start(AUTOREPLY_SHUTDOWN_GRACE_SECONDS="5")
    message_ids = inject(sandbox, 8)
    sandbox.admin.wait_for_deliveries(timeout=30)
    deployment.wait_until(
        lambda: sandbox.admin.requests()["in_flight"].get("messages.reply", 0) >= 1,
        timeout=30,
        what="a reply in flight",
    )
    service.terminate(timeout=30)
    assert "worker_stopped" in service.log()
    deployment.start()
    jobs = deployment.wait_final(8, timeout=90)
    assert {jobs[m] for m in message_ids} == {("done", "replied")}
    assert_replied_once(sandbox, message_ids)


def test_policy_skips_are_recorded_and_change_no_label(
    sandbox: Any, deployment: Deployment
) -> None:
    """An auto-submitted message is skipped with its reason: no reply, no label."""
    deployment.start()
    result = sandbox.admin.inject(
        from_="Robot <robot@example.com>",
        to=sandbox.inbox,
        subject="Out of office",
        text="I am away",
        headers={"Auto-Submitted": "auto-replied"},
    )
    jobs = deployment.wait_final(1)
    assert jobs[result["message_id"]] == ("skipped", "auto_submitted")
    assert sandbox.admin.sent() == []
    assert sandbox.admin.label_changes() == []


def test_dry_run_sends_nothing_and_changes_no_label(sandbox: Any, deployment: Deployment) -> None:
    """AUTOREPLY_DRY_RUN decides and renders but leaves AgentMail untouched."""
    service = deployment.start(AUTOREPLY_DRY_RUN="true")
    [message_id] = inject(sandbox, 1)
    jobs = deployment.wait_final(1)
    assert jobs[message_id] == ("skipped", "dry_run")
    assert sandbox.admin.sent() == []
    assert sandbox.admin.label_changes() == []
    assert "Question 0" in service.log() or "dry_run" in service.log()


def test_body_over_payload_cap_is_fetched_before_deciding(
    sandbox: Any, deployment: Deployment
) -> None:
    """AgentMail omits text/html above 1 MB; the service fetches the message and replies."""
    deployment.start()
    result = sandbox.admin.inject(
        from_="Big <big@example.com>", to=sandbox.inbox, subject="Huge", text="x" * 1_100_000
    )
    jobs = deployment.wait_final(1)
    assert jobs[result["message_id"]] == ("done", "replied")
    assert sandbox.admin.requests()["operations"]["messages.get"]
    assert_replied_once(sandbox, [result["message_id"]])
