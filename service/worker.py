"""In-process workers: claim jobs, decide, reply once, relabel.

A dispatcher claims due jobs (with a lease) up to the configured concurrency and runs
each as a task. Every step that must not repeat is recorded before the next one: the
rendered reply is stored before the first send, the sent message id after it. A
retry therefore resumes where the last attempt stopped, and re-sends the same bytes
under the same Idempotency-Key, which AgentMail answers with the original message
instead of a second email.

A message with a grace period (``AUTOREPLY_REPLY_DELAY`` or its rule's ``delay``) is not
decided before its received time plus the delay: its first claim puts the job back in
the queue until then (``Store.defer``), so it waits in the database, not in memory.
When it falls due the worker reads the message's thread before anything else reaches
AgentMail; a message sent in it after the inbound one by anyone but this service (see
``handlers.grace``) skips the job ``answered_in_thread``, and the message is not
labelled. Without a delay none of this runs: no deferral, no thread read.

In draft mode (``AUTOREPLY_MODE`` or a rule's ``mode``) the stored reply becomes a reply
draft instead, created under a ``client_id`` derived from the message (a retry or
another replica gets the same draft back). The job then waits in ``drafted``: a
``message.sent`` event in its thread (intake notes it on the job) or the periodic check
(``AUTOREPLY_DRAFT_CHECK_INTERVAL``) brings it back, and it finds out from AgentMail
whether the draft was sent (relabel, ``done``) or deleted unsent (``discarded``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import structlog

from handlers.grace import (
    ANSWERED_IN_THREAD,
    OwnReplies,
    Seen,
    ThreadMessage,
    first_answer,
    sent_after,
)
from handlers.idempotency import draft_client_id, reply_key
from handlers.message import MESSAGE_RECEIVED, InboundMessage, PayloadError
from handlers.modes import ReplyMode
from handlers.policy import Decision, History, PolicyConfig, decide, is_address
from handlers.reply import reply_headers, reply_recipient
from handlers.retry import SEND_WINDOW, RetryPolicy
from handlers.rules import SKIP, Choice, Delay, matching_rule, reply_delay
from service import metrics
from service.agentmail_port import SENT_LABEL, AgentMailPort, ApiFailure
from service.models import AttemptOutcome, FailureKind, Job, JobState, PreparedReply
from service.store.base import GRACE_PERIOD, Store, StoreUnavailable
from service.templates import LiveTemplates, TemplateError, TemplateSet

log = structlog.get_logger("autoreply.worker")

#: How often the dispatcher looks for due jobs when nothing wakes it.
POLL_INTERVAL = 1.0
#: Pages of a thread read at most when looking for an answer (100 messages a page, the
#: newest first): the inbound message is almost always on the first.
MAX_THREAD_PAGES = 10


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerConfig:
    """What the worker needs from the settings."""

    concurrency: int
    lease_seconds: float
    unreplied_label: str
    replied_label: str
    dry_run: bool
    policy: PolicyConfig
    #: ``AUTOREPLY_REPLY_DELAY``: the grace period of messages no rule gives their own.
    reply_delay: timedelta = timedelta(0)
    #: ``AUTOREPLY_MODE``: the mode of replies no rule sets one for.
    mode: ReplyMode = ReplyMode.SEND
    #: ``AUTOREPLY_DRAFT_LABEL``: on a message whose reply draft awaits review.
    draft_label: str = "autoreply-draft"
    #: ``AUTOREPLY_DRAFT_CHECK_INTERVAL`` in seconds: how often a waiting draft is
    #: looked at (a deleted draft, or a lost ``message.sent`` event, is noticed then).
    draft_check_seconds: float = 600.0


@dataclass(frozen=True, kw_only=True, slots=True)
class _Grace:
    """A message's grace period: how long, what set it, and when it is over."""

    delay: Delay
    #: Unix seconds: the message's received time plus the delay.
    due: float


@dataclass(slots=True)
class _SendWindowStart:
    """When this job's reply was first prepared for sending, as the failure handling of
    an attempt needs it: a retry must not fall outside the Idempotency-Key's window."""

    first_send_at: float | None


