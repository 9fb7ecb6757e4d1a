"""The catch-up sweep: reconcile with AgentMail's own record of received mail.

Webhooks are at-least-once only while the service comes back within Svix's retry span;
a disabled or deleted webhook, a long outage or a lost database leaves messages nobody
delivered. The sweep lists each inbox's received messages and enqueues a job for each
one that has none, through the store's deduplicating ``record_swept`` (one job per
``(inbox_id, message_id)``, whichever path finds the message first), so nothing is
answered twice because of it. The decisions (what to enqueue, where to start, how far
the mark moves) are in ``handlers.sweep``; this module does the I/O:

* ``Sweeper.sweep`` is one pass over the inboxes in scope (``AUTOREPLY_INBOX_IDS``, else
  every inbox of the account): per inbox from its mark minus the overlap (a first look
  sets the mark to now, so a new deployment never answers old mail), or from ``since``
  (``autoreply sweep --since``), oldest first, page by page. The mark moves after each
  page, so an interrupted pass loses nothing: the next resumes from the mark. Before
  each page and each message it waits while live intake is busy (``busy``, the runtime's
  ``WebhookBurst.intake_busy``): the pass and the jobs it creates share intake's event
  loop and database writer, and a backlog can wait where a delivery cannot.
* ``SweepLoop`` runs a pass every ``AUTOREPLY_SWEEP_INTERVAL`` under the store's sweep
  lease, so one replica (or ``autoreply sweep``) sweeps at a time, and starts it only
  when intake is not busy.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import structlog

from handlers.message import MESSAGE_RECEIVED
from handlers.sweep import PAGE_SIZE, Finding, advance, classify, first_mark, listing_start
from service import metrics
from service.agentmail_port import ApiFailure, MessagePage, SweepPort
from service.models import SweepOutcome
from service.store.base import Store, StoreUnavailable

log = structlog.get_logger("autoreply.sweep")

T = TypeVar("T")

#: How long the sweep lease lasts by default (``AUTOREPLY_SWEEP_LEASE_SECONDS``); the
#: sweeper renews it before every list call and while it backs off, so it runs out only
#: when the sweeper is gone (killed, hung): then another replica takes the sweep over.
LEASE_TTL = 120.0
#: Tries of one list call before the pass gives up on that inbox (transient failures).
MAX_TRIES = 8
#: The longest wait between two tries, whatever ``Retry-After`` asks.
MAX_BACKOFF = 60.0
#: How often a sweeper waiting for intake to calm down looks again.
BUSY_RECHECK = 1.0


class SweepInterrupted(Exception):
    """The sweep lease was taken over: another sweeper goes on from the marks."""


#: What one pass counts in an inbox, in the order logs and ``autoreply status`` show it.
FINDINGS = ("scanned", "already_handled", "enqueued", "skipped")


@dataclass(slots=True)
class InboxCounts:
    """What one pass found in one inbox."""

    inbox_id: str
    #: Received messages listed.
    scanned: int = 0
    #: Labelled replied, spam, blocked or unauthenticated: no job written.
    already_handled: int = 0
    #: Jobs created (with ``dry_run``: jobs that would be created).
    enqueued: int = 0
    #: Listed and needing no job: it already had one (its webhook arrived, or an
    #: earlier sweep found it), or the item lacked the ids a job needs.
    skipped: int = 0
    #: The inbox's mark when the pass ended (None: not kept, e.g. a dry run).
    mark: float | None = None
    #: Why the inbox was not swept to the end, if it was not.
    error: str | None = None

    def findings(self) -> dict[str, int]:
        """The counts, by the names of ``FINDINGS`` (what ``autoreply status`` shows)."""
        return {name: getattr(self, name) for name in FINDINGS}

    def fields(self) -> dict[str, Any]:
        """The counts as log or JSON fields, with the error if there was one."""
        return {**self.findings(), **({"error": self.error} if self.error else {})}


@dataclass(slots=True)
class SweepReport:
    """One pass: the counts per inbox, in the order swept."""

    inboxes: list[InboxCounts] = field(default_factory=list)
    #: Why the pass could not even list the inboxes, if so.
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Every inbox in scope was swept to the end."""
        return self.error is None and all(c.error is None for c in self.inboxes)

    def totals(self) -> dict[str, int]:
        """The counts summed over the inboxes."""
        return {name: sum(getattr(c, name) for c in self.inboxes) for name in FINDINGS}


