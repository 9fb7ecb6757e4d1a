"""Whether webhook intake is in a burst: many requests in progress on a saturated loop.

Intake and the worker share one event loop. In a burst the worker steps back (see
``worker.claim_limit``) so that acknowledgements, which Svix waits for, come first.
Many requests in progress alone are not a burst: with a slow disk or a sender that
keeps a hundred deliveries in flight, they wait on commits while the loop idles. So
the loop's own CPU counts too, sampled every ``INTERVAL`` from its thread's CPU time.

A burst starts when both are high and ends when either is low again; the gap between
the two thresholds keeps the state from flapping with every batch of answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: How often the loop's CPU share is sampled, in seconds.
INTERVAL = 0.1
#: A burst starts with this many webhook requests in progress at once (Svix sends a
#: few at a time in normal traffic) ...
START_IN_FLIGHT = 16
#: ... while the loop's thread uses at least this share of a core.
START_LOAD = 0.75
#: It ends when fewer requests than this are in progress, or the share falls below
#: ``END_LOAD``.
END_IN_FLIGHT = 4
END_LOAD = 0.5


class Burst:
    """Tracks webhook requests in progress and the loop's load; ``active`` during a burst."""

    def __init__(self, *, on_end: Callable[[], None], interval: float = INTERVAL) -> None:
        self.in_flight = 0
        #: CPU time of the loop's thread over the last interval, per second of wall time.
        self.load = 0.0
        self.active = False
        self.interval = interval
        self._on_end = on_end

    def request_started(self) -> None:
        """A webhook request came in."""
        self.in_flight += 1
        self._update()

    def request_finished(self) -> None:
        """A webhook request was answered."""
        self.in_flight -= 1
        self._update()

    async def measure(self) -> None:
        """Sample the loop's load until cancelled; runs on the loop it measures."""
        cpu, wall = time.thread_time(), time.monotonic()
        while True:
            await asyncio.sleep(self.interval)
            now_cpu, now_wall = time.thread_time(), time.monotonic()
            self.load = (now_cpu - cpu) / max(now_wall - wall, 1e-6)
            cpu, wall = now_cpu, now_wall
            self._update()

    def _update(self) -> None:
        if not self.active:
            self.active = self.in_flight >= START_IN_FLIGHT and self.load >= START_LOAD
        elif self.in_flight < END_IN_FLIGHT or self.load < END_LOAD:
            self.active = False
            self._on_end()
