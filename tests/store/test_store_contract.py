"""The store contract: every implementation must behave the same under these tests.

Every test runs against each store, on real databases only: an SQLite file in a
temporary folder, and PostgreSQL in a schema of its own on the test server (dropped
afterwards; skipped with the reason when no PostgreSQL is reachable). One module for
both, so the implementations cannot drift apart.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from handlers.grace import OwnReplies
from handlers.policy import PolicyConfig
from handlers.suppression import TRANSIENT_WINDOW, Cause, FeedbackKind
from service.models import Delivery, Feedback, Job, JobSource, JobState, MessageRef, PreparedReply
from service.store import Recorded, Store, StoreUnavailable, migrations, open_store
from service.store import postgres as pg_store
from service.store.base import GRACE_PERIOD, NOTE_SENT_LIMIT, FeedbackOutcome
from tests.support import postgres
from tests.support.service_process import free_port
from tests.support.waiting import until

T0 = 1_800_000_000.0


def delivery(
    svix_id: str = "msg_1",
    event_id: str = "evt_1",
    message_id: str = "<m1@example.com>",
    *,
    inbox_id: str = "bot@agentmail.to",
    thread_id: str = "thd_1",
    event_type: str = "message.received",
) -> Delivery:
    raw = {
        "inbox_id": inbox_id,
        "thread_id": thread_id,
        "message_id": message_id,
        "from": "Jane <jane@example.com>",
        "to": [inbox_id],
        "labels": ["received", "unread"],
        "text": "hello",
    }
    return Delivery(
        svix_id=svix_id,
        event_id=event_id,
        event_type=event_type,
        message=MessageRef(inbox_id=inbox_id, message_id=message_id, thread_id=thread_id),
        message_json=json.dumps(raw),
    )


def reply(text: str = "thanks") -> PreparedReply:
    return PreparedReply(
        to="jane@example.com",
        text=text,
        html=None,
        headers={"Auto-Submitted": "auto-replied"},
        idempotency_key="autoreply-abc",
        template="default",
        rule=None,
    )


STORES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(name="url", params=STORES)
def _url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    postgres.require_server()
    with postgres.temporary_schema(prefix="contract") as url:
        yield url


@pytest.fixture(name="store")
async def _store(url: str) -> AsyncIterator[Store]:
    store = open_store(url)
    await store.open()
    yield store
    await store.close()


async def test_first_delivery_enqueues_one_job(store: Store) -> None:
    """A new delivery of a new event for a new message creates one pending job."""
    assert await store.record_delivery(delivery(), now=T0) is Recorded.ENQUEUED
    stats = await store.stats(now=T0)
    assert stats.by_state["pending"] == 1
    assert stats.oldest_pending_created_at == T0


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (delivery("msg_1", "evt_1"), Recorded.DUPLICATE_DELIVERY),
        (delivery("msg_2", "evt_1"), Recorded.DUPLICATE_EVENT),
        (delivery("msg_2", "evt_2"), Recorded.DUPLICATE_MESSAGE),
    ],
    ids=["same-svix-id", "same-event-new-svix-id", "new-event-same-message"],
)
async def test_duplicates_never_enqueue_twice(
    store: Store, second: Delivery, expected: Recorded
) -> None:
    """Retries, resends and second events for one message all map to the one job."""
    await store.record_delivery(delivery(), now=T0)
    assert await store.record_delivery(second, now=T0 + 1) is expected
    assert (await store.stats(now=T0)).by_state["pending"] == 1


async def test_concurrent_identical_deliveries_enqueue_once(store: Store) -> None:
    """Twenty copies racing through group commit: one job, the rest duplicates."""
    results = await asyncio.gather(*(store.record_delivery(delivery(), now=T0) for _ in range(20)))
    assert results.count(Recorded.ENQUEUED) == 1
    assert (await store.stats(now=T0)).by_state["pending"] == 1


async def test_many_concurrent_distinct_deliveries_all_recorded(store: Store) -> None:
    """A burst of distinct deliveries all land, each as its own job."""
    results = await asyncio.gather(
        *(
            store.record_delivery(delivery(f"msg_{i}", f"evt_{i}", f"<m{i}@x>"), now=T0)
            for i in range(300)
        )
    )
    assert set(results) == {Recorded.ENQUEUED}
    assert (await store.stats(now=T0)).by_state["pending"] == 300


async def test_recorded_deliveries_survive_reopen(url: str) -> None:
    """What was acknowledged is on disk: a new store on the same database sees it."""
    first = open_store(url)
    await first.open()
    await first.record_delivery(delivery(), now=T0)
    await first.close()
    second = open_store(url)
    await second.open()
    try:
        assert await second.record_delivery(delivery(), now=T0) is Recorded.DUPLICATE_DELIVERY
        job = await second.get_job("bot@agentmail.to", "<m1@example.com>")
        assert job is not None
        assert job.state is JobState.PENDING
    finally:
        await second.close()


async def test_claim_leases_due_jobs_once(store: Store) -> None:
    """A claimed job is not claimed again while its lease runs."""
    await store.record_delivery(delivery(), now=T0)
    [job] = await store.claim(owner="a", now=T0, lease=60, limit=10)
    assert job.state is JobState.RUNNING
    assert job.attempts == 1
    assert await store.claim(owner="b", now=T0 + 59, lease=60, limit=10) == []


async def test_expired_lease_is_claimed_again_and_old_owner_is_fenced(store: Store) -> None:
    """A dead worker's job goes to another; the late first worker can change nothing."""
    await store.record_delivery(delivery(), now=T0)
    [job] = await store.claim(owner="a", now=T0, lease=60, limit=10)
    [again] = await store.claim(owner="b", now=T0 + 61, lease=60, limit=10)
    assert again.id == job.id
    assert again.attempts == 2
    assert not await store.save_reply(job.id, owner="a", reply=reply(), now=T0 + 62)
    assert not await store.finish(
        job.id, owner="a", state=JobState.DONE, reason="replied", now=T0 + 62
    )
    assert await store.finish(job.id, owner="b", state=JobState.DONE, reason="replied", now=T0 + 62)


async def test_claim_limit_counts_expired_leases_and_pending_jobs_together(store: Store) -> None:
    """Jobs of a dead worker come back; the limit bounds them and pending jobs together."""
    for i in range(4):
        await store.record_delivery(delivery(f"s{i}", f"e{i}", f"<m{i}@x>"), now=T0)
    first = await store.claim(owner="a", now=T0, lease=10, limit=2)
    again = await store.claim(owner="b", now=T0 + 11, lease=10, limit=3)
    assert len(again) == 3
    [last] = await store.claim(owner="c", now=T0 + 11, lease=10, limit=3)
    everything = {job.id for job in again} | {last.id}
    assert len(everything) == 4
    assert {job.id for job in first} <= everything


async def test_saved_reply_is_kept_byte_for_byte(store: Store) -> None:
    """The first stored reply wins: a later attempt cannot replace what may have been sent."""
    await store.record_delivery(delivery(), now=T0)
    [job] = await store.claim(owner="a", now=T0, lease=60, limit=1)
    assert await store.save_reply(job.id, owner="a", reply=reply("first"), now=T0)
    assert await store.retry(job.id, owner="a", run_after=T0 + 5, error="boom", now=T0)
    assert await store.claim(owner="a", now=T0 + 4, lease=60, limit=1) == []
    [job] = await store.claim(owner="a", now=T0 + 5, lease=60, limit=1)
    assert job.reply == reply("first")
    assert job.first_send_at == T0
    assert await store.save_reply(job.id, owner="a", reply=reply("second"), now=T0 + 6)
    stored = await store.get_job(job.inbox_id, job.message_id)
    assert stored is not None
    assert stored.reply == reply("first")
    assert stored.first_send_at == T0


async def test_mark_sent_feeds_policy_history(store: Store) -> None:
    """A sent reply counts for the thread cap and the sender cooldown."""
    await store.record_delivery(delivery(), now=T0)
    [job] = await store.claim(owner="a", now=T0, lease=60, limit=1)
    assert await store.mark_sent(
        job.id,
        owner="a",
        sent_message_id="<r@x>",
        thread_id="thd_1",
        sender="Jane@Example.com",
        now=T0 + 1,
    )
    history = await store.history(
        inbox_id="bot@agentmail.to", thread_id="thd_1", sender="jane@example.com"
    )
    assert history.replies_in_thread == 1
    assert history.last_reply_to_sender_at is not None
    assert history.last_reply_to_sender_at.timestamp() == T0 + 1
    other = await store.history(inbox_id="bot@agentmail.to", thread_id="thd_2", sender="x@y")
    assert other.replies_in_thread == 0
    assert other.last_reply_to_sender_at is None
    done = await store.get_job(job.inbox_id, job.message_id)
    assert done is not None
    assert done.sent_message_id == "<r@x>"


