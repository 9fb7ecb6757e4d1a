"""The sandbox's in-memory state and the object that ties its parts together.

:class:`Sandbox` owns the stores (inboxes, webhooks, messages, threads), the logs the
admin API reads back (sent emails, label changes, request counts), the clock, the faults,
the Idempotency-Key store and the webhook sender. Everything runs on the server's event
loop, so no locking is needed; tests that peek at it from another thread should treat it
as read-only and prefer the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from service.sandbox import drafts
from service.sandbox.clock import Clock
from service.sandbox.delivery import DEFAULT_ATTEMPT_TIMEOUT, Deliverer, Delivery
from service.sandbox.faults import FaultSet
from service.sandbox.idempotency import IdempotencyStore
from service.sandbox.ids import IdFactory
from service.sandbox.models import (
    DEFAULT_POD_ID,
    DraftRecord,
    InboxRecord,
    MessageRecord,
    ThreadRecord,
    WebhookRecord,
)
from service.sandbox.reports import LabelChange, RequestsReport, SentEmail
from service.sandbox.validation import email_of

DEFAULT_API_KEYS = ("am_sandbox",)
DEFAULT_INBOXES = ("demo@agentmail.to",)


class Sandbox:
    """All state of one sandbox instance (``app.state.sandbox``)."""

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = DEFAULT_API_KEYS,
        inboxes: Iterable[str] = DEFAULT_INBOXES,
        time_scale: float = 1.0,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        seed: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.api_keys = frozenset(api_keys)
        if not self.api_keys or not all(self.api_keys):
            raise ValueError("at least one non-empty API key is required")
        self.clock = clock or Clock()
        self.ids = IdFactory(seed)
        self.faults = FaultSet(seed)
        self.idempotency = IdempotencyStore(self.clock)
        self.deliverer = Deliverer(
            self.clock,
            time_scale=time_scale,
            attempt_timeout=attempt_timeout,
            still_wanted=self._still_wanted,
        )
        self.inboxes: dict[str, InboxRecord] = {}
        self.webhooks: dict[str, WebhookRecord] = {}
        self.messages: dict[tuple[str, str], MessageRecord] = {}
        self.threads: dict[str, ThreadRecord] = {}
        self.drafts: dict[str, DraftRecord] = {}
        # (inbox_id, client_id) -> draft_id, while that draft exists.
        self.draft_client_ids: dict[tuple[str, str], str] = {}
        self.inbox_client_ids: dict[str, str] = {}
        self.webhook_client_ids: dict[tuple[str, str], str] = {}
        self.sent: list[SentEmail] = []
        self.label_changes: list[LabelChange] = []
        self.request_counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.in_flight: Counter[str] = Counter()
        # webhook_id -> end of its drop window (sandbox clock), None: until cleared.
        self.drops: dict[str, datetime | None] = {}
        self._sequence = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._initial_inboxes: list[InboxRecord] = [
            self._initial_inbox(address) for address in inboxes
        ]
        self._install_initial_inboxes()

    # -- construction and lifecycle -------------------------------------------------

    def _initial_inbox(self, address: str) -> InboxRecord:
        email = email_of(address)
        if email is None or email != address.strip().lower():
            raise ValueError(f"not a bare e-mail address: {address!r}")
        now = self.clock.now()
        return InboxRecord(inbox_id=email, pod_id=DEFAULT_POD_ID, created_at=now, updated_at=now)

    def _install_initial_inboxes(self) -> None:
        self.inboxes = {inbox.inbox_id: inbox for inbox in self._initial_inboxes}

    @property
    def initial_inbox_ids(self) -> list[str]:
        """The inboxes the sandbox was constructed with (kept across reset)."""
        return [inbox.inbox_id for inbox in self._initial_inboxes]

    async def start(self) -> None:
        """Start the webhook sender and the scheduled-draft sender (app lifespan startup)."""
        await self.deliverer.start()
        self._scheduler = asyncio.get_running_loop().create_task(
            self._send_scheduled_drafts(), name="sandbox-draft-scheduler"
        )

    async def stop(self) -> None:
        """Cancel deliveries and in-flight work, close the sender (app lifespan shutdown)."""
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None
        await self._cancel_background()
        await self.deliverer.stop()

    async def _send_scheduled_drafts(self) -> None:
        """Send drafts whose ``send_at`` the sandbox clock has reached, every 100 ms (real
        time), so moving the clock sends them without waiting."""
        while True:
            await asyncio.sleep(drafts.SCHEDULER_INTERVAL_S)
            drafts.send_due(self)

    async def reset(self) -> None:
        """Back to the initial state: constructor inboxes kept, all else cleared."""
        await self._cancel_background()
        await self.deliverer.clear()
        self.webhooks.clear()
        self.messages.clear()
        self.threads.clear()
        self.drafts.clear()
        self.draft_client_ids.clear()
        self.inbox_client_ids.clear()
        self.webhook_client_ids.clear()
        self.sent.clear()
        self.label_changes.clear()
        self.request_counts.clear()
        self.in_flight.clear()
        self.faults.clear()
        self.idempotency.clear()
        self.clock.reset()
        self.drops.clear()
        self._install_initial_inboxes()

    async def _cancel_background(self) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            # A cancelled request has no one left to answer; its outcome does not matter.
            with contextlib.suppress(BaseException):
                await task

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to request work that must outlive its client connection."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def next_sequence(self) -> int:
        """A strictly increasing number, to order records created in the same millisecond."""
        self._sequence += 1
        return self._sequence

    # -- lookups --------------------------------------------------------------------

    def inbox_for_address(self, address: str) -> InboxRecord | None:
        """The sandbox inbox whose address is in ``address`` (``Name <a@b>`` allowed)."""
        email = email_of(address)
        return self.inboxes.get(email) if email else None

    def thread_messages(self, thread: ThreadRecord) -> list[MessageRecord]:
        """A thread's messages, oldest first."""
        found = [self.messages[(thread.inbox_id, mid)] for mid in thread.message_ids]
        return sorted(found, key=lambda m: (m.timestamp, m.seq))

    def dropping(self, webhook_id: str) -> bool:
        """Whether deliveries to this webhook are dropped now (an expired window is removed)."""
        if webhook_id not in self.drops:
            return False
        until = self.drops[webhook_id]
        if until is None or self.clock.now() < until:
            return True
        del self.drops[webhook_id]
        return False

    async def drop_deliveries(self, webhook_id: str, seconds: float | None) -> datetime | None:
        """Start dropping deliveries to a webhook for ``seconds`` of sandbox time (None:
        until :meth:`stop_dropping`). Its pending deliveries end as ``dropped`` now, and
        events during the window are recorded as ``dropped`` with no attempt, never sent
        later: like an endpoint the sender has given up on. Returns the window's end."""
        until = None if seconds is None else self.clock.now() + timedelta(seconds=seconds)
        self.drops[webhook_id] = until
        await self.deliverer.end_pending(webhook_id, state="dropped")
        return until

    def stop_dropping(self, webhook_id: str) -> None:
        """End a drop window early; later events are delivered again (earlier ones are not)."""
        self.drops.pop(webhook_id, None)

    def _still_wanted(self, delivery: Delivery) -> bool:
        webhook = self.webhooks.get(delivery.webhook_id)
        return webhook is not None and webhook.enabled

    # -- accounting -----------------------------------------------------------------

    def count_request(self, operation: str, status: int) -> None:
        """Record that an API call of ``operation`` ended with ``status``."""
        self.request_counts[operation][str(status)] += 1

    def requests_report(self) -> RequestsReport:
        """Per-operation status counts and the calls in flight now."""
        return {
            "operations": {op: dict(counts) for op, counts in self.request_counts.items()},
            "in_flight": {op: n for op, n in self.in_flight.items() if n},
        }
