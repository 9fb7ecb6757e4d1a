"""When to try a failed job again, and when to stop: pure arithmetic over attempts.

The one hard limit is AgentMail's Idempotency-Key window: a key expires 24 hours
after the send completes, so a retry later than that could send a second email. A
job whose next try would fall outside ``SEND_WINDOW`` after its first send attempt is
dead-lettered instead, with a margin for clocks and in-flight requests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: How long after the first send attempt a retry is still covered by the key.
SEND_WINDOW = 23 * 3600.0


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped."""

    base: float = 2.0
    cap: float = 600.0
    max_attempts: int = 40

    def delay(self, attempt: int, *, retry_after: float | None = None, rand: float) -> float:
        """Seconds to wait after failed ``attempt`` (1-based); ``rand`` is in [0, 1).

        The server's ``Retry-After`` is a floor: waiting less would only be refused.
        """
        ceiling = min(self.cap, self.base * 2 ** max(attempt - 1, 0))
        delay = float(ceiling / 2 + rand * ceiling / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def next_run(
        self,
        *,
        attempt: int,
        now: float,
        first_send_at: float | None,
        retry_after: float | None = None,
        rand: float | None = None,
    ) -> float | None:
        """When to run again, or None when the job must be dead-lettered."""
        if attempt >= self.max_attempts:
            return None
        when = now + self.delay(
            attempt, retry_after=retry_after, rand=random.random() if rand is None else rand
        )
        if first_send_at is not None and when > first_send_at + SEND_WINDOW:
            return None
        return when