async def test_a_deferred_job_waits_until_its_time_without_using_an_attempt(
    store: Store, url: str
) -> None:
    """The grace period: the job goes back to pending until run_after, marked as waiting,
    its claim given back; only its lease holder can defer it; it survives a reopen."""
    await store.record_delivery(delivery(), now=T0)
    [job] = await store.claim(owner="a", now=T0, lease=60, limit=1)
    assert not await store.defer(job.id, owner="b", run_after=T0 + 300, now=T0)
    assert await store.defer(job.id, owner="a", run_after=T0 + 300, now=T0)
    assert not await store.defer(job.id, owner="a", run_after=T0 + 600, now=T0)
    assert await store.claim(owner="a", now=T0 + 299, lease=60, limit=1) == []
    assert await store.next_due() == T0 + 300
    stats = await store.stats(now=T0)
    assert (stats.by_state["pending"], stats.waiting) == (1, 1)
    # A delay is not a backlog: the job falls due at the end of its delay.
    assert stats.oldest_pending_created_at == T0 + 300
    # Asked at a moment, only a delay not yet over is waiting: once it is, the job is
    # due, claimed or not.
    assert (await store.stats(now=T0 + 299)).waiting == 1
    assert (await store.stats(now=T0 + 300)).waiting == 0
    assert (await store.stats(now=T0 + 300)).by_state["pending"] == 1
    await store.close()
    reopened = open_store(url)
    await reopened.open()
    try:
        [again] = await reopened.claim(owner="c", now=T0 + 300, lease=60, limit=1)
        assert (again.id, again.attempts, again.reason) == (job.id, 1, GRACE_PERIOD)
        assert (await reopened.stats(now=T0)).by_state["running"] == 1
        assert (await reopened.stats(now=T0)).oldest_pending_created_at == T0 + 300
        # Retried after its delay, it is an ordinary job again: its age counts from T0.
        assert await reopened.retry(again.id, owner="c", run_after=T0 + 310, error="x", now=T0)
        stats = await reopened.stats(now=T0)
        assert (stats.waiting, stats.oldest_pending_created_at) == (0, T0)
        retried = await reopened.get_job(job.inbox_id, job.message_id)
        assert retried is not None
        assert retried.reason == "x"
    finally:
        await reopened.close()
        await store.open()


async def test_a_sent_event_wakes_the_jobs_of_its_thread_waiting_out_a_grace_period(
    store: Store,
) -> None:
    """Only the waiting jobs of that thread and inbox that are not yet due; a job pending
    for a retry is left to its backoff."""
    for n, thread in ((1, "thd_1"), (2, "thd_1"), (3, "thd_2"), (4, "thd_1")):
        await store.record_delivery(
            delivery(f"s{n}", f"e{n}", f"<m{n}@x>", thread_id=thread), now=T0
        )
    jobs = {job.message_id: job for job in await store.claim(owner="a", now=T0, lease=60, limit=4)}
    for message_id, wait in (("<m1@x>", 300), ("<m2@x>", 100), ("<m3@x>", 300)):
        assert await store.defer(jobs[message_id].id, owner="a", run_after=T0 + wait, now=T0)
    assert await store.retry(jobs["<m4@x>"].id, owner="a", run_after=T0 + 400, error="x", now=T0)

    woke = await store.note_sent(
        inbox_id="bot@agentmail.to", thread_id="thd_1", message_id="<r@x>", now=T0 + 200
    )

    assert woke == 1
    due = await store.claim(owner="c", now=T0 + 200, lease=60, limit=10)
    assert {job.message_id for job in due} == {"<m1@x>", "<m2@x>"}
    assert all(job.reason == GRACE_PERIOD for job in due)
    elsewhere = await store.note_sent(
        inbox_id="other@agentmail.to", thread_id="thd_2", message_id="<r@x>", now=T0 + 200
    )
    assert elsewhere == 0


async def test_one_sent_event_wakes_a_bounded_number_of_jobs(store: Store) -> None:
    """A thread mail-bombed into more jobs than ``NOTE_SENT_LIMIT``, waiting out their
    delay and awaiting review: one ``message.sent`` event hints and wakes at most the
    limit of each kind (the oldest), not every job of the thread."""
    extra = 3
    count = NOTE_SENT_LIMIT + extra
    for n in range(count):
        await store.record_delivery(delivery(f"s{n}", f"e{n}", f"<m{n}@x>"), now=T0)
    jobs = await store.claim(owner="a", now=T0, lease=600, limit=2 * count)
    assert len(jobs) == count
    for n in range(count + 1, 2 * count + 1):
        await store.record_delivery(delivery(f"s{n}", f"e{n}", f"<m{n}@x>"), now=T0)
    waiting = await store.claim(owner="a", now=T0, lease=600, limit=2 * count)
    for job in jobs:
        assert await store.save_reply(job.id, owner="a", reply=reply(), now=T0)
        assert await store.await_draft(
            job.id, owner="a", draft_id=f"drf_{job.id}", seen_hint=None, check_at=T0 + 600, now=T0
        )
    for job in waiting:
        assert await store.defer(job.id, owner="a", run_after=T0 + 300, now=T0)

    woke = await store.note_sent(
        inbox_id="bot@agentmail.to", thread_id="thd_1", message_id="<r@x>", now=T0 + 10
    )

    assert woke == 2 * NOTE_SENT_LIMIT
    due = await store.claim(owner="c", now=T0 + 10, lease=60, limit=4 * count)
    assert len(due) == 2 * NOTE_SENT_LIMIT
    assert sum(job.sent_hint == "<r@x>" for job in due) == NOTE_SENT_LIMIT
    oldest = sorted(job.id for job in jobs)[:NOTE_SENT_LIMIT]
    assert sorted(job.id for job in due if job.draft_id is not None) == oldest


async def test_own_replies_are_the_thread_s_sent_and_stored_replies(store: Store) -> None:
    """Sent replies by id, stored ones not yet confirmed by the message they answer; a
    reservation alone, and other threads' or inboxes' replies, are not listed."""
    for n, thread in ((1, "thd_1"), (2, "thd_1"), (3, "thd_1"), (4, "thd_2")):
        d = delivery(f"s{n}", f"e{n}", f"<m{n}@x>", thread_id=thread)
        await store.record_delivery(d, now=T0)
    jobs = {job.message_id: job for job in await store.claim(owner="a", now=T0, lease=60, limit=4)}
    assert len(jobs) == 4
    policy = PolicyConfig(thread_cap=0, sender_cooldown=timedelta(0))
    for message_id, job in jobs.items():
        thread = "thd_2" if message_id == "<m4@x>" else "thd_1"
        decision = await store.reserve(
            job.id, owner="a", thread_id=thread, sender="jane@example.com", policy=policy, now=T0
        )
        assert decision is not None
        assert decision.reply
        if message_id == "<m3@x>":
            continue  # reserved only: nothing stored, nothing can have been sent
        assert await store.save_reply(job.id, owner="a", reply=reply(), now=T0)
        if message_id == "<m2@x>":
            continue  # stored and perhaps sent: its id is not known yet
        assert await store.mark_sent(
            job.id,
            owner="a",
            sent_message_id=f"<reply-{message_id[1:3]}@x>",
            thread_id=thread,
            sender="jane@example.com",
            now=T0 + 1,
        )
    assert await store.own_replies(inbox_id="bot@agentmail.to", thread_id="thd_1") == OwnReplies(
        sent=frozenset({"<reply-m1@x>"}), sending_to=frozenset({"<m2@x>"})
    )
    assert await store.own_replies(inbox_id="bot@agentmail.to", thread_id="thd_2") == OwnReplies(
        sent=frozenset({"<reply-m4@x>"})
    )
    assert await store.own_replies(inbox_id="x@agentmail.to", thread_id="thd_1") == OwnReplies()


async def test_release_returns_leases_for_immediate_reclaim(store: Store) -> None:
    """Graceful shutdown hands running jobs back without waiting for the lease."""
    for i in range(3):
        await store.record_delivery(delivery(f"s{i}", f"e{i}", f"<m{i}@x>"), now=T0)
    claimed = await store.claim(owner="a", now=T0, lease=600, limit=2)
    assert len(claimed) == 2
    assert await store.release(owner="a", now=T0 + 1) == 2
    again = await store.claim(owner="b", now=T0 + 1, lease=600, limit=10)
    assert len(again) == 3
    assert all(job.attempts == 1 for job in again)


async def test_next_due_reports_earliest_retry(store: Store) -> None:
    """The worker can sleep until the next job falls due."""
    assert await store.next_due() is None
    await store.record_delivery(delivery(), now=T0)
    [job] = await store.claim(owner="a", now=T0, lease=60, limit=1)
    assert await store.next_due() == T0 + 60
    await store.retry(job.id, owner="a", run_after=T0 + 30, error="x", now=T0)
    assert await store.next_due() == T0 + 30


async def test_final_states_are_not_claimed(store: Store) -> None:
    """Done, skipped, dead and discarded jobs stay where they are."""
    finals = (JobState.DONE, JobState.SKIPPED, JobState.DEAD, JobState.DISCARDED)
    for i, state in enumerate(finals):
        await store.record_delivery(delivery(f"s{i}", f"e{i}", f"<m{i}@x>"), now=T0)
        [job] = await store.claim(owner="a", now=T0, lease=1, limit=1)
        assert await store.finish(job.id, owner="a", state=state, reason="r", now=T0)
    assert await store.claim(owner="a", now=T0 + 10_000, lease=1, limit=10) == []
    stats = await store.stats(now=T0)
    assert stats.by_state == {
        "pending": 0,
        "running": 0,
        "drafted": 0,
        "done": 1,
        "skipped": 1,
        "dead": 1,
        "discarded": 1,
    }


async def test_closed_store_is_unavailable(url: str) -> None:
    """Using a store that is not open is a clear StoreUnavailable, not a hang."""
    store = open_store(url)
    with pytest.raises(StoreUnavailable):
        await store.ping()


