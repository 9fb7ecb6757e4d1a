"""SQLite-specific behaviour of the write path: another process holding the write lock.

``autoreply requeue`` or ``autoreply migrate`` may write to the file while the service
runs. The service's transactions first try to take the lock without waiting; these
tests check that they then wait for it (up to the busy timeout) instead of failing,
and that a lock held past the timeout is a clean ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.models import JobState
from service.store import Recorded, StoreUnavailable, open_store
from service.store import sqlite as sqlite_store
from service.store.sqlite import SQLiteStore
from tests.store.test_store_contract import T0, delivery


@pytest.fixture(name="path")
def _path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture(name="store")
async def _store(path: Path) -> AsyncIterator[SQLiteStore]:
    store = open_store(f"sqlite:///{path}")
    assert isinstance(store, SQLiteStore)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(name="other_writer")
def _other_writer(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection to the same file, as another process would hold one."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


async def test_delivery_waits_for_another_writer_then_commits(
    store: SQLiteStore, other_writer: sqlite3.Connection
) -> None:
    other_writer.execute("BEGIN IMMEDIATE")
    recording = asyncio.create_task(store.record_delivery(delivery(), now=T0))
    done, _ = await asyncio.wait({recording}, timeout=0.3)
    assert not done  # waiting for the lock, not failed
    other_writer.execute("COMMIT")
    assert await asyncio.wait_for(recording, timeout=10) is Recorded.ENQUEUED
    assert await store.record_delivery(delivery(), now=T0) is Recorded.DUPLICATE_DELIVERY


async def test_lock_held_past_the_busy_timeout_is_unavailable_then_recovers(
    store: SQLiteStore, other_writer: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_MS", 200)
    other_writer.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(store.record_delivery(delivery(), now=T0), timeout=10)
    other_writer.execute("COMMIT")
    assert await store.record_delivery(delivery(), now=T0) is Recorded.ENQUEUED


async def test_other_writers_changes_are_seen(
    store: SQLiteStore, other_writer: sqlite3.Connection
) -> None:
    assert await store.record_delivery(delivery(), now=T0) is Recorded.ENQUEUED
    other_writer.execute("UPDATE jobs SET state = 'dead', reason = 'by hand'")
    [job] = await store.list_jobs(states=(JobState.DEAD,), limit=10)
    assert job.reason == "by hand"


async def test_operator_reads_do_not_wait_for_writes(
    store: SQLiteStore, other_writer: sqlite3.Connection
) -> None:
    """``/metrics`` and ``autoreply status`` read on their own connection: a write lock
    held elsewhere (and the deliveries queued behind it) does not hold them up."""
    assert await store.record_delivery(delivery(), now=T0) is Recorded.ENQUEUED
    other_writer.execute("BEGIN IMMEDIATE")
    queued = asyncio.create_task(
        store.record_delivery(delivery("msg_2", "evt_2", "<m2@example.com>"), now=T0)
    )
    done, _ = await asyncio.wait({queued}, timeout=0.1)
    assert not done  # queued behind the lock held elsewhere
    stats = await asyncio.wait_for(store.stats(now=0.0), timeout=2)
    assert stats.by_state["pending"] == 1  # the committed state, not the queued delivery
    assert await asyncio.wait_for(store.get_job("bot@agentmail.to", "<m1@example.com>"), 2)
    assert not queued.done()
    other_writer.execute("COMMIT")
    assert await asyncio.wait_for(queued, timeout=10) is Recorded.ENQUEUED
    assert (await store.stats(now=0.0)).by_state["pending"] == 2
