"""How busy the event loop's thread is: the share of one core it used lately.

Intake and the worker share the loop. Many webhook requests in progress alone do not
mean the worker should step back: with a slow disk or a bursty sender they wait on
commits while the loop idles. The worker steps back only when the loop's thread is
also near a full core (see ``Runtime.intake_busy``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: How often the share is measured.
INTERVAL = 0.1


class LoopLoad:
    """``share``: CPU time of the loop's thread over the last ``interval``, per second."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.share = 0.0

    async def run(self, *, saturated: float, on_relief: Callable[[], None]) -> None:
        """Measure until cancelled; call ``on_relief`` when the share falls below
        ``saturated`` after being at or above it. Runs on the loop it measures."""
        cpu, wall = time.thread_time(), time.monotonic()
        while True:
            await asyncio.sleep(self.interval)
            now_cpu, now_wall = time.thread_time(), time.monotonic()
            was_saturated = self.share >= saturated
            self.share = (now_cpu - cpu) / max(now_wall - wall, 1e-6)
            cpu, wall = now_cpu, now_wall
            if was_saturated and self.share < saturated:
                on_relief()
