"""Durable state: delivery and event dedupe, the job queue, the reply ledger, and the
suppression list with the bounces and complaints behind it.

``open_store(url)`` picks the implementation from ``AUTOREPLY_DATABASE_URL``: SQLite for
``sqlite:///PATH`` (one replica), PostgreSQL for ``postgresql://`` or ``postgres://``
(any number of replicas sharing one database).
"""

from __future__ import annotations

from service.store.base import Recorded, Store, StoreUnavailable


def open_store(url: str) -> Store:
    """Create (not yet open) the store that ``url`` names."""
    if url.startswith("sqlite:///"):
        from service.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from service.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r}")


__all__ = [
    "Recorded",
    "Store",
    "StoreUnavailable",
    "open_store",
]