@pytest.fixture(name="unreachable_url", params=STORES)
def _unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of each kind that cannot be opened."""
    if request.param == "sqlite":
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        return f"sqlite:///{blocker / 'store.db'}"
    return f"postgresql://postgres@127.0.0.1:{free_port()}/test?connect_timeout=5"


async def test_unreachable_database_fails_to_open(unreachable_url: str) -> None:
    """A database that cannot be reached or created is reported when the store opens."""
    store = open_store(unreachable_url)
    with pytest.raises(StoreUnavailable):
        await store.open()


async def _dead_job(store: Store, i: int, *, sent_at: float | None, now: float) -> None:
    await store.record_delivery(delivery(f"s{i}", f"e{i}", f"<m{i}@x>"), now=now)
    [job] = await store.claim(owner="a", now=now, lease=60, limit=1)
    if sent_at is not None:
        await store.save_reply(job.id, owner="a", reply=reply(), now=sent_at)
    await store.finish(job.id, owner="a", state=JobState.DEAD, reason=f"boom {i}", now=now)


async def test_list_jobs_shows_dead_letters_with_reasons(store: Store) -> None:
    """``autoreply status`` can show what died and why."""
    await _dead_job(store, 1, sent_at=None, now=T0)
    await store.record_delivery(delivery("s2", "e2", "<m2@x>"), now=T0)
    [dead] = await store.list_jobs(states=(JobState.DEAD,), limit=10)
    assert dead.message_id == "<m1@x>"
    assert dead.reason == "boom 1"
    pending = await store.list_jobs(states=(JobState.PENDING, JobState.RUNNING), limit=10)
    assert [j.message_id for j in pending] == ["<m2@x>"]


async def test_requeue_moves_dead_jobs_back_keeping_the_reply(store: Store) -> None:
    """A requeued job runs again with its stored reply (same bytes, same key)."""
    await _dead_job(store, 1, sent_at=T0, now=T0)
    await _dead_job(store, 2, sent_at=None, now=T0)
    assert (
        await store.requeue(message_id="<m1@x>", dead=False, now=T0 + 10, not_sent_before=T0) == 1
    )
    assert await store.requeue(message_id=None, dead=True, now=T0 + 10, not_sent_before=T0) == 1
    jobs = await store.claim(owner="b", now=T0 + 10, lease=60, limit=10)
    assert sorted(j.message_id for j in jobs) == ["<m1@x>", "<m2@x>"]
    [first] = [j for j in jobs if j.message_id == "<m1@x>"]
    assert first.reply == reply()
    assert first.first_send_at == T0


async def test_requeue_refuses_jobs_whose_key_may_have_expired(store: Store) -> None:
    """A send attempted before the key window must not be retried: it stays dead."""
    await _dead_job(store, 1, sent_at=T0, now=T0)
    assert await store.requeue(message_id=None, dead=True, now=T0, not_sent_before=T0 + 1) == 0
    assert await store.requeue(message_id="<nope>", dead=False, now=T0, not_sent_before=0) == 0
    assert len(await store.list_jobs(states=(JobState.DEAD,), limit=10)) == 1


# -- several stores on one database (replicas) ----------------------------------------


@pytest.fixture(name="stores")
async def _stores(url: str) -> AsyncIterator[list[Store]]:
    """Three stores opened at once on one database, as three replicas would."""
    stores = [open_store(url) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    yield stores
    await asyncio.gather(*(s.close() for s in stores))


async def test_duplicates_racing_through_several_stores_enqueue_once(stores: list[Store]) -> None:
    """The same delivery, event and message arriving at every replica at once: one job."""
    copies = [
        delivery("msg_1", "evt_1"),  # a Svix retry
        delivery("msg_2", "evt_1"),  # a resend under a new svix-id
        delivery("msg_3", "evt_2"),  # a second event for the message
    ]
    results = await asyncio.gather(
        *(s.record_delivery(d, now=T0) for s in stores for d in copies for _ in range(4))
    )
    assert results.count(Recorded.ENQUEUED) == 1
    assert (await stores[0].stats(now=T0)).by_state["pending"] == 1


async def test_concurrent_claims_through_several_stores_never_share_a_job(
    stores: list[Store],
) -> None:
    """Workers of every replica claiming at once: each job is leased to exactly one."""
    for i in range(60):
        await stores[0].record_delivery(delivery(f"s{i}", f"e{i}", f"<m{i}@x>"), now=T0)

    async def drain(store: Store, owner: str) -> list[int]:
        taken: list[int] = []
        while jobs := await store.claim(owner=owner, now=T0, lease=600, limit=3):
            taken.extend(job.id for job in jobs)
        return taken

    claimed = await asyncio.gather(
        *(drain(s, f"w{n}{k}") for n, s in enumerate(stores) for k in range(3))
    )
    ids = [job_id for taken in claimed for job_id in taken]
    assert len(ids) == 60
    assert len(set(ids)) == 60


async def test_policy_history_is_shared_between_stores(stores: list[Store]) -> None:
    """A reply recorded through one replica counts for the thread cap and cooldown on all."""
    first, second, _ = stores
    await first.record_delivery(delivery(), now=T0)
    [job] = await first.claim(owner="a", now=T0, lease=60, limit=1)
    assert await first.mark_sent(
        job.id, owner="a", sent_message_id="<r@x>", thread_id="thd_1", sender="jane@example.com",
        now=T0 + 1,
    )  # fmt: skip
    history = await second.history(
        inbox_id="bot@agentmail.to", thread_id="thd_1", sender="JANE@example.com"
    )
    assert history.replies_in_thread == 1
    assert history.last_reply_to_sender_at is not None


async def test_enqueue_wakes_the_listeners_of_other_stores(stores: list[Store]) -> None:
    """A store with notifications wakes other replicas on enqueue; SQLite has none.

    Only new jobs notify; ``listen`` also wakes once whenever it (re)starts listening,
    for jobs enqueued while nobody listened.
    """
    listener, writer, _ = stores
    woken = asyncio.Event()
    task = asyncio.create_task(listener.listen(woken.set))
    try:
        await asyncio.wait({task}, timeout=0.5)
        if task.done():  # no notifications: returns at once without waking anyone
            assert task.result() is None
            assert not woken.is_set()
            return
        await asyncio.wait_for(woken.wait(), timeout=30)  # the catch-up wake: listening now
        woken.clear()
        assert await writer.record_delivery(delivery(), now=T0) is Recorded.ENQUEUED
        await asyncio.wait_for(woken.wait(), timeout=30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_stores_opening_at_once_migrate_once(url: str) -> None:
    """Replicas starting together on an empty database: every one opens, each version once."""
    stores = [open_store(url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        assert await stores[0].record_delivery(delivery(), now=T0) is Recorded.ENQUEUED
        assert await stores[3].record_delivery(delivery(), now=T0) is Recorded.DUPLICATE_DELIVERY
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    versions = [(version,) for version, _ in migrations.SQLITE]
    assert sorted(execute(url, "SELECT version FROM schema_migrations")) == versions


async def test_database_newer_than_the_code_is_refused(url: str) -> None:
    """A schema version this code does not know stops the store from opening."""
    store = open_store(url)
    await store.open()
    await store.close()
    execute(url, "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)")
    with pytest.raises(StoreUnavailable, match="999"):
        await open_store(url).open()


# -- retention -------------------------------------------------------------------------


async def test_purge_deletes_old_dedupe_rows_in_batches_and_keeps_jobs(store: Store) -> None:
    """Deliveries and events older than the cutoff go; jobs and the reply ledger stay."""
    for i in range(5):
        await store.record_delivery(delivery(f"old{i}", f"eold{i}", f"<old{i}@x>"), now=T0)
    await store.record_delivery(delivery("new", "enew", "<new@x>"), now=T0 + 100)
    [job] = await store.claim(owner="a", now=T0, lease=60, limit=1)
    await store.mark_sent(
        job.id, owner="a", sent_message_id="<r@x>", thread_id="thd_1", sender="jane@example.com",
        now=T0 + 1,
    )  # fmt: skip

    assert await store.purge(before=T0 + 50, batch=2) == 10  # 5 deliveries + 5 events
    assert await store.purge(before=T0 + 50, batch=2) == 0

    # The recent delivery is still known; a purged one is new again, yet its message
    # keeps its job, so it is still never answered twice.
    assert await store.record_delivery(delivery("new", "enew", "<new@x>"), now=T0 + 200) is (
        Recorded.DUPLICATE_DELIVERY
    )
    assert await store.record_delivery(delivery("old0", "eold0", "<old0@x>"), now=T0 + 200) is (
        Recorded.DUPLICATE_MESSAGE
    )
    assert sum((await store.stats(now=T0)).by_state.values()) == 6
    history = await store.history(
        inbox_id="bot@agentmail.to", thread_id="thd_1", sender="jane@example.com"
    )
    assert history.replies_in_thread == 1


def old_job(url: str, message_id: str) -> int:
    """Insert a finished job of ``delivery()``'s inbox and thread as versions 1 to 3 wrote
    jobs (no source: the code of today cannot write to an old schema); return its id."""
    execute(
        url,
        "INSERT INTO jobs (inbox_id, message_id, thread_id, event_id, event_type,"  # noqa: S608
        " message_json, state, run_after, created_at, updated_at)"
        f" VALUES ('bot@agentmail.to', '{message_id}', 'thd_1', 'evt_1', 'message.received',"
        f" '{{}}', 'done', {T0}, {T0}, {T0})",
    )
    [(job_id,)] = execute(url, f"SELECT id FROM jobs WHERE message_id = '{message_id}'")  # noqa: S608
    assert isinstance(job_id, int)
    return job_id


def execute(url: str, sql: str) -> list[tuple[object, ...]]:
    """Run one statement straight on the database behind ``url``; return its rows."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return list(conn.execute(sql).fetchall())
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql.encode())
        return list(cursor.fetchall()) if cursor.description else []