class Sweeper:
    """One pass at a time over the inboxes in scope; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        api: SweepPort,
        inbox_ids: Sequence[str],
        replied_label: str,
        wake: Callable[[], None] = lambda: None,
        busy: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        page_size: int = PAGE_SIZE,
        max_backoff: float = MAX_BACKOFF,
        owner: str | None = None,
        lease_seconds: float = LEASE_TTL,
    ) -> None:
        self.store = store
        self.api = api
        #: Empty: every inbox of the account (listed at each pass).
        self.inbox_ids = tuple(sorted(inbox_ids))
        self.replied_label = replied_label
        self.wake = wake
        #: True while live intake is busy: the sweep waits before its next page.
        self.busy = busy
        self.clock = clock
        self.sleep = sleep
        self.page_size = page_size
        #: How long the lease lasts from each renewal (``AUTOREPLY_SWEEP_LEASE_SECONDS``).
        self.lease_seconds = lease_seconds
        # At most half the lease, so one wait between tries never nears the lease's end
        # (the wait renews it every third of the lease anyway).
        self.max_backoff = min(max_backoff, lease_seconds / 2)
        #: The sweep lease's owner token (``worker-...`` style, for ``leases.owner``).
        self.owner = owner or f"sweep-{uuid.uuid4().hex[:12]}"
        #: Whether the pass holds the lease and must renew it (``run_leased``).
        self._leased = False
        #: When the lease was last taken or renewed (``clock``).
        self._renewed_at = float("-inf")
        #: Called with an inbox's counts after each page (the CLI's progress line).
        self.progress: Callable[[InboxCounts], None] | None = None

    # -- the lease -------------------------------------------------------------------

    async def acquire(self) -> bool:
        """Take the sweep lease; False if another sweeper holds it."""
        now = self.clock()
        self._leased = await self.store.try_sweep_lease(self.owner, now, self.lease_seconds)
        self._renewed_at = now
        return self._leased

    async def release(self) -> None:
        """Give the lease back (best effort: it runs out by itself anyway)."""
        if self._leased:
            self._leased = False
            try:
                await self.store.release_sweep_lease(self.owner)
            except StoreUnavailable as exc:
                log.warning("sweep_lease_not_released", error=str(exc))

    async def _renew(self) -> None:
        now = self.clock()
        if self._leased and not await self.store.try_sweep_lease(
            self.owner, now, self.lease_seconds
        ):
            self._leased = False
            raise SweepInterrupted("the sweep lease was taken over")
        self._renewed_at = now

    # -- one pass --------------------------------------------------------------------

    async def sweep(self, *, since: float | None = None, dry_run: bool = False) -> SweepReport:
        """Sweep every inbox in scope once; see the module docstring.

        ``since`` lists from that moment instead of each mark (the marks still only move
        forward, and only where the listing covered them). ``dry_run`` writes nothing:
        no job, no mark. An ``ApiFailure`` that outlasts the retries ends that inbox
        (``error``) and the pass goes on with the next; ``StoreUnavailable`` and
        ``SweepInterrupted`` end the pass (raised).
        """
        report = SweepReport()
        try:
            inboxes = list(self.inbox_ids) or sorted(await self._call(self.api.list_inbox_ids))
        except ApiFailure as failure:
            report.error = failure.reason
            return report
        marks = await self.store.get_marks() if since is not None else {}
        for inbox_id in inboxes:
            counts = InboxCounts(inbox_id=inbox_id)
            report.inboxes.append(counts)
            try:
                await self._sweep_inbox(counts, since=since, marks=marks, dry_run=dry_run)
            except ApiFailure as failure:
                counts.error = failure.reason
        return report

    async def _sweep_inbox(
        self, counts: InboxCounts, *, since: float | None, marks: dict[str, float], dry_run: bool
    ) -> None:
        inbox_id = counts.inbox_id
        if since is None:
            first = first_mark(self.clock())
            if dry_run:
                mark = (await self.store.get_marks()).get(inbox_id, first)
            else:
                mark = await self.store.ensure_mark(inbox_id, first)
            after = listing_start(mark)
            # The mark may move only over what this pass covers from the mark on.
            keep_mark = not dry_run
        else:
            mark = since
            after = datetime.fromtimestamp(since, UTC)
            current = marks.get(inbox_id)
            keep_mark = not dry_run and (current is None or since <= current)
        page_token: str | None = None
        while True:
            await self._yield_to_intake(inbox_id)
            page: MessagePage = await self._call(
                functools.partial(
                    self.api.list_received,
                    inbox_id,
                    after=after,
                    limit=self.page_size,
                    page_token=page_token,
                )
            )
            created = 0
            for item in page.messages:
                # Also within a page: a page's writes and the jobs they wake are a
                # quarter of a second of the loop, enough to hold up a wave of deliveries.
                await self._yield_to_intake(inbox_id)
                created += await self._consider(counts, item, dry_run=dry_run)
            if created:
                self.wake()
            mark = advance(mark, page.messages, now=self.clock())
            if keep_mark:
                counts.mark = await self.store.set_mark(inbox_id, mark, self.clock())
            if self.progress is not None:
                self.progress(counts)
            page_token = page.next_page_token
            if not page_token:
                if keep_mark:
                    await self.store.note_sweep(
                        inbox_id, at=self.clock(), findings=counts.findings()
                    )
                return

    async def _consider(self, counts: InboxCounts, item: dict[str, Any], *, dry_run: bool) -> int:
        """Enqueue one listed message if it needs a job; return 1 if a job was created."""
        counts.scanned += 1
        metrics.SWEEP_SCANNED.inc()
        if classify(item, replied_label=self.replied_label) is Finding.HANDLED:
            counts.already_handled += 1
            return 0
        message_id, thread_id = item.get("message_id"), item.get("thread_id")
        if not isinstance(message_id, str) or not isinstance(thread_id, str):
            counts.skipped += 1
            return 0
        if dry_run:
            exists = await self.store.get_job(counts.inbox_id, message_id) is not None
            created = not exists
        else:
            # The list item (no body) is the job's payload: the worker sees the missing
            # body and headers and fetches the full message before deciding.
            created = await self.store.record_swept(
                counts.inbox_id,
                message_id,
                thread_id,
                orjson.dumps({**item, "inbox_id": counts.inbox_id}).decode(),
                MESSAGE_RECEIVED,
                self.clock(),
            )
        if created:
            counts.enqueued += 1
            if not dry_run:
                metrics.SWEEP_ENQUEUED.inc()
            return 0 if dry_run else 1
        counts.skipped += 1
        return 0

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        """One list call, retried on transient failures with backoff (``Retry-After``
        wins when longer), renewing the lease before each try and while waiting."""
        for tries in range(1, MAX_TRIES + 1):
            await self._renew()
            try:
                return await call()
            except ApiFailure as failure:
                if not failure.transient or tries == MAX_TRIES:
                    raise
                delay = min(2.0 ** (tries - 1), self.max_backoff) * random.uniform(0.5, 1.0)
                delay = min(max(delay, failure.retry_after or 0.0), self.max_backoff)
                log.info("sweep_call_retry", error=failure.reason, attempt=tries, retry_in_s=delay)
                await self._wait(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _yield_to_intake(self, inbox_id: str) -> None:
        """Wait while live intake is busy, renewing the lease every third of its time.

        Under a sustained rate of deliveries the pass waits as long as the rate lasts:
        webhooks are evidently arriving then, and what the sweep looks for can wait for
        the lull. A log line says when it stops and goes on.
        """
        if not self.busy():
            return
        paused = self.clock()
        log.info("sweep_waits_for_intake", inbox_id=inbox_id)
        while self.busy():
            await self.sleep(BUSY_RECHECK)
            if self.clock() - self._renewed_at >= self.lease_seconds / 3:
                await self._renew()
        log.info("sweep_resumes", inbox_id=inbox_id, waited_s=round(self.clock() - paused, 1))

    async def _wait(self, seconds: float) -> None:
        """Sleep, renewing the lease at least every third of its time."""
        while seconds > 0:
            step = min(seconds, self.lease_seconds / 3)
            await self.sleep(step)
            seconds -= step
            await self._renew()

    # -- a pass with its lease, metrics and log line ---------------------------------------

    async def run_leased(self, *, since: float | None = None) -> SweepReport | None:
        """One pass under the sweep lease; None if another sweeper holds it.

        Counts the run (``completed``, ``failed`` or ``interrupted``), sets the last
        success time of every inbox swept to the end, and logs one line with the counts.
        Cancellation (shutdown) counts ``interrupted`` and is re-raised; the marks keep
        what was done, so the next pass resumes there.
        """
        if not await self.acquire():
            return None
        # Which sweeper (``leases.owner``) holds the sweep from here to its ``sweep`` line.
        log.info("sweep_started", owner=self.owner)
        started = time.perf_counter()
        outcome = SweepOutcome.FAILED
        report: SweepReport | None = None
        try:
            report = await self.sweep(since=since)
            outcome = SweepOutcome.COMPLETED if report.ok else SweepOutcome.FAILED
            return report
        except (SweepInterrupted, asyncio.CancelledError):
            outcome = SweepOutcome.INTERRUPTED
            raise
        except StoreUnavailable as exc:
            log.warning("sweep_failed", error=str(exc))
            return report
        finally:
            # The line first: a sweep's ``sweep_started`` and ``sweep`` lines bracket its
            # hold of the lease, so the lines of successive sweeps never interleave.
            record(report, outcome=outcome, now=self.clock(), started=started)
            await self.release()


def record(
    report: SweepReport | None, *, outcome: SweepOutcome, now: float, started: float
) -> None:
    """The metrics and the log line of one pass."""
    metrics.SWEEP_RUNS.labels(outcome=outcome).inc()
    fields: dict[str, Any] = {"outcome": outcome}
    if report is not None:
        for counts in report.inboxes:
            if counts.error is None and outcome != SweepOutcome.INTERRUPTED:
                metrics.SWEEP_LAST_SUCCESS.labels(inbox_id=counts.inbox_id).set(now)
        fields.update(report.totals())
        fields["inboxes"] = {c.inbox_id: c.fields() for c in report.inboxes}
        if report.error:
            fields["error"] = report.error
    fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
    log.info("sweep", **fields)


class SweepLoop:
    """A pass every ``interval`` seconds under the lease, started when intake is calm."""

    def __init__(self, sweeper: Sweeper, *, interval: float) -> None:
        self.sweeper = sweeper
        self.interval = interval

    async def run(self) -> None:
        """Sweep now and then every interval, until cancelled.

        Each outcome of ``autoreply_sweep_runs_total`` is exposed from 0 as the loop
        starts, and a replica whose sweep is off (no loop) exposes none: the alert on
        failing sweeps tells the two apart. A pass ending after the first scrape is then
        an increase Prometheus sees; the pass at startup usually ends before it, and
        the rule counts a series younger than its window with its whole value.
        """
        for outcome in SweepOutcome:
            metrics.SWEEP_RUNS.labels(outcome=outcome)
        while True:
            # Waiting here holds no lease: another replica with calm intake may sweep.
            while self.sweeper.busy():
                await self.sweeper.sleep(BUSY_RECHECK)
            try:
                await self.sweeper.run_leased()
            except SweepInterrupted as exc:
                log.warning("sweep_interrupted", reason=str(exc))
            except StoreUnavailable as exc:
                log.warning("sweep_lease_unavailable", error=str(exc))
            except Exception:  # a bug must not end sweeping for good: log it, go on
                log.exception("sweep_crashed")
            await self.sweeper.sleep(self.interval)
