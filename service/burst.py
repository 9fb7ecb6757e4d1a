"""Intake comes first: during a webhook burst the worker runs one job at a time.

Intake and the worker share one event loop. During a burst every job's Python delays
the answers Svix is waiting for (it times out and retries), while replies can wait for
the burst to pass; one job at a time keeps them moving meanwhile. (An eighth of the
concurrency, tried first, still took a tenth of the loop in the intake benchmark.)

Everything about it is here: ``CountRequests`` counts the webhook requests in progress
(wrapped around the endpoint, which knows nothing of it), ``WebhookBurst`` samples the
loop's CPU share and decides, with hysteresis, whether this is a burst, and its
``claim_limit`` is the one thing the worker asks, which also logs ``worker_steps_back``
and ``worker_resumes``.

The sweep's backlog waits for a lower bar: ``intake_busy`` holds while webhooks arrive
at ``BUSY_RATE`` or more a second (or during a burst), and for ``QUIET_AFTER`` seconds
after, so a catch-up pass over thousands of old messages runs between the waves of live
deliveries, never in them (``service.sweep``).

Many requests in progress alone are not a burst: with a slow disk or a sender that
keeps a hundred deliveries in flight, they wait on commits while the loop idles. So the
loop's own CPU counts too, sampled every ``INTERVAL`` from its thread's CPU time. A
burst starts when both are high and ends when either is low again; the gap between the
two thresholds keeps the state from flapping with every batch of answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

log = structlog.get_logger("autoreply.worker")

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
#: Webhook requests a second from which intake counts as busy for the sweep: far above
#: the few a second of normal traffic, far below what a burst needs. Deliveries arriving
#: at this rate also show the webhook works, so a catch-up can wait for a lull.
BUSY_RATE = 50.0
#: How long intake stays busy after the last sample at ``BUSY_RATE`` (or in a burst):
#: the sweep resumes only after this much quiet, not in every gap between two waves.
QUIET_AFTER = 2.0


class WebhookBurst:
    """Webhook requests in progress and the loop's load; ``active`` during a burst."""

    def __init__(
        self,
        *,
        on_end: Callable[[], None],
        interval: float = INTERVAL,
        cpu_clock: Callable[[], float] = time.thread_time,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_end`` is called as a burst ends (the runtime wakes the worker with it)."""
        self.in_flight = 0
        #: Webhook requests started since the last sample, and their rate over it.
        self.started = 0
        self.rate = 0.0
        #: Wall-clock time (``wall_clock``) until which intake counts as busy.
        self.busy_until = float("-inf")
        #: CPU time of the loop's thread over the last interval, per second of wall time.
        self.load = 0.0
        self.active = False
        self.interval = interval
        self._on_end = on_end
        self._cpu_clock, self._wall_clock = cpu_clock, wall_clock
        #: Whether the worker was last told to step back (for its log lines).
        self._stepped_back = False

    def request_started(self) -> None:
        """A webhook request came in."""
        self.in_flight += 1
        self.started += 1
        self._update()

    def request_finished(self) -> None:
        """A webhook request was answered."""
        self.in_flight -= 1
        self._update()

    def claim_limit(self, concurrency: int) -> int:
        """How many jobs the worker may run: ``concurrency``, or one during a burst.

        The worker asks before every claim; each change of answer is logged, stepping
        back as a warning (the service is saturated), resuming as information.
        """
        if self.active != self._stepped_back:
            self._stepped_back = self.active
            (log.warning if self.active else log.info)(
                "worker_steps_back" if self.active else "worker_resumes",
                webhooks_in_progress=self.in_flight,
                loop_load=round(self.load, 2),
            )
        return 1 if self.active else concurrency

    async def measure(self) -> None:
        """Sample the loop's load until cancelled; runs on the loop it measures."""
        cpu, wall = self._cpu_clock(), self._wall_clock()
        while True:
            await asyncio.sleep(self.interval)
            self.sample(cpu, wall)
            cpu, wall = self._cpu_clock(), self._wall_clock()

    def sample(self, cpu_since: float, wall_since: float) -> None:
        """Set ``load`` and ``rate`` from the clocks' readings since ``cpu_since`` and
        ``wall_since`` (and the requests started since the previous sample)."""
        now = self._wall_clock()
        elapsed = max(now - wall_since, 1e-6)
        self.load = (self._cpu_clock() - cpu_since) / elapsed
        self.rate, self.started = self.started / elapsed, 0
        self._update()
        if self.active or self.rate >= BUSY_RATE:
            self.busy_until = now + QUIET_AFTER

    def intake_busy(self) -> bool:
        """Whether live deliveries are arriving fast enough that backlog work (the
        sweep) should wait: a burst, or ``BUSY_RATE`` a second within ``QUIET_AFTER``."""
        return self.active or self._wall_clock() < self.busy_until

    def _update(self) -> None:
        if not self.active:
            self.active = self.in_flight >= START_IN_FLIGHT and self.load >= START_LOAD
        elif self.in_flight < END_IN_FLIGHT or self.load < END_LOAD:
            self.active = False
            self._on_end()


class CountRequests:
    """An ASGI wrapper counting the requests in progress on ``app`` into ``burst``."""

    def __init__(self, app: ASGIApp, burst: WebhookBurst) -> None:
        self.app, self.burst = app, burst

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the wrapped app, counted from its call until it returns or raises."""
        self.burst.request_started()
        try:
            await self.app(scope, receive, send)
        finally:
            self.burst.request_finished()
