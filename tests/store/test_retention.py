"""Retention: the running service purges old delivery and event dedupe rows by itself.

The store's ``purge`` itself is part of the contract suite (both stores); this checks the
setting and the runtime's periodic task that calls it.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from service.models import Delivery
from service.runtime import Runtime
from service.settings import Secret, Settings, SettingsError
from service.store import Recorded, Store, open_store
from tests.support.service_process import free_port
from tests.support.waiting import until

BASE = {"AGENTMAIL_API_KEY": "am_test", "AUTOREPLY_WEBHOOK_SECRET": "whsec_" + "c2VjcmV0" * 4}


def test_retention_defaults_to_seven_days_and_takes_durations() -> None:
    """Longer than Svix's ~28 h retry span by default; 0 turns purging off."""
    assert Settings.from_environ(BASE, dotenv=None).retention == timedelta(days=7)
    assert Settings.from_environ(
        {**BASE, "AUTOREPLY_RETENTION": "30d"}, dotenv=None
    ).retention == timedelta(days=30)
    assert not Settings.from_environ({**BASE, "AUTOREPLY_RETENTION": "0"}, dotenv=None).retention
    with pytest.raises(SettingsError, match="AUTOREPLY_RETENTION"):
        Settings.from_environ({**BASE, "AUTOREPLY_RETENTION": "a week"}, dotenv=None)


def event(svix_id: str, event_id: str) -> Delivery:
    """A delivery of an event type the service does not act on (no job, no worker)."""
    return Delivery(
        svix_id=svix_id,
        event_id=event_id,
        event_type="message.sent",
        message=None,
        message_json=None,
    )


class PurgeSpy:
    """A real store that remembers each ``purge`` call and its result."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.purges: list[tuple[float, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def purge(self, *, before: float, batch: int = 1000) -> int:
        deleted = await self._store.purge(before=before, batch=batch)
        self.purges.append((before, deleted))
        return deleted


def runtime(tmp_path: Path, retention: timedelta) -> tuple[Runtime, PurgeSpy]:
    store = PurgeSpy(open_store(f"sqlite:///{tmp_path / 'store.db'}"))
    settings = Settings(
        api_key=Secret("am_test"),
        base_url=f"http://127.0.0.1:{free_port()}",  # never called: no job is enqueued
        webhook_secrets=(Secret("whsec_" + "c2VjcmV0" * 4),),
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        retention=retention,
    )
    return Runtime(settings, store=store), store


async def test_running_service_purges_rows_older_than_the_retention(tmp_path: Path) -> None:
    """At startup (then every ``PURGE_INTERVAL``) rows past the retention are deleted."""
    service, store = runtime(tmp_path, timedelta(hours=1))
    await store.open()
    now = time.time()
    await store.record_delivery(event("old", "evt_old"), now=now - 7200)
    await store.record_delivery(event("new", "evt_new"), now=now - 60)
    await service.start()
    try:
        await until(lambda: bool(store.purges), within=30, what="the first purge")
    finally:
        await service.stop()
    [(before, deleted)] = store.purges
    assert now - 3600 <= before <= time.time() - 3600
    assert deleted == 2  # the old delivery and its event
    await store.open()
    try:
        assert await store.record_delivery(event("new", "evt_new"), now=now) is (
            Recorded.DUPLICATE_DELIVERY
        )
        assert await store.record_delivery(event("old", "evt_old"), now=now) is Recorded.IGNORED
    finally:
        await store.close()


async def test_zero_retention_keeps_everything(tmp_path: Path) -> None:
    """``AUTOREPLY_RETENTION=0`` starts no purge task."""
    service, store = runtime(tmp_path, timedelta(0))
    await service.start()
    await service.stop()
    assert store.purges == []