async def test_mixed_duplicates_racing_in_one_batch(store: Store) -> None:
    """Copies by svix-id, by event and by message, all at once: one job, the rest duplicates."""
    racing = [
        delivery("msg_1", "evt_1"),
        delivery("msg_1", "evt_1"),
        delivery("msg_2", "evt_1"),
        delivery("msg_3", "evt_3"),
        delivery("msg_4", "evt_4", "<other@x>"),
    ]
    results = await asyncio.gather(*(store.record_delivery(d, now=T0) for d in racing))
    # Which copy wins each race may vary; what each race yields may not.
    assert sorted(r.value for r in results) == sorted(
        r.value
        for r in (
            Recorded.ENQUEUED,
            Recorded.ENQUEUED,
            Recorded.DUPLICATE_DELIVERY,
            Recorded.DUPLICATE_EVENT,
            Recorded.DUPLICATE_MESSAGE,
        )
    )
    assert (await store.stats(now=T0)).by_state["pending"] == 2


# -- the reply ledger: reservations ------------------------------------------------------

#: One reply per thread, one per sender a day: the defaults.
LIMITS = PolicyConfig(thread_cap=1, sender_cooldown=timedelta(days=1))
JANE = "jane@example.com"


async def claimed(
    store: Store,
    i: int,
    *,
    thread: str = "thd_1",
    owner: str = "a",
    now: float = T0,
    lease: float = 600,
) -> Job:
    """A new message's job, claimed by ``owner``."""
    await store.record_delivery(delivery(f"s{i}", f"e{i}", f"<m{i}@x>", thread_id=thread), now=now)
    [job] = await store.claim(owner=owner, now=now, lease=lease, limit=1)
    assert job.message_id == f"<m{i}@x>"
    return job


async def reserve(
    store: Store,
    job: Job,
    *,
    sender: str = JANE,
    thread: str = "thd_1",
    owner: str = "a",
    now: float = T0,
    policy: PolicyConfig = LIMITS,
) -> str | None:
    """The reason ``reserve`` gives (``ok`` when it reserved), None for a lost lease."""
    decision = await store.reserve(
        job.id, owner=owner, thread_id=thread, sender=sender, policy=policy, now=now
    )
    if decision is None:
        return None
    assert decision.reply == (decision.reason == "ok")
    return decision.reason


def ledger(url: str) -> list[tuple[object, ...]]:
    """Every ledger row as (job_id, sender, state, sent_at), by job."""
    return execute(url, "SELECT job_id, sender, state, sent_at FROM replies ORDER BY job_id")


async def test_a_reservation_holds_the_senders_place_for_the_cooldown(store: Store) -> None:
    """Once one message of a sender is reserved, the sender's others within the cooldown
    are skipped, in any thread and whatever the address's case; other senders are not."""
    day = 86_400
    first = await claimed(store, 1, thread="t1", lease=2 * day)
    assert await reserve(store, first, thread="t1") == "ok"
    second = await claimed(store, 2, thread="t2", lease=2 * day)
    assert await reserve(store, second, thread="t2", sender="JANE@Example.com") == (
        "sender_cooldown"
    )
    other = await claimed(store, 3, thread="t3", lease=2 * day)
    assert await reserve(store, other, thread="t3", sender="bob@example.com") == "ok"
    later = await claimed(store, 4, thread="t4", now=T0 + day)
    assert await reserve(store, later, thread="t4", now=T0 + day) == "ok"
    history = await store.history(inbox_id="bot@agentmail.to", thread_id="t9", sender=JANE)
    assert history.last_reply_to_sender_at is not None
    assert history.last_reply_to_sender_at.timestamp() == T0 + day


async def test_reservations_fill_the_thread_up_to_its_cap(store: Store) -> None:
    """Reservations count towards the thread cap as sent replies do."""
    policy = PolicyConfig(thread_cap=2, sender_cooldown=timedelta(0))
    results = []
    for i, sender in enumerate(("a@x.org", "b@x.org", "c@x.org")):
        job = await claimed(store, i)
        results.append(await reserve(store, job, sender=sender, policy=policy))
    assert results == ["ok", "ok", "thread_cap"]
    history = await store.history(inbox_id="bot@agentmail.to", thread_id="thd_1", sender="d@x")
    assert history.replies_in_thread == 2


async def test_a_jobs_own_reservation_is_its_own(store: Store, url: str) -> None:
    """A job retried (here by another worker after its lease ran out) finds its own
    reservation: it may go on, the history it decides on leaves it out, and the old
    owner can change nothing."""
    job = await claimed(store, 1)
    assert await reserve(store, job) == "ok"
    [again] = await store.claim(owner="b", now=T0 + 601, lease=600, limit=1)
    assert again.id == job.id
    mine = await store.history(
        inbox_id="bot@agentmail.to", thread_id="thd_1", sender=JANE, exclude_job=job.id
    )
    assert (mine.replies_in_thread, mine.last_reply_to_sender_at) == (0, None)
    everyone = await store.history(inbox_id="bot@agentmail.to", thread_id="thd_1", sender=JANE)
    assert everyone.replies_in_thread == 1
    assert await reserve(store, again, owner="b", now=T0 + 602) == "ok"
    assert await reserve(store, job, owner="a", now=T0 + 602) is None
    assert ledger(url) == [(job.id, JANE, "reserved", T0)]


async def test_a_lost_lease_reserves_nothing(store: Store, url: str) -> None:
    """``reserve`` is fenced by the lease like every other change to a job."""
    job = await claimed(store, 1)
    await store.claim(owner="b", now=T0 + 601, lease=600, limit=1)
    assert await reserve(store, job, owner="a", now=T0 + 602) is None
    assert ledger(url) == []


async def test_mark_sent_confirms_the_reservation(store: Store, url: str) -> None:
    """The sent reply is the reservation's row, confirmed and timed at the send."""
    job = await claimed(store, 1)
    assert await reserve(store, job) == "ok"
    assert await store.mark_sent(
        job.id, owner="a", sent_message_id="<r@x>", thread_id="thd_1", sender=JANE, now=T0 + 5
    )
    assert ledger(url) == [(job.id, JANE, "sent", T0 + 5)]


@pytest.mark.parametrize("state", [JobState.DEAD, JobState.SKIPPED])
async def test_a_job_ending_before_its_reply_was_stored_releases_its_place(
    store: Store, url: str, state: JobState
) -> None:
    """Nothing was sent and nothing can be: the sender's next message may be answered."""
    job = await claimed(store, 1)
    assert await reserve(store, job) == "ok"
    assert await store.finish(job.id, owner="a", state=state, reason="boom", now=T0 + 1)
    assert ledger(url) == []
    nxt = await claimed(store, 2, thread="t2", now=T0 + 2)
    assert await reserve(store, nxt, thread="t2", now=T0 + 2) == "ok"


async def test_a_job_dying_after_its_reply_was_stored_keeps_its_place(
    store: Store, url: str
) -> None:
    """The reply may have gone out (an attempt whose answer was lost), and ``requeue`` may
    still send it: the reservation keeps counting, and the sender's next message is skipped."""
    job = await claimed(store, 1)
    assert await reserve(store, job) == "ok"
    assert await store.save_reply(job.id, owner="a", reply=reply(), now=T0)
    assert await store.finish(job.id, owner="a", state=JobState.DEAD, reason="gave up", now=T0 + 1)
    assert ledger(url) == [(job.id, JANE, "reserved", T0)]
    nxt = await claimed(store, 2, thread="t2", now=T0 + 2)
    assert await reserve(store, nxt, thread="t2", now=T0 + 2) == "sender_cooldown"


async def test_reservations_survive_a_restart(url: str) -> None:
    """A reservation is a committed row: after the process holding it is gone, a new
    store still skips the sender's next message, and the job itself, claimed again
    once its lease ran out, still finds its place."""
    first = open_store(url)
    await first.open()
    job = await claimed(first, 1)
    assert await reserve(first, job) == "ok"
    await first.close()  # the process ends without sending
    second = open_store(url)
    await second.open()
    try:
        await second.record_delivery(delivery("s2", "e2", "<m2@x>", thread_id="t2"), now=T0 + 1)
        [nxt] = await second.claim(owner="b", now=T0 + 1, lease=600, limit=1)
        assert await reserve(second, nxt, thread="t2", owner="b", now=T0 + 1) == "sender_cooldown"
        [again] = await second.claim(owner="b", now=T0 + 601, lease=600, limit=1)
        assert again.id == job.id
        assert await reserve(second, again, owner="b", now=T0 + 601) == "ok"
    finally:
        await second.close()