@dataclass(frozen=True, slots=True)
class _Chosen:
    """The rule's choice for a message and the receipt time it was made for."""

    choice: Choice
    received_at: datetime


class LostLease(Exception):
    """Another worker holds this job now; this attempt stops without touching it."""


class Worker:
    """Runs jobs from the store until stopped; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        api: AgentMailPort,
        templates: LiveTemplates,
        config: WorkerConfig,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        claim_limit: Callable[[int], int] = lambda concurrency: concurrency,
    ) -> None:
        self.store = store
        #: How many jobs may run now, given the configured concurrency: the runtime
        #: passes ``WebhookBurst.claim_limit``, so intake comes first in a burst.
        self.claim_limit = claim_limit
        self.api = api
        self.templates = templates
        self.config = config
        self.retry_policy = retry or RetryPolicy()
        self.clock = clock
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        """True while the dispatcher is alive."""
        return self._dispatcher is not None and not self._dispatcher.done()

    def wake(self) -> None:
        """Look for due jobs now (intake calls this after enqueueing one)."""
        self._wakeup.set()

    async def start(self) -> None:
        """Start the dispatcher."""
        self._stopping = False
        self._dispatcher = asyncio.create_task(self._dispatch(), name="autoreply-dispatcher")

    async def stop(self, grace: float) -> None:
        """Stop claiming, let running jobs finish within ``grace`` seconds, release the rest."""
        self._stopping = True
        self._wakeup.set()
        if self._dispatcher is not None:
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            released = await self.store.release(owner=self.owner, now=self.clock())
        except StoreUnavailable as exc:
            log.warning("leases_not_released", error=str(exc))
        else:
            log.info("worker_stopped", released=released)

    # -- dispatch --------------------------------------------------------------------

    async def _dispatch(self) -> None:
        failures = 0
        while not self._stopping:
            free = self.claim_limit(self.config.concurrency) - len(self._tasks)
            claimed = 0
            if free > 0:
                try:
                    jobs = await self.store.claim(
                        owner=self.owner,
                        now=self.clock(),
                        lease=self.config.lease_seconds,
                        limit=free,
                    )
                except Exception as exc:  # noqa: BLE001 - the dispatcher must outlive any error
                    failures += 1
                    log.warning("claim_failed", error=repr(exc), failures=failures)
                    await self._sleep(min(30.0, 0.5 * 2 ** min(failures, 10)))
                    continue
                failures = 0
                claimed = len(jobs)
                for job in jobs:
                    task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
                    self._tasks.add(task)
                    task.add_done_callback(self._done)
            if claimed < free or free <= 0:
                await self._sleep(POLL_INTERVAL)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wakeup.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        self._wakeup.clear()

    # -- one job ---------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        started = time.perf_counter()
        bound = log.bind(
            job_id=job.id,
            inbox_id=job.inbox_id,
            message_id=job.message_id,
            event_id=job.event_id,
            attempt=job.attempts,
        )
        outcome = AttemptOutcome.ERROR
        fields: dict[str, object] = {}
        attempt = _SendWindowStart(first_send_at=job.first_send_at)
        try:
            # The whole attempt must end before the lease does, or another worker
            # could claim the job while this one still acts on it.
            async with asyncio.timeout(self.config.lease_seconds * 0.8):
                outcome, fields = await self._attempt(job, attempt)
        except ApiFailure as failure:
            outcome, fields = await self._failed(
                job,
                attempt,
                failure.reason,
                transient=failure.transient,
                retry_after=failure.retry_after,
            )
        except TimeoutError:
            outcome, fields = await self._failed(job, attempt, "attempt timed out", transient=True)
        except (TemplateError, PayloadError) as exc:
            outcome, fields = await self._failed(job, attempt, str(exc), transient=False)
        except LostLease:
            outcome = AttemptOutcome.LEASE_LOST
        except StoreUnavailable as exc:
            # Nothing can be recorded; the lease runs out and the job is claimed again.
            outcome, fields = AttemptOutcome.STORE_UNAVAILABLE, {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the worker
            bound.exception("job_crashed")
            outcome, fields = await self._failed(
                job, attempt, f"internal error: {exc!r}", transient=True
            )
        metrics.JOB_ATTEMPTS.labels(outcome=outcome).inc()
        bound.info(
            "job_attempt",
            outcome=outcome,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            **fields,
        )

    async def _attempt(
        self, job: Job, attempt: _SendWindowStart
    ) -> tuple[AttemptOutcome, dict[str, object]]:
        message = InboundMessage.from_payload(
            orjson.loads(job.message_json), event_type=job.event_type
        )
        reply = job.reply
        if reply is None:
            # One set of templates for the whole attempt: the rule chosen (and its time
            # window) is the one whose template is rendered, even if a reload lands
            # in between.
            templates = self.templates.current
            grace = self._grace(job, message, templates)
            if grace is not None and self.clock() < grace.due and job.reason != GRACE_PERIOD:
                # Claimed for the first time within the delay. What rules out a reply
                # whatever happens meanwhile (a list post, an auto-reply, a skip rule) is
                # decided now; the rest waits until the delay is over.
                early = self._decide_early(job, message, templates)
                if early is not None and not early.reply:
                    return await self._skip(job, early)
                return await self._defer(job, grace)
            decision, message, chosen = await self._decide(job, message, templates)
            if not decision.reply:
                return await self._skip(job, decision)
            if grace is not None:
                answer = await self._answer_in_thread(message)
                if answer is not None:
                    detail = f"{answer} was sent in the thread after it"
                    skip = Decision(reply=False, reason=ANSWERED_IN_THREAD, detail=detail)
                    return await self._skip(job, skip)
                if self.clock() < grace.due:
                    # Woken before its time and nobody answered yet: wait on.
                    return await self._defer(job, grace)
            if self.config.dry_run:
                # Nothing is sent, so nothing is reserved: a dry run leaves the ledger
                # as it found it.
                reply = self._prepare(message, templates, chosen)
                await self._finish(job, JobState.SKIPPED, "dry_run")
                return AttemptOutcome.DRY_RUN, {
                    "to": reply.to,
                    "template": reply.template,
                    "mode": reply.mode,
                    "text": reply.text,
                }
            # The decision above read the ledger; another job may have reserved the
            # thread or the sender since. This checks again and takes the place in one
            # atomic step, so of a burst exactly one job gets past it.
            reserved = await self.store.reserve(
                job.id,
                owner=self.owner,
                thread_id=message.thread_id,
                sender=message.sender_address,
                policy=self.config.policy,
                now=self.clock(),
            )
            if reserved is None:
                raise LostLease
            if not reserved.reply:
                return await self._skip(job, reserved)
            # Labelled first: if rendering or sending then fails for good, the message
            # stays visibly awaiting its reply in AgentMail for a person to see.
            await self._label(job, add=[self.config.unreplied_label])
            reply = self._prepare(message, templates, chosen)
            attempt.first_send_at = self.clock()
            if not await self.store.save_reply(
                job.id, owner=self.owner, reply=reply, now=attempt.first_send_at
            ):
                raise LostLease
        elif reply.mode == ReplyMode.DRAFT and job.draft_id is None:
            # Prepared by an attempt that may have created the draft and stopped before
            # recording it; a person may have sent that draft since, which frees its
            # client_id: look before creating it again.
            sent = await self._find_sent_reply(job, message)
            if sent is not None:
                return await self._draft_sent(job, message, reply, sent)
        if reply.mode == ReplyMode.DRAFT:
            # No Idempotency-Key window applies to a draft: a failed check may retry
            # however long the draft has been waiting.
            attempt.first_send_at = None
            return await self._draft(job, message, reply)
        sent_id = job.sent_message_id
        if sent_id is None:
            if job.first_send_at is not None and self.clock() > job.first_send_at + SEND_WINDOW:
                # A retry scheduled in time can still run late (downtime, backlog): past
                # the window AgentMail may have forgotten the key, and a resend could
                # become a second email.
                await self._finish(job, JobState.DEAD, "send window passed; not resending")
                metrics.REPLIES_DEAD.inc()
                return AttemptOutcome.DEAD, {"reason": "send_window_passed"}
            sent_id = await self.api.reply(job.inbox_id, job.message_id, reply)
            metrics.REPLIES_SENT.inc()
            metrics.REPLY_LATENCY.observe(max(0.0, self.clock() - job.created_at))
            # If the ledger write or the relabel fails, the retry resends under the
            # same key (a replay) and does both again.
            await self._mark_sent(job, message, reply, sent_id)
        else:
            await self._relabel(job)
        await self._finish(job, JobState.DONE, "replied")
        return AttemptOutcome.REPLIED, {"sent_message_id": sent_id, "template": reply.template}

    # -- draft mode ------------------------------------------------------------------

    async def _draft(
        self, job: Job, message: InboundMessage, reply: PreparedReply
    ) -> tuple[AttemptOutcome, dict[str, object]]:
        """Create the reply draft and wait, or look at the waiting one.

        The message is labelled before the draft is created, so that nothing stands
        between creating the draft and recording it: a draft that exists unrecorded is
        one a retry creates again, and if a reviewer deleted it meanwhile (it shows in
        AgentMail at once), the deletion would be undone.
        """
        if job.draft_id is not None:
            return await self._check_draft(job, message, reply, job.draft_id)
        await self._label(job, add=[self.config.draft_label])
        client_id = draft_client_id(job.inbox_id, job.message_id)
        try:
            draft_id = await self.api.create_draft(
                job.inbox_id, job.message_id, reply, client_id=client_id
            )
        except ApiFailure as failure:
            if not failure.transient:
                # No draft is coming (the job is dead-lettered): the label must not
                # say one awaits review.
                await self._label(job, remove=[self.config.draft_label])
            raise
        await self._await_draft(job, draft_id, seen_hint=None)
        metrics.DRAFTS_CREATED.inc()
        return AttemptOutcome.DRAFTED, {"draft_id": draft_id, "template": reply.template}

    async def _check_draft(
        self, job: Job, message: InboundMessage, reply: PreparedReply, draft_id: str
    ) -> tuple[AttemptOutcome, dict[str, object]]:
        """Was the draft sent, deleted, or does it still wait?

        The draft itself first: still there, the job waits again, whatever was sent in
        the thread meanwhile (a person answering in their own words is not the draft
        going out; settling on it would leave the draft waiting in AgentMail, sendable
        as a second reply, and count the person's message as ours). Gone, the
        ``message.sent`` hint (one call) or else the thread tells a sent draft (its
        reply is there) from a deleted one.
        """
        hint = job.sent_hint
        if await self.api.draft_exists(job.inbox_id, draft_id):
            await self._await_draft(job, draft_id, seen_hint=hint)
            return AttemptOutcome.WAITING, {"draft_id": draft_id}
        sent_id = None
        if hint is not None and await self._answers(job, hint):
            sent_id = hint
        if sent_id is None:
            sent_id = await self._find_sent_reply(job, message)
        if sent_id is None:
            # Deleted unsent: the message stays unreplied, for a person to see.
            await self._label(job, remove=[self.config.draft_label])
            await self._finish(job, JobState.DISCARDED, "discarded")
            metrics.DRAFTS_DISCARDED.inc()
            return AttemptOutcome.DISCARDED, {"draft_id": draft_id}
        return await self._draft_sent(job, message, reply, sent_id)

    async def _find_sent_reply(self, job: Job, message: InboundMessage) -> str | None:
        """The newest message the inbox sent in the thread in reply to the job's, if any:
        how a draft that was sent is told from one deleted. Reads the thread's newest
        page (up to 100 messages): a reply is newer than the message it answers."""
        page = await self.api.get_thread(job.inbox_id, message.thread_id)
        for item in reversed(page.messages):
            if item.get("in_reply_to") == job.message_id and SENT_LABEL in item.get("labels", ()):
                return str(item["message_id"])
        return None

    async def _answers(self, job: Job, message_id: str) -> bool:
        """Whether ``message_id`` is a message the inbox sent in reply to the job's."""
        try:
            sent = await self.api.get_message(job.inbox_id, message_id)
        except ApiFailure as failure:
            if failure.status == 404:
                return False
            raise
        return sent.get("in_reply_to") == job.message_id and SENT_LABEL in sent.get("labels", ())

    async def _draft_sent(
        self, job: Job, message: InboundMessage, reply: PreparedReply, sent_id: str
    ) -> tuple[AttemptOutcome, dict[str, object]]:
        """The draft went out as ``sent_id``: one PATCH, ledger, done."""
        await self._mark_sent(job, message, reply, sent_id, draft=True)
        await self._finish(job, JobState.DONE, "replied")
        metrics.REPLIES_SENT.inc()
        return AttemptOutcome.REPLIED, {
            "sent_message_id": sent_id,
            "draft_id": job.draft_id,
            "template": reply.template,
        }

    async def _await_draft(self, job: Job, draft_id: str, *, seen_hint: str | None) -> None:
        now = self.clock()
        if not await self.store.await_draft(
            job.id,
            owner=self.owner,
            draft_id=draft_id,
            seen_hint=seen_hint,
            check_at=now + self.config.draft_check_seconds,
            now=now,
        ):
            raise LostLease

    async def _decide(
        self, job: Job, message: InboundMessage, templates: TemplateSet
    ) -> tuple[Decision, InboundMessage, _Chosen]:
        """Choose the rule, then apply the policy, first fetching the message when the
        payload omitted parts.

        The policy is applied to every job that has no stored reply, whatever brought it
        in (a webhook, a late retry, the sweep, a requeue), so its age is judged now: a
        message older than ``max_age`` is skipped ``too_old`` before anything is reserved.

        The rules match the time AgentMail received the message (its ``timestamp``;
        without one, or a later one, when its job was created: see ``_received_at``),
        not when the job runs: a message that
        came in on Friday evening is answered as Friday evening mail even if a backlog
        or a retry sends the reply on Monday. A ``skip`` rule's match goes to the policy,
        which skips the message ``rule:<name>`` unless a stronger reason applies.

        The job's own reservation (from an earlier attempt) is left out of the history:
        it is this job's place, not an earlier reply.
        """
        if message.incomplete and message.event_type == MESSAGE_RECEIVED:
            data = await self.api.get_message(message.inbox_id, message.message_id)
            message = InboundMessage.from_payload(data, event_type=message.event_type)
        enqueued_at = datetime.fromtimestamp(job.created_at, UTC)
        received_at = _received_at(job, message)
        choice = templates.choose(message, received_at=received_at)
        # A sender that is no address is skipped (``invalid_sender``) before the policy
        # reads the history: nothing to look up for it, and a NUL in it would make the
        # look-up fail on PostgreSQL at every attempt.
        history = (
            await self.store.history(
                inbox_id=message.inbox_id,
                thread_id=message.thread_id,
                sender=message.sender_address,
                exclude_job=job.id,
            )
            if is_address(message.sender_address)
            else History()
        )
        decision = decide(
            message,
            self.config.policy,
            history,
            now=datetime.fromtimestamp(self.clock(), UTC),
            replied_label=self.config.replied_label,
            # Dates a message without a timestamp for the max age: it is at least as
            # old as its job (a requeue, a sweep or a late retry may come days later).
            enqueued_at=enqueued_at,
            skip_rule=choice.skip_rule,
        )
        return decision, message, _Chosen(choice, received_at)

    def _grace(self, job: Job, message: InboundMessage, templates: TemplateSet) -> _Grace | None:
        """The message's grace period, or None without one.

        The delay is the first matching rule's, else ``AUTOREPLY_REPLY_DELAY``; it counts
        from the message's timestamp (when AgentMail received it), or, without one, from
        when its job was created. A timestamp later than the job's creation cannot be when
        the message was received (the webhook came after it): a clock ahead of ours or a
        broken timestamp. The delay then counts from the job's creation, so a timestamp
        in the future never holds a message back for longer than its delay.
        """
        received = _received_at(job, message)
        delay = reply_delay(templates.rules, message, self.config.reply_delay, received_at=received)
        if not delay.delay:
            return None
        start = min(received.timestamp(), job.created_at)
        return _Grace(delay=delay, due=start + delay.delay.total_seconds())

    def _decide_early(
        self, job: Job, message: InboundMessage, templates: TemplateSet
    ) -> Decision | None:
        """The policy's rules about the message itself, before its delay: None when the
        payload lacks parts (they are fetched when the job is decided, after the delay).

        The thread cap and the sender cooldown are left out (no history): they apply
        when the delay is over, to the replies sent by then.
        """
        if message.incomplete:
            return None
        # Only a skip rule matters here: the rule alone, not the stretch of its window
        # (the template, with its window, is chosen when the delay is over).
        rule = matching_rule(templates.rules, message, received_at=_received_at(job, message))
        return decide(
            message,
            self.config.policy,
            History(),
            now=datetime.fromtimestamp(self.clock(), UTC),
            replied_label=self.config.replied_label,
            enqueued_at=datetime.fromtimestamp(job.created_at, UTC),
            skip_rule=rule.name if rule is not None and rule.action == SKIP else None,
        )

    async def _defer(self, job: Job, grace: _Grace) -> tuple[AttemptOutcome, dict[str, object]]:
        """Put the job back in the queue until its grace period is over."""
        if not await self.store.defer(
            job.id, owner=self.owner, run_after=grace.due, now=self.clock()
        ):
            raise LostLease
        return AttemptOutcome.DEFERRED, {
            "until": datetime.fromtimestamp(grace.due, UTC).isoformat(),
            "delay_s": grace.delay.delay.total_seconds(),
            "delay_rule": grace.delay.rule_name,
        }

    async def _answer_in_thread(self, message: InboundMessage) -> str | None:
        """The id of a message sent in the thread after ``message`` by anyone but this
        service, or None: the thread's pages are read from the newest until the inbound
        message is found (one page, almost always). The store is asked which sent
        messages are this service's replies only when the thread has any."""
        own: OwnReplies | None = None
        page_token: str | None = None
        for _ in range(MAX_THREAD_PAGES):
            page = await self.api.get_thread(
                message.inbox_id, message.thread_id, page_token=page_token
            )
            verdict = sent_after(
                message.message_id, [ThreadMessage.from_payload(m) for m in page.messages]
            )
            if verdict.sent_after:
                if own is None:
                    own = await self.store.own_replies(
                        inbox_id=message.inbox_id, thread_id=message.thread_id
                    )
                answer = first_answer(verdict.sent_after, own)
                if answer is not None:
                    return answer
            if verdict.seen is Seen.SETTLED or page.next_page_token is None:
                return None
            page_token = page.next_page_token
        return None

    async def _skip(self, job: Job, decision: Decision) -> tuple[AttemptOutcome, dict[str, object]]:
        """Finish the job as skipped with the policy's reason."""
        await self._finish(job, JobState.SKIPPED, decision.reason)
        metrics.REPLIES_SKIPPED.labels(reason=decision.reason).inc()
        return AttemptOutcome.SKIPPED, {"reason": decision.reason, "detail": decision.detail}

    async def _label(
        self, job: Job, *, add: list[str] | None = None, remove: list[str] | None = None
    ) -> list[str]:
        return await self.api.update_labels(
            job.inbox_id, job.message_id, add=add or (), remove=remove or ()
        )

    async def _relabel(self, job: Job, *, draft: bool = False) -> list[str]:
        """The one PATCH that marks the message answered (and no longer drafted)."""
        remove = [self.config.unreplied_label]
        if draft:
            remove.append(self.config.draft_label)
        return await self._label(job, add=[self.config.replied_label], remove=remove)

    async def _mark_sent(
        self,
        job: Job,
        message: InboundMessage,
        reply: PreparedReply,
        sent_id: str,
        *,
        draft: bool = False,
    ) -> None:
        """Record the reply sent as ``sent_id`` and relabel the message, together: the
        relabel need not wait for the ledger write. Raises the first failure, or
        LostLease if the job is no longer this worker's."""
        marked, relabelled = await asyncio.gather(
            self.store.mark_sent(
                job.id,
                owner=self.owner,
                sent_message_id=sent_id,
                thread_id=message.thread_id,
                sender=reply.to,
                now=self.clock(),
            ),
            self._relabel(job, draft=draft),
            return_exceptions=True,
        )
        _raise_first(marked, relabelled)
        if marked is False:
            raise LostLease

    def _prepare(
        self, message: InboundMessage, templates: TemplateSet, chosen: _Chosen
    ) -> PreparedReply:
        rendered = self.templates.render(
            message, received_at=chosen.received_at, choice=chosen.choice, using=templates
        )
        return PreparedReply(
            to=reply_recipient(message),
            text=rendered.text,
            html=rendered.html,
            headers=reply_headers(),
            idempotency_key=reply_key(message.inbox_id, message.message_id),
            template=rendered.template,
            rule=rendered.rule,
            mode=(rendered.mode or self.config.mode).value,
        )

    async def _finish(self, job: Job, state: JobState, reason: str) -> None:
        if not await self.store.finish(
            job.id, owner=self.owner, state=state, reason=reason, now=self.clock()
        ):
            raise LostLease

    async def _failed(
        self,
        job: Job,
        attempt: _SendWindowStart,
        error: str,
        *,
        transient: bool,
        retry_after: float | None = None,
    ) -> tuple[AttemptOutcome, dict[str, object]]:
        metrics.REPLIES_FAILED.labels(
            kind=FailureKind.TRANSIENT if transient else FailureKind.PERMANENT
        ).inc()
        now = self.clock()
        fields: dict[str, object] = {"error": error}
        run_after = None
        if transient:
            run_after = self.retry_policy.next_run(
                attempt=job.attempts,
                now=now,
                first_send_at=attempt.first_send_at,
                retry_after=retry_after,
            )
        try:
            if run_after is not None:
                if not await self.store.retry(
                    job.id, owner=self.owner, run_after=run_after, error=error, now=now
                ):
                    # The job moved on without us (its lease was taken, or a write
                    # of ours committed after this attempt gave up): nothing to retry.
                    return AttemptOutcome.LEASE_LOST, fields
                fields["retry_in_s"] = round(run_after - now, 1)
                return AttemptOutcome.RETRY, fields
            reason = error if not transient else f"gave up: {error}"
            if not await self.store.finish(
                job.id, owner=self.owner, state=JobState.DEAD, reason=reason, now=now
            ):
                return AttemptOutcome.LEASE_LOST, fields
        except StoreUnavailable as exc:
            fields["store_error"] = str(exc)
            return AttemptOutcome.STORE_UNAVAILABLE, fields
        metrics.REPLIES_DEAD.inc()
        return AttemptOutcome.DEAD, fields


def _received_at(job: Job, message: InboundMessage) -> datetime:
    """When AgentMail received the message (its ``timestamp``), or, without one, when its
    job was created (the message is at least that old): what rules and delays read.

    A timestamp later than the job's creation is not believed: AgentMail had received
    the message when it told us of it (as for the grace period's start). A clock ahead
    of ours, or a hostile payload, must not pick the rule of a later hour."""
    created = datetime.fromtimestamp(job.created_at, UTC)
    if message.timestamp is None:
        return created
    return min(message.timestamp, created)


def _raise_first(*results: object) -> None:
    """Re-raise the first exception among ``gather(..., return_exceptions=True)`` results."""
    for result in results:
        if isinstance(result, BaseException):
            raise result
