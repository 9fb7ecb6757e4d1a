"""The Svix-style webhook sender.

Each delivery is one event body for one webhook. It keeps its ``svix-id`` and body on
every attempt and is signed afresh each time with ``svix.webhooks.Webhook(secret).sign``
(wall-clock ``svix-timestamp``, since receivers check it against their own clock). A 2xx
within ``attempt_timeout`` is success; any other status (3xx included), a timeout or a
connection error is a failure, retried on Svix's schedule scaled by ``time_scale``.
Deliveries run as asyncio tasks on the server's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from svix.webhooks import Webhook

from service.sandbox.client import IDLE_CONNECTION_SECONDS
from service.sandbox.clock import Clock, isoformat
from service.sandbox.reports import AttemptReport, DeliveryRef, DeliveryReport

# Seconds to wait before each attempt: Svix's default schedule, 8 attempts in all.
RETRY_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_ATTEMPT_TIMEOUT = 15.0
USER_AGENT = "Svix-Webhooks/1.0 (sandbox; +https://www.svix.com/http-sources/)"

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """One event body on its way to one webhook URL."""

    delivery_id: str
    svix_id: str
    event_id: str
    event_type: str
    webhook_id: str
    url: str
    secret: str
    body: str
    created_at: datetime
    inbox_id: str | None = None
    message_id: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    state: str = "pending"
    attempts: list[AttemptReport] = field(default_factory=list)

    def ref(self) -> DeliveryRef:
        """The short handle returned by inject and redeliver."""
        return {
            "delivery_id": self.delivery_id,
            "svix_id": self.svix_id,
            "webhook_id": self.webhook_id,
        }

    def report(self) -> DeliveryReport:
        """The admin API's view of this delivery."""
        return {
            "delivery_id": self.delivery_id,
            "svix_id": self.svix_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "webhook_id": self.webhook_id,
            "url": self.url,
            "inbox_id": self.inbox_id,
            "message_id": self.message_id,
            "state": self.state,
            "attempts": [AttemptReport(**a) for a in self.attempts],
            "created_at": isoformat(self.created_at),
        }


class Deliverer:
    """Runs deliveries with retries; owns the outgoing HTTP client and the tasks."""

    def __init__(
        self,
        clock: Clock,
        *,
        time_scale: float = 1.0,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        still_wanted: Callable[[Delivery], bool] = lambda _d: True,
    ) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must not be negative")
        if attempt_timeout <= 0:
            raise ValueError("attempt_timeout must be positive")
        self.clock = clock
        self.time_scale = time_scale
        self.attempt_timeout = attempt_timeout
        self._still_wanted = still_wanted
        self.deliveries: dict[str, Delivery] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Open the outgoing HTTP client (called from the app lifespan)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(keepalive_expiry=IDLE_CONNECTION_SECONDS),
                # The per-attempt cutoff is asyncio.timeout below; this only backs it up.
                timeout=httpx.Timeout(self.attempt_timeout + 5.0),
            )

    async def stop(self) -> None:
        """Cancel pending deliveries and close the client."""
        await self.cancel_all()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def running(self) -> int:
        """How many delivery tasks are still running (waiting or attempting)."""
        return len(self._tasks)

    def submit(self, delivery: Delivery) -> None:
        """Record a delivery and start sending it on the running loop."""
        self.deliveries[delivery.delivery_id] = delivery
        task = asyncio.get_running_loop().create_task(
            self._run(delivery), name=f"sandbox-delivery-{delivery.delivery_id}"
        )
        self._tasks[delivery.delivery_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(delivery.delivery_id, None))

    def record(self, delivery: Delivery, *, state: str) -> None:
        """Record a delivery that is never attempted (e.g. ``dropped``), in its final state."""
        delivery.state = state
        self.deliveries[delivery.delivery_id] = delivery

    async def end_pending(self, webhook_id: str, *, state: str) -> int:
        """Stop every pending delivery to one webhook, marking it ``state``; how many."""
        pending = [
            d
            for d in self.deliveries.values()
            if d.webhook_id == webhook_id and d.state == "pending"
        ]
        tasks = [self._tasks[d.delivery_id] for d in pending if d.delivery_id in self._tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for delivery in pending:
            delivery.state = state
        return len(pending)

    async def cancel_all(self) -> None:
        """Stop every pending delivery (marked ``cancelled``) and wait for the tasks to end."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for delivery in self.deliveries.values():
            if delivery.state == "pending":
                delivery.state = "cancelled"
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def clear(self) -> None:
        """Cancel everything and forget every delivery."""
        await self.cancel_all()
        self.deliveries.clear()

    async def _run(self, delivery: Delivery) -> None:
        for delay in RETRY_SCHEDULE:
            if delay:
                await asyncio.sleep(delay * self.time_scale)
            if not self._still_wanted(delivery):
                delivery.state = "cancelled"
                return
            if await self._attempt(delivery):
                delivery.state = "succeeded"
                return
        delivery.state = "failed"

    async def _attempt(self, delivery: Delivery) -> bool:
        if self._client is None:
            await self.start()
        assert self._client is not None
        now = int(time.time())
        signature = Webhook(delivery.secret).sign(
            delivery.svix_id, datetime.fromtimestamp(now, UTC), delivery.body
        )
        headers = {
            **delivery.extra_headers,
            "svix-id": delivery.svix_id,
            "svix-timestamp": str(now),
            "svix-signature": signature,
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        at = self.clock.now()
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.attempt_timeout):
                response = await self._client.post(
                    delivery.url, content=delivery.body.encode("utf-8"), headers=headers
                )
                status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except TimeoutError:
            error = f"timeout after {self.attempt_timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        delivery.attempts.append(
            {"at": isoformat(at), "status": status, "error": error, "duration_ms": duration_ms}
        )
        log.debug("delivery %s attempt -> %s %s", delivery.delivery_id, status, error)
        return error is None