async def test_concurrent_reservations_for_one_sender_through_several_stores_one_wins(
    stores: list[Store], url: str
) -> None:
    """A burst from one sender, in as many threads, decided at the same moment by the
    workers of three replicas: exactly one reservation, the rest ``sender_cooldown``."""
    jobs = [await claimed(stores[0], i, thread=f"t{i}") for i in range(24)]
    results = await asyncio.gather(
        *(
            reserve(stores[i % 3], job, thread=f"t{i}", sender=JANE.upper() if i % 2 else JANE)
            for i, job in enumerate(jobs)
        )
    )
    assert sorted(results, key=str) == ["ok"] + ["sender_cooldown"] * 23
    assert len(ledger(url)) == 1


@pytest.mark.parametrize("cap", [1, 3])
async def test_concurrent_reservations_in_one_thread_through_several_stores_fill_the_cap(
    stores: list[Store], url: str, cap: int
) -> None:
    """A burst in one thread from as many senders, decided at once on three replicas:
    exactly ``cap`` reservations, the rest ``thread_cap``."""
    policy = PolicyConfig(thread_cap=cap, sender_cooldown=timedelta(days=1))
    jobs = [await claimed(stores[0], i) for i in range(24)]
    results = await asyncio.gather(
        *(
            reserve(stores[i % 3], job, sender=f"s{i}@example.com", policy=policy)
            for i, job in enumerate(jobs)
        )
    )
    assert sorted(results, key=str) == ["ok"] * cap + ["thread_cap"] * (24 - cap)
    assert len(ledger(url)) == cap


async def test_reservations_hold_on_a_database_that_defaults_to_repeatable_read() -> None:
    """The reservation reads the ledger after its locks are granted; under REPEATABLE READ
    (a server, database or URL default) that read would see the snapshot taken before
    the wait, and two jobs blocked behind the sender's lock both reserved (the security
    review's repro). ``reserve`` sets READ COMMITTED for its own transaction."""
    postgres.require_server()
    with postgres.temporary_schema(prefix="rr") as schema_url:
        url = schema_url + "%20-cdefault_transaction_isolation%3Drepeatable%5C%20read"
        stores = [open_store(url) for _ in range(2)]
        for store in stores:
            await store.open()
        try:
            first = await claimed(stores[0], 0, thread="t0")
            second = await claimed(stores[0], 1, thread="t1")
            key = pg_store._ledger_key("sender", JANE)
            with psycopg.connect(url, autocommit=True) as holder:
                assert holder.execute("SHOW transaction_isolation").fetchone() == (
                    "repeatable read",
                )
                holder.execute("SELECT pg_advisory_lock(%s)", (key,))
                racing = [
                    asyncio.create_task(reserve(store, job, thread=f"t{i}"))
                    for i, (store, job) in enumerate(zip(stores, (first, second), strict=True))
                ]

                def both_waiting() -> bool:
                    row = holder.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    ).fetchone()
                    return row is not None and row[0] == 2

                await until(both_waiting, within=10, what="both reservations to wait")
                assert not any(task.done() for task in racing)
                holder.execute("SELECT pg_advisory_unlock(%s)", (key,))
            results = await asyncio.gather(*racing)
        finally:
            for store in stores:
                await store.close()
        assert sorted(results, key=str) == ["ok", "sender_cooldown"]
        assert len(ledger(url)) == 1


