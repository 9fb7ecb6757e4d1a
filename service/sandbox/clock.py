"""The sandbox clock: wall time plus an offset that tests can advance.

Timestamps on messages and webhooks and the 24 h Idempotency-Key expiry read this clock,
so a test can jump a day ahead without waiting. Webhook signatures and retry delays do
not: receivers check ``svix-timestamp`` against their own clock, and retries must really
wait (scaled by ``time_scale``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta


def _system_now() -> datetime:
    return datetime.now(UTC)


class Clock:
    """A clock whose reading is ``source() + offset``; ``advance`` moves only the offset."""

    def __init__(self, source: Callable[[], datetime] | None = None) -> None:
        self._source = source or _system_now
        self._offset = timedelta(0)

    def now(self) -> datetime:
        """The current sandbox time, timezone-aware UTC, truncated to milliseconds."""
        moment = self._source() + self._offset
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward (or back, if negative) and return the new time."""
        self._offset += timedelta(seconds=seconds)
        return self.now()

    def set(self, moment: datetime) -> datetime:
        """Move the clock so that it reads ``moment`` now (it keeps running from there)."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        self._offset = moment - self._source_utc()
        return self.now()

    def _source_utc(self) -> datetime:
        moment = self._source()
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment

    def reset(self) -> None:
        """Drop any advance made so far."""
        self._offset = timedelta(0)

    @property
    def offset_seconds(self) -> float:
        """How far the clock has been advanced, in seconds."""
        return self._offset.total_seconds()


def isoformat(moment: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix and millisecond precision, as the API writes it."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
