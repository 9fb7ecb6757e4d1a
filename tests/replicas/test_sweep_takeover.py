"""Three replicas on PostgreSQL share the catch-up sweep: one sweeps at a time, and when
the sweeping replica is SIGKILLed mid-sweep another takes over once its lease ran out.

Deliveries are dropped while mail arrives, so only the sweep can find it; list calls are
slowed down, so a sweep over three pages takes seconds and can be killed in the middle.
The sandbox's record of what it sent is the ground truth: every message is answered
exactly once and relabelled.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from tests.replicas.conftest import ReplicaSet, assert_replied_once, inject
from tests.support.service_process import ServiceProcess

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

#: Three pages of the sweep's 100 (``handlers.sweep.PAGE_SIZE``).
MESSAGES = 250
#: Each list call's latency: a sweep over three pages takes several seconds.
LIST_LATENCY_MS = 1500


@dataclass(frozen=True)
class Hold:
    """One replica's hold of the sweep: from its ``sweep_started`` line to its ``sweep``
    line (Unix seconds); ``end`` is None when the replica died holding it."""

    process: str
    start: float
    end: float | None
    enqueued: int = 0


def holds(process: ServiceProcess) -> list[Hold]:
    """The sweeps of one replica, in order, from its JSON log."""
    found: list[Hold] = []
    start: float | None = None
    for line in process.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # not a log entry, or the one being written now
            continue
        if entry.get("event") == "sweep_started":
            start = _seconds(entry["timestamp"])
        elif entry.get("event") == "sweep" and start is not None:
            end = _seconds(entry["timestamp"])
            found.append(Hold(process.log_path.name, start, end, entry.get("enqueued", 0)))
            start = None
    if start is not None:
        found.append(Hold(process.log_path.name, start, None))
    return found


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def sweep_jobs(replicas: ReplicaSet) -> int:
    """Jobs the sweep created so far (any state)."""
    [(count,)] = replicas.query("SELECT count(*) FROM jobs WHERE source = 'sweep'")
    return int(count)


def lease(replicas: ReplicaSet) -> tuple[str, float] | None:
    """The sweep lease's (owner, lease_until), if a row exists."""
    rows = replicas.query("SELECT owner, lease_until FROM leases WHERE name = 'sweep'")
    return (str(rows[0][0]), float(rows[0][1])) if rows else None


def test_sigkill_of_the_sweeping_replica_loses_and_duplicates_nothing(
    sandbox: Any, replicas: ReplicaSet
) -> None:
    """Mail arrives while the webhook's deliveries are dropped. The replica holding the
    sweep lease is SIGKILLed after the sweep enqueued some of it and before all of it;
    another replica takes the sweep over only after the lease ran out and enqueues the
    rest; every message is answered exactly once, and no two sweeps ever overlapped."""
    processes = replicas.start(
        3, AUTOREPLY_SWEEP_INTERVAL="10s", AUTOREPLY_SWEEP_LEASE_SECONDS="10"
    )
    # The first look set the inbox's mark: mail from here on is the sweep's to find.
    replicas.wait_until(
        lambda: bool(replicas.query("SELECT 1 FROM sweep_marks")), what="the first sweep"
    )
    (webhook,) = sandbox.admin.webhooks()
    sandbox.admin.drop_deliveries(webhook["webhook_id"])
    sandbox.admin.add_fault("messages.list", latency_ms=LIST_LATENCY_MS)
    message_ids = [m["message_id"] for m in inject(sandbox, MESSAGES)]

    # Mid-sweep: a sweeper holds the lease, has enqueued some of the mail but not all,
    # and waits for a (slow) page: it cannot finish before the kill below.
    def mid_sweep() -> bool:
        listing = sandbox.admin.requests()["in_flight"].get("messages.list", 0) == 1
        return listing and lease(replicas) is not None and 0 < sweep_jobs(replicas) < MESSAGES

    replicas.wait_until(mid_sweep, timeout=90, what="a sweep half done")
    held = lease(replicas)
    assert held is not None
    by_owner = {replicas.worker_of(p): p for p in processes}
    victim = by_owner[held[0]]
    replicas.kill(victim)
    # The dead replica still held the lease: nobody released or took it in between.
    after_kill = lease(replicas)
    assert after_kill is not None
    assert after_kill[0] == held[0], (held, after_kill)
    lease_until = after_kill[1]
    enqueued_before = sweep_jobs(replicas)
    assert enqueued_before < MESSAGES

    jobs = replicas.wait_final(MESSAGES, timeout=120)
    assert {jobs[m][:2] for m in message_ids} == {("done", "replied")}
    assert set(jobs) == set(message_ids)
    sources = {row[0] for row in replicas.query("SELECT DISTINCT source FROM jobs")}
    assert sources == {"sweep"}  # no delivery arrived: the sweep found every message
    assert_replied_once(sandbox, message_ids)
    for message_id in message_ids:
        labels = sandbox.app_state.messages[(sandbox.inbox, message_id)].labels
        assert "replied" in labels
        assert "unreplied" not in labels

    # A survivor took over after the lease ran out and enqueued the rest.
    survivors = [hold for p in processes if p is not victim for hold in holds(p)]
    takeovers = [h for h in survivors if h.start >= lease_until]
    assert any(h.enqueued > 0 for h in takeovers), replicas.logs()
    # One sweep at a time: the holds of all replicas never overlap, the victim's last
    # one lasting until its lease ran out.
    victims = [h if h.end else Hold(h.process, h.start, lease_until) for h in holds(victim)]
    assert victims
    assert victims[-1].end == lease_until  # it died holding the sweep
    everyone = sorted([*survivors, *victims], key=lambda h: h.start)
    for earlier, later in itertools.pairwise(everyone):
        assert earlier.end is not None
        assert earlier.end <= later.start, (earlier, later)