async def test_a_database_from_before_reservations_upgrades_with_its_replies_sent(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 3 adds the reservation state; the replies already in the ledger were all
    sent, and still hold the sender's place after the upgrade."""
    monkeypatch.setattr(migrations, "SQLITE", migrations.SQLITE[:2])
    monkeypatch.setattr(migrations, "POSTGRES", migrations.POSTGRES[:2])
    old = open_store(url)
    await old.open()
    await old.close()
    job_id = old_job(url, "<m1@x>")
    execute(
        url,
        "INSERT INTO replies (job_id, inbox_id, thread_id, sender, sent_at)"  # noqa: S608
        f" VALUES ({job_id}, 'bot@agentmail.to', 'thd_1', '{JANE}', {T0})",
    )
    monkeypatch.undo()
    store = open_store(url)
    await store.open()
    try:
        assert (3,) in execute(url, "SELECT version FROM schema_migrations")
        assert ledger(url) == [(job_id, JANE, "sent", T0)]
        nxt = await claimed(store, 2, thread="t2", owner="b", now=T0 + 1)
        assert await reserve(store, nxt, thread="t2", owner="b", now=T0 + 1) == "sender_cooldown"
    finally:
        await store.close()


# -- the catch-up sweep: swept jobs, marks, the sweep lease ------------------------------

INBOX = "bot@agentmail.to"
M1 = "<m1@example.com>"


async def swept(store: Store, message_id: str = M1, *, now: float = T0) -> bool:
    """``record_swept`` for the message ``delivery()`` carries (same inbox, thread, JSON)."""
    d = delivery(message_id=message_id)
    assert d.message_json is not None
    return await store.record_swept(INBOX, message_id, "thd_1", d.message_json, d.event_type, now)


async def test_a_swept_message_gets_one_job_marked_as_swept(store: Store, url: str) -> None:
    """The sweep enqueues a message once, through the job's unique key alone: no delivery
    or event row is written, and the job says where it came from."""
    assert await swept(store)
    assert not await swept(store, now=T0 + 1)
    job = await store.get_job(INBOX, M1)
    assert job is not None
    assert (job.source, job.state, job.event_id) == (
        JobSource.SWEEP,
        JobState.PENDING,
        f"sweep:{M1}",
    )
    assert job.event_type == "message.received"
    assert job.created_at == T0
    assert execute(url, "SELECT count(*) FROM deliveries") == [(0,)]
    assert execute(url, "SELECT count(*) FROM events") == [(0,)]
    [claimed_job] = await store.claim(owner="a", now=T0, lease=60, limit=10)
    assert (claimed_job.id, claimed_job.source) == (job.id, JobSource.SWEEP)
    [summary] = await store.list_jobs(states=(JobState.RUNNING,), limit=10)
    assert summary.source is JobSource.SWEEP


async def test_a_webhook_after_the_sweep_is_a_duplicate_message(store: Store) -> None:
    """The webhook that arrives late for a message the sweep enqueued finds its job."""
    assert await swept(store)
    assert await store.record_delivery(delivery(), now=T0 + 1) is Recorded.DUPLICATE_MESSAGE
    assert await store.record_delivery(delivery(), now=T0 + 2) is Recorded.DUPLICATE_DELIVERY
    assert (await store.stats(now=T0)).by_state["pending"] == 1


async def test_the_sweep_after_a_webhook_creates_nothing(store: Store) -> None:
    """A message a webhook already enqueued keeps its one job, recorded as ``webhook``."""
    assert await store.record_delivery(delivery(), now=T0) is Recorded.ENQUEUED
    assert not await swept(store, now=T0 + 1)
    job = await store.get_job(INBOX, M1)
    assert job is not None
    assert (job.source, job.event_id) == (JobSource.WEBHOOK, "evt_1")
    assert (await store.stats(now=T0)).by_state["pending"] == 1


async def test_the_sweep_and_webhooks_racing_through_several_stores_enqueue_once(
    stores: list[Store],
) -> None:
    """Every replica sweeping and receiving the message's deliveries at once: one job."""
    copies = [delivery("msg_1", "evt_1"), delivery("msg_2", "evt_2")]
    results = await asyncio.gather(
        *(s.record_delivery(d, now=T0) for s in stores for d in copies for _ in range(3)),
        *(swept(s) for s in stores for _ in range(3)),
    )
    created = [r for r in results if r is Recorded.ENQUEUED or r is True]
    assert len(created) == 1
    assert (await stores[0].stats(now=T0)).by_state["pending"] == 1


async def test_a_full_sweep_is_noted_beside_the_mark(store: Store) -> None:
    """``autoreply status`` shows each inbox's mark with its last full sweep and what it
    found; a note for an inbox without a mark creates nothing."""
    await store.ensure_mark(INBOX, T0)
    assert [(s.inbox_id, s.mark, s.swept_at, s.findings) for s in await store.sweep_states()] == [
        (INBOX, T0, None, None)
    ]
    found = {"scanned": 12, "already_handled": 3, "enqueued": 2, "skipped": 7}
    await store.note_sweep(INBOX, at=T0 + 60, findings=found)
    await store.note_sweep("other@agentmail.to", at=T0 + 60, findings=found)
    [state] = await store.sweep_states()
    assert (state.inbox_id, state.mark, state.swept_at, state.findings) == (
        INBOX,
        T0,
        T0 + 60,
        found,
    )


async def test_marks_are_set_once_and_only_move_forward(store: Store) -> None:
    """``ensure_mark`` sets a missing mark to now and keeps an existing one; ``set_mark``
    moves it forward, never back, and creates it for a new inbox."""
    assert await store.get_marks() == {}
    assert await store.ensure_mark(INBOX, T0) == T0
    assert await store.ensure_mark(INBOX, T0 + 100) == T0
    assert await store.set_mark(INBOX, T0 + 50, T0 + 100) == T0 + 50
    assert await store.set_mark(INBOX, T0 + 10, T0 + 200) == T0 + 50
    assert await store.ensure_mark(INBOX, T0 + 300) == T0 + 50
    assert await store.set_mark("other@agentmail.to", T0 - 5, T0) == T0 - 5
    assert await store.get_marks() == {INBOX: T0 + 50, "other@agentmail.to": T0 - 5}


async def test_marks_survive_reopen(url: str) -> None:
    """A mark is a committed row: the next process sweeps on from it."""
    first = open_store(url)
    await first.open()
    await first.ensure_mark(INBOX, T0)
    await first.set_mark(INBOX, T0 + 5, T0 + 5)
    await first.close()
    second = open_store(url)
    await second.open()
    try:
        assert await second.get_marks() == {INBOX: T0 + 5}
    finally:
        await second.close()


async def test_replicas_racing_on_a_missing_mark_agree_on_one(stores: list[Store]) -> None:
    """Replicas starting together each try to set the first mark: one wins, all see it."""
    marks = await asyncio.gather(*(s.ensure_mark(INBOX, T0 + n) for n, s in enumerate(stores * 4)))
    assert len(set(marks)) == 1
    assert marks[0] in {T0 + n for n in range(12)}
    assert await stores[2].get_marks() == {INBOX: marks[0]}


async def test_replicas_racing_on_a_mark_keep_the_greatest(stores: list[Store]) -> None:
    """Sweepers recording progress at once: the mark ends at the furthest, whatever the order."""
    await stores[0].ensure_mark(INBOX, T0)
    await asyncio.gather(*(s.set_mark(INBOX, T0 + n, T0) for n, s in enumerate(stores * 4)))
    assert await stores[1].get_marks() == {INBOX: T0 + 11}


async def test_the_sweep_lease_has_one_holder_until_it_runs_out(store: Store) -> None:
    """Taken, renewed by its holder, refused to others until it runs out; a release by
    someone who no longer holds it changes nothing."""
    assert await store.try_sweep_lease("a", T0, 60)
    assert not await store.try_sweep_lease("b", T0 + 1, 60)
    assert await store.try_sweep_lease("a", T0 + 30, 60)  # renewed until T0 + 90
    assert not await store.try_sweep_lease("b", T0 + 89, 60)
    assert await store.try_sweep_lease("b", T0 + 90, 60)
    assert not await store.release_sweep_lease("a")
    assert not await store.try_sweep_lease("a", T0 + 91, 60)
    assert await store.release_sweep_lease("b")
    assert not await store.release_sweep_lease("b")
    assert await store.try_sweep_lease("a", T0 + 92, 60)


async def test_one_of_several_stores_holds_the_sweep_lease(stores: list[Store]) -> None:
    """Replicas trying at once, again and again: exactly one holds the lease each time,
    the same one while it renews, another once it let go."""
    owners = [f"replica-{n}" for n in range(len(stores))]
    first = await asyncio.gather(
        *(s.try_sweep_lease(o, T0, 60) for s, o in zip(stores, owners, strict=True))
    )
    assert first.count(True) == 1
    holder = owners[first.index(True)]
    again = await asyncio.gather(
        *(s.try_sweep_lease(o, T0 + 10, 60) for s, o in zip(stores, owners, strict=True))
    )
    assert [o for o, won in zip(owners, again, strict=True) if won] == [holder]
    assert await stores[0].release_sweep_lease(holder)
    after = await asyncio.gather(
        *(s.try_sweep_lease(o, T0 + 11, 60) for s, o in zip(stores, owners, strict=True))
    )
    assert after.count(True) == 1


async def test_a_database_from_before_the_sweep_upgrades_with_its_jobs_from_webhooks(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 4 adds the job's source, the marks and the leases; the jobs already there
    came from webhooks, and still deduplicate the sweep after the upgrade."""
    monkeypatch.setattr(migrations, "SQLITE", migrations.SQLITE[:3])
    monkeypatch.setattr(migrations, "POSTGRES", migrations.POSTGRES[:3])
    old = open_store(url)
    await old.open()
    await old.close()
    old_job(url, M1)
    monkeypatch.undo()
    store = open_store(url)
    await store.open()
    try:
        assert (4,) in execute(url, "SELECT version FROM schema_migrations")
        job = await store.get_job(INBOX, M1)
        assert job is not None
        assert job.source is JobSource.WEBHOOK
        assert not await swept(store)
        assert await store.get_marks() == {}
        assert await store.try_sweep_lease("a", T0, 60)
    finally:
        await store.close()


# -- the suppression list -------------------------------------------------------------

REPLY_ID = "<reply1@agentmail.to>"


async def our_reply(store: Store, n: int = 1, *, sent_id: str = REPLY_ID) -> None:
    """A message from jane@example.com answered by the service: its job's reply (to
    her) was sent as ``sent_id``."""
    await store.record_delivery(delivery(f"msg_r{n}", f"evt_r{n}", f"<in{n}@x>"), now=T0)
    [job] = await store.claim(owner="w", now=T0, lease=60, limit=1)
    assert await store.save_reply(job.id, owner="w", reply=reply(), now=T0)
    assert await store.mark_sent(
        job.id,
        owner="w",
        sent_message_id=sent_id,
        thread_id="thd_1",
        sender="jane@example.com",
        now=T0,
    )
    assert await store.finish(job.id, owner="w", state=JobState.DONE, reason="replied", now=T0)


def feedback_delivery(
    n: int = 1,
    *,
    kind: FeedbackKind = FeedbackKind.PERMANENT_BOUNCE,
    message_id: str = REPLY_ID,
    inbox_id: str = "bot@agentmail.to",
    recipients: tuple[str, ...] = ("jane@example.com",),
    svix_id: str | None = None,
    thread_id: str | None = "thd_1",
) -> Delivery:
    complaint = kind in (FeedbackKind.COMPLAINT, FeedbackKind.NOT_A_COMPLAINT)
    return Delivery(
        svix_id=svix_id or f"msg_f{n}",
        event_id=f"evt_f{n}",
        event_type="message.complained" if complaint else "message.bounced",
        message=None,
        message_json=None,
        feedback=Feedback(
            inbox_id=inbox_id,
            message_id=message_id,
            kind=kind,
            recipients=recipients,
            detail="abuse/spam" if complaint else "Permanent/General",
            thread_id=thread_id,
        ),
    )


async def suppressed(
    store: Store, sender: str = "jane@example.com", inbox: str = INBOX
) -> str | None:
    history = await store.history(inbox_id=inbox, thread_id="thd_x", sender=sender)
    return history.suppressed


async def test_a_bounce_of_our_reply_suppresses_its_recipient(store: Store) -> None:
    await our_reply(store)
    outcome = await store.record_feedback(feedback_delivery(), now=T0 + 10, transient_limit=3)
    assert outcome == FeedbackOutcome(Recorded.FEEDBACK, (("jane@example.com", Cause.BOUNCE),))
    assert await suppressed(store) == "bounce: Permanent/General"
    assert await suppressed(store, "JANE@example.com") == "bounce: Permanent/General"
    [entry] = await store.list_suppressions()
    assert (entry.inbox_id, entry.address, entry.cause) == (INBOX, "jane@example.com", "bounce")
    assert (entry.reason, entry.message_id, entry.created_at) == (
        "Permanent/General",
        REPLY_ID,
        T0 + 10,
    )
    assert (await store.stats(now=T0)).suppressions == {"bounce": 1}
    # Only for that inbox and that address.
    assert await suppressed(store, inbox="other@agentmail.to") is None
    assert await suppressed(store, "john@example.com") is None


async def test_a_complaint_suppresses_and_not_spam_does_not(store: Store) -> None:
    await our_reply(store)
    not_spam = feedback_delivery(1, kind=FeedbackKind.NOT_A_COMPLAINT)
    outcome = await store.record_feedback(not_spam, now=T0, transient_limit=3)
    assert outcome == FeedbackOutcome(Recorded.FEEDBACK)
    assert await suppressed(store) is None
    complaint = feedback_delivery(2, kind=FeedbackKind.COMPLAINT)
    outcome = await store.record_feedback(complaint, now=T0, transient_limit=3)
    assert outcome.suppressed == (("jane@example.com", Cause.COMPLAINT),)
    assert await suppressed(store) == "complaint: abuse/spam"


async def test_feedback_about_another_message_is_ignored(store: Store) -> None:
    """A bounce of a message that is no reply of ours (or of ours in another inbox)."""
    await our_reply(store)
    for n, (message_id, inbox) in enumerate(
        [("<someone-else@agentmail.to>", INBOX), (REPLY_ID, "other@agentmail.to")]
    ):
        stray = feedback_delivery(n, message_id=message_id, inbox_id=inbox)
        outcome = await store.record_feedback(stray, now=T0, transient_limit=3)
        assert outcome == FeedbackOutcome(Recorded.IGNORED)
    assert await store.list_suppressions() == []
    assert await suppressed(store) is None


async def test_duplicate_feedback_changes_nothing(store: Store) -> None:
    """A Svix retry, the event resent, and a second event about the same bounce."""
    await our_reply(store)
    first = await store.record_feedback(feedback_delivery(1), now=T0, transient_limit=3)
    assert first.suppressed
    retry = await store.record_feedback(feedback_delivery(1), now=T0 + 1, transient_limit=3)
    assert retry == FeedbackOutcome(Recorded.DUPLICATE_DELIVERY)
    resent = feedback_delivery(1, svix_id="msg_other")
    assert await store.record_feedback(resent, now=T0 + 1, transient_limit=3) == (
        FeedbackOutcome(Recorded.DUPLICATE_EVENT)
    )
    again = await store.record_feedback(feedback_delivery(2), now=T0 + 2, transient_limit=3)
    assert again == FeedbackOutcome(Recorded.FEEDBACK)
    [entry] = await store.list_suppressions()
    assert entry.created_at == T0


async def test_transient_bounces_suppress_at_the_limit(store: Store) -> None:
    """Distinct replies bouncing transiently within the window; one reply counts once."""
    for n in range(4):
        await our_reply(store, n, sent_id=f"<reply{n}@agentmail.to>")
    transient = FeedbackKind.TRANSIENT_BOUNCE
    old = feedback_delivery(0, kind=transient, message_id="<reply0@agentmail.to>")
    await store.record_feedback(
        old, now=T0 - TRANSIENT_WINDOW.total_seconds() - 1, transient_limit=3
    )
    for n in (1, 2):
        bounce = feedback_delivery(n, kind=transient, message_id=f"<reply{n}@agentmail.to>")
        outcome = await store.record_feedback(bounce, now=T0, transient_limit=3)
        assert outcome == FeedbackOutcome(Recorded.FEEDBACK)
    # The second reply bouncing again (a new event) is not a third failure.
    again = feedback_delivery(20, kind=transient, message_id="<reply2@agentmail.to>")
    assert (await store.record_feedback(again, now=T0, transient_limit=3)).suppressed == ()
    assert await suppressed(store) is None
    third = feedback_delivery(3, kind=transient, message_id="<reply3@agentmail.to>")
    outcome = await store.record_feedback(third, now=T0 + 1, transient_limit=3)
    assert outcome.suppressed == (("jane@example.com", Cause.TRANSIENT_BOUNCES),)
    assert (await store.stats(now=T0)).suppressions == {"transient_bounces": 1}


async def test_transient_bounces_never_suppress_with_limit_zero(store: Store) -> None:
    for n in range(3):
        await our_reply(store, n, sent_id=f"<reply{n}@agentmail.to>")
        bounce = feedback_delivery(
            n, kind=FeedbackKind.TRANSIENT_BOUNCE, message_id=f"<reply{n}@agentmail.to>"
        )
        assert (await store.record_feedback(bounce, now=T0, transient_limit=0)).suppressed == ()
    assert await store.list_suppressions() == []


async def test_feedback_without_recipients_is_against_the_reply_address(store: Store) -> None:
    await our_reply(store)
    outcome = await store.record_feedback(
        feedback_delivery(recipients=()), now=T0, transient_limit=3
    )
    assert outcome.suppressed == (("jane@example.com", Cause.BOUNCE),)


async def test_feedback_is_only_ever_against_our_reply_s_recipient(store: Store, url: str) -> None:
    """Our reply went to one address: a complaint listing ten thousand recipients writes
    one feedback row and suppresses only her; one naming only others suppresses nobody
    (it is ignored), whoever they are."""
    await our_reply(store)
    others = tuple(f"victim{i}@example.org" for i in range(10_000))
    strangers = feedback_delivery(1, kind=FeedbackKind.COMPLAINT, recipients=others)
    assert await store.record_feedback(strangers, now=T0, transient_limit=3) == (
        FeedbackOutcome(Recorded.IGNORED)
    )
    assert await store.list_suppressions() == []
    crowd = feedback_delivery(
        2, kind=FeedbackKind.COMPLAINT, recipients=(*others, "jane@example.com")
    )
    outcome = await store.record_feedback(crowd, now=T0, transient_limit=3)
    assert outcome == FeedbackOutcome(Recorded.FEEDBACK, (("jane@example.com", Cause.COMPLAINT),))
    assert [e.address for e in await store.list_suppressions()] == ["jane@example.com"]
    assert execute(url, "SELECT count(*) FROM feedback") == [(1,)]


async def test_feedback_while_our_reply_s_sent_id_is_unknown_is_asked_for_again(
    store: Store,
) -> None:
    """Our reply is out (or a person sent its draft) but its sent id is not recorded yet
    (the worker crashed after sending, or has not looked at the draft yet): a bounce in
    its thread is NOT_YET and records nothing, so the same delivery, retried once the id
    is recorded, suppresses. It was IGNORED and acknowledged: lost."""
    await store.record_delivery(delivery(), now=T0)
    [job] = await store.claim(owner="w", now=T0, lease=60, limit=1)
    assert await store.save_reply(job.id, owner="w", reply=reply(), now=T0)
    bounce = feedback_delivery(1)
    assert await store.record_feedback(bounce, now=T0, transient_limit=3) == (
        FeedbackOutcome(Recorded.NOT_YET)
    )
    # Another thread, or an event without one, is not held up by it.
    elsewhere = feedback_delivery(2, message_id="<by-hand@x>", thread_id="thd_other")
    assert (await store.record_feedback(elsewhere, now=T0, transient_limit=3)).recorded is (
        Recorded.IGNORED
    )
    threadless = feedback_delivery(3, message_id="<by-hand2@x>", thread_id=None)
    assert (await store.record_feedback(threadless, now=T0, transient_limit=3)).recorded is (
        Recorded.IGNORED
    )
    assert await store.mark_sent(
        job.id, owner="w", sent_message_id=REPLY_ID, thread_id="thd_1", sender=JANE, now=T0
    )
    outcome = await store.record_feedback(bounce, now=T0 + 5, transient_limit=3)
    assert outcome == FeedbackOutcome(Recorded.FEEDBACK, ((JANE, Cause.BOUNCE),))
    # Once the reply is done, a bounce in its thread about another message is ignored.
    assert await store.finish(job.id, owner="w", state=JobState.DONE, reason="replied", now=T0)
    other = feedback_delivery(4, message_id="<by-hand3@x>")
    assert (await store.record_feedback(other, now=T0, transient_limit=3)).recorded is (
        Recorded.IGNORED
    )


async def test_feedback_beside_a_draft_awaiting_review_is_not_held_up(store: Store) -> None:
    """A draft nobody has sent yet is no reply on its way: a bounce in its thread (of a
    message sent by hand) is answered at once, not 503 until the draft is reviewed,
    which can take longer than Svix retries. Once a ``message.sent`` hints that the
    draft may have gone out, it is on its way again and the bounce waits for its id."""
    await store.record_delivery(delivery(), now=T0)
    [job] = await store.claim(owner="w", now=T0, lease=60, limit=1)
    assert await store.save_reply(job.id, owner="w", reply=reply(), now=T0)
    assert await store.await_draft(
        job.id, owner="w", draft_id="drf_1", seen_hint=None, check_at=T0 + 600, now=T0
    )
    by_hand = feedback_delivery(1, message_id="<by-hand@x>")
    assert (await store.record_feedback(by_hand, now=T0, transient_limit=3)).recorded is (
        Recorded.IGNORED
    )
    await store.note_sent(inbox_id=INBOX, thread_id="thd_1", message_id=REPLY_ID, now=T0 + 1)
    bounce = feedback_delivery(2)
    assert (await store.record_feedback(bounce, now=T0 + 2, transient_limit=3)).recorded is (
        Recorded.NOT_YET
    )


async def test_manual_entries_add_and_remove(store: Store) -> None:
    """An entry for every inbox, one for an inbox; removal per inbox or everywhere."""
    assert await store.add_suppression(
        inbox_id="*", address="x@example.com", reason="asked", now=T0
    )
    assert not await store.add_suppression(
        inbox_id="*", address="x@example.com", reason=None, now=T0
    )
    assert await store.add_suppression(inbox_id=INBOX, address="y@example.com", reason=None, now=T0)
    assert await suppressed(store, "x@example.com") == "manual: asked"
    assert await suppressed(store, "x@example.com", "other@agentmail.to") == "manual: asked"
    assert await suppressed(store, "y@example.com", "other@agentmail.to") is None
    assert (await store.stats(now=T0)).suppressions == {"manual": 2}
    assert await store.remove_suppression(address="x@example.com", inbox_id=INBOX, now=T0) == 0
    assert await store.remove_suppression(address="x@example.com", inbox_id=None, now=T0) == 1
    assert await suppressed(store, "x@example.com") is None
    assert [e.address for e in await store.list_suppressions()] == ["y@example.com"]


async def test_removal_restarts_the_transient_count(store: Store) -> None:
    transient = FeedbackKind.TRANSIENT_BOUNCE
    for n in range(3):
        await our_reply(store, n, sent_id=f"<reply{n}@agentmail.to>")
    for n in range(2):
        bounce = feedback_delivery(n, kind=transient, message_id=f"<reply{n}@agentmail.to>")
        await store.record_feedback(bounce, now=T0, transient_limit=2)
    assert await suppressed(store) == "transient_bounces: Permanent/General"
    assert await store.remove_suppression(address="jane@example.com", inbox_id=INBOX, now=T0) == 1
    bounce = feedback_delivery(2, kind=transient, message_id="<reply2@agentmail.to>")
    assert (await store.record_feedback(bounce, now=T0 + 1, transient_limit=2)).suppressed == ()
    assert await suppressed(store) is None


async def test_retention_never_purges_the_suppression_list(store: Store) -> None:
    await our_reply(store)
    await store.record_feedback(feedback_delivery(), now=T0, transient_limit=3)
    await store.add_suppression(inbox_id="*", address="x@example.com", reason=None, now=T0)
    assert await store.purge(before=T0 + 10**9) > 0
    assert len(await store.list_suppressions()) == 2
    assert await suppressed(store) is not None


async def test_the_list_is_shared_and_transient_bounces_counted_exactly_across_replicas(
    stores: list[Store],
) -> None:
    """Three replicas receive the three transient bounces at the same moment: the third
    one counted suppresses, exactly once; every replica then sees the entry."""
    first = stores[0]
    for n in range(3):
        await our_reply(first, n, sent_id=f"<reply{n}@agentmail.to>")
    bounces = [
        feedback_delivery(
            n, kind=FeedbackKind.TRANSIENT_BOUNCE, message_id=f"<reply{n}@agentmail.to>"
        )
        for n in range(3)
    ]
    outcomes = await asyncio.gather(
        *(
            s.record_feedback(b, now=T0, transient_limit=3)
            for s, b in zip(stores, bounces, strict=True)
        )
    )
    assert sum(len(o.suppressed) for o in outcomes) == 1
    for store in stores:
        assert await suppressed(store) is not None


async def test_a_database_from_before_the_suppression_list_upgrades_and_knows_its_replies(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 6 adds the list; a reply sent before the upgrade is still recognised as
    ours, so its bounce suppresses. (The old database has every other version: this
    code's claim reads the columns of later ones.)"""
    monkeypatch.setattr(migrations, "SQLITE", tuple(v for v in migrations.SQLITE if v[0] != 6))
    monkeypatch.setattr(migrations, "POSTGRES", tuple(v for v in migrations.POSTGRES if v[0] != 6))
    old = open_store(url)
    await old.open()
    await old.record_delivery(delivery(), now=T0)
    [job] = await old.claim(owner="w", now=T0, lease=60, limit=1)
    assert await old.save_reply(job.id, owner="w", reply=reply(), now=T0)
    await old.close()
    execute(url, f"UPDATE jobs SET sent_message_id = '{REPLY_ID}', state = 'done'")  # noqa: S608
    monkeypatch.undo()
    store = open_store(url)
    await store.open()
    try:
        assert (6,) in execute(url, "SELECT version FROM schema_migrations")
        outcome = await store.record_feedback(feedback_delivery(), now=T0, transient_limit=3)
        assert outcome.suppressed == (("jane@example.com", Cause.BOUNCE),)
    finally:
        await store.close()


# -- draft mode -----------------------------------------------------------------------


async def drafted(store: Store, i: int = 1, *, thread: str = "thd_1", check_at: float) -> Job:
    """A job whose draft ``drf_<i>`` waits for review until ``check_at``."""
    job = await claimed(store, i, thread=thread)
    assert await store.save_reply(job.id, owner="a", reply=reply(), now=T0)
    assert await store.await_draft(
        job.id, owner="a", draft_id=f"drf_{i}", seen_hint=None, check_at=check_at, now=T0
    )
    return job


async def test_a_drafted_job_waits_for_its_check_and_keeps_its_draft(store: Store) -> None:
    """``drafted`` is neither pending (no falling-behind age) nor final: the job is claimed
    again when its check falls due, with its draft and a fresh attempt count."""
    job = await drafted(store, check_at=T0 + 600)
    assert await store.claim(owner="b", now=T0 + 599, lease=60, limit=10) == []
    stats = await store.stats(now=T0)
    assert stats.by_state["drafted"] == 1
    assert stats.oldest_pending_created_at is None
    assert await store.next_due() == T0 + 600
    [again] = await store.claim(owner="b", now=T0 + 600, lease=60, limit=10)
    assert (again.id, again.draft_id, again.attempts) == (job.id, "drf_1", 1)
    assert again.state is JobState.RUNNING
    [summary] = await store.list_jobs(states=(JobState.RUNNING,), limit=5)
    assert summary.draft_id == "drf_1"
    # The old owner is fenced, like every change to a job.
    assert not await store.await_draft(
        job.id, owner="a", draft_id="drf_1", seen_hint=None, check_at=T0 + 9e9, now=T0
    )


async def test_a_sent_event_wakes_the_drafted_jobs_of_its_thread_only(store: Store) -> None:
    """``note_sent`` hints and wakes the waiting jobs of one thread; other threads, jobs
    without a draft and finished jobs are left alone (0: the event is only recorded)."""
    mine = await drafted(store, 1, thread="t1", check_at=T0 + 600)
    await drafted(store, 2, thread="t2", check_at=T0 + 600)
    await claimed(store, 3, thread="t1")  # running, no draft (a send-mode job)
    hinted = await store.note_sent(
        inbox_id="bot@agentmail.to", thread_id="t1", message_id="<sent@x>", now=T0 + 5
    )
    assert hinted == 1
    assert (
        await store.note_sent(
            inbox_id="bot@agentmail.to", thread_id="t9", message_id="<s@x>", now=T0 + 5
        )
        == 0
    )
    [woken] = await store.claim(owner="b", now=T0 + 5, lease=60, limit=10)
    assert (woken.id, woken.sent_hint, woken.thread_id) == (mine.id, "<sent@x>", "t1")
    assert await store.finish(woken.id, owner="b", state=JobState.DONE, reason="replied", now=T0)
    assert (
        await store.note_sent(
            inbox_id="bot@agentmail.to", thread_id="t1", message_id="<s2@x>", now=T0 + 6
        )
        == 0
    )


async def test_a_hint_arriving_while_the_draft_is_created_is_not_lost(store: Store) -> None:
    """The draft is sent (a fast reviewer, or after a crash between creating and
    recording it) before its job records the draft's id: the event's hint is kept, so
    the job is due at once when the worker records the draft, not at its next check."""
    job = await claimed(store, 1)
    assert await store.save_reply(job.id, owner="a", reply=reply(), now=T0)

    hinted = await store.note_sent(
        inbox_id="bot@agentmail.to", thread_id="thd_1", message_id="<sent@x>", now=T0 + 1
    )
    assert await store.await_draft(
        job.id, owner="a", draft_id="drf_1", seen_hint=None, check_at=T0 + 600, now=T0 + 2
    )

    assert hinted == 0  # nothing woken: the job was running
    [again] = await store.claim(owner="b", now=T0 + 2, lease=60, limit=1)
    assert (again.id, again.sent_hint) == (job.id, "<sent@x>")


async def test_a_hint_arriving_during_a_check_is_not_lost(store: Store) -> None:
    """A ``message.sent`` noted while a worker looks at the draft (it saw no hint) makes
    the job due at once when the worker puts it back; the hint it saw is cleared."""
    job = await drafted(store, check_at=T0 + 600)
    [running] = await store.claim(owner="b", now=T0 + 600, lease=60, limit=1)
    assert running.sent_hint is None
    await store.note_sent(
        inbox_id="bot@agentmail.to", thread_id="thd_1", message_id="<late@x>", now=T0 + 601
    )
    assert await store.await_draft(
        job.id, owner="b", draft_id="drf_1", seen_hint=None, check_at=T0 + 1200, now=T0 + 602
    )
    [again] = await store.claim(owner="c", now=T0 + 602, lease=60, limit=1)
    assert again.sent_hint == "<late@x>"
    # Seen and not the draft's send: cleared, and the job waits for its next check.
    assert await store.await_draft(
        job.id, owner="c", draft_id="drf_1", seen_hint="<late@x>", check_at=T0 + 1800, now=T0 + 603
    )
    assert await store.claim(owner="d", now=T0 + 1799, lease=60, limit=1) == []
    [last] = await store.claim(owner="d", now=T0 + 1800, lease=60, limit=1)
    assert last.sent_hint is None


async def test_a_discarded_draft_gives_its_place_back(store: Store, url: str) -> None:
    """Nothing was sent: the thread cap and the sender's cooldown are free again, though
    the reply was stored (a dead job with a stored reply keeps its place)."""
    job = await claimed(store, 1)
    assert await reserve(store, job) == "ok"
    assert await store.save_reply(job.id, owner="a", reply=reply(), now=T0)
    assert await store.finish(
        job.id, owner="a", state=JobState.DISCARDED, reason="discarded", now=T0 + 1
    )
    assert ledger(url) == []
    [summary] = await store.list_jobs(states=(JobState.DISCARDED,), limit=5)
    assert (summary.message_id, summary.reason) == ("<m1@x>", "discarded")


async def test_a_database_from_before_draft_mode_upgrades_with_its_jobs(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 7 adds the draft columns; jobs recorded before it are claimed as before,
    with no draft, and can wait for one."""
    monkeypatch.setattr(migrations, "SQLITE", tuple(v for v in migrations.SQLITE if v[0] != 7))
    monkeypatch.setattr(migrations, "POSTGRES", tuple(v for v in migrations.POSTGRES if v[0] != 7))
    old = open_store(url)
    await old.open()
    await old.record_delivery(delivery(), now=T0)
    await old.close()
    monkeypatch.undo()
    store = open_store(url)
    await store.open()
    try:
        assert (7,) in execute(url, "SELECT version FROM schema_migrations")
        [job] = await store.claim(owner="w", now=T0, lease=60, limit=1)
        assert (job.draft_id, job.sent_hint, job.thread_id) == (None, None, "thd_1")
        assert await store.await_draft(
            job.id, owner="w", draft_id="drf_1", seen_hint=None, check_at=T0 + 1, now=T0
        )
        [again] = await store.claim(owner="w", now=T0 + 1, lease=60, limit=1)
        assert again.draft_id == "drf_1"
    finally:
        await store.close()
