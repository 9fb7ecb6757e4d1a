"""Draft mode across three replicas on one PostgreSQL database, behind a load balancer."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.replicas.conftest import ReplicaSet, inject


def test_three_replicas_create_one_draft_per_message_and_relabel_once(
    sandbox: Any, replicas: ReplicaSet
) -> None:
    """Copies and resends of every delivery land on all three replicas at once: each
    message gets exactly one draft. Sending them all from the console, each message.sent
    event (on whichever replica) relabels its original exactly once."""
    replicas.start(3, AUTOREPLY_MODE="draft", AUTOREPLY_DRAFT_CHECK_INTERVAL="1h")
    messages = inject(sandbox, 8, copies=3)
    for message in messages:
        [first, *_] = message["deliveries"]
        sandbox.admin.redeliver(first["delivery_id"], copies=2, new_svix_id=True)
    message_ids = [m["message_id"] for m in messages]
    replicas.wait_states(message_ids, "drafted", timeout=90)

    drafts = sandbox.admin.drafts()
    assert Counter(d["in_reply_to"] for d in drafts) == dict.fromkeys(message_ids, 1)
    recorded = dict(replicas.query("SELECT message_id, draft_id FROM jobs"))
    assert {d["in_reply_to"]: d["draft_id"] for d in drafts} == recorded
    assert sandbox.admin.sent() == []

    for draft in drafts:
        sandbox.admin.send_draft(draft["draft_id"])
    replicas.wait_states(message_ids, "done", timeout=90)
    relabels = Counter(
        c["message_id"] for c in sandbox.admin.label_changes() if c["added"] == ["replied"]
    )
    assert relabels == dict.fromkeys(message_ids, 1)
    assert len(sandbox.admin.sent()) == 8
    assert len(replicas.balancer.forwarded) == 3
