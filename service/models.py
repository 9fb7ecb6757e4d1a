"""The records that cross the service's modules: deliveries, jobs and their replies.

Intake builds ``Delivery``; the store keeps jobs and hands out ``Job``; the worker
prepares a ``PreparedReply`` and the AgentMail adapter sends it; the operators' commands
read ``JobSummary`` and ``QueueStats``. ``AttemptOutcome`` and ``RegistrationState`` are
the values metrics and logs report, named once here; ``JobSource`` says what brought a
job in (a webhook or the catch-up sweep). Plain values only: this module
imports nothing from ``service``, so any of those modules (and their tests) can use the
records without loading the others (the verifier's svix, the store's drivers).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from handlers.suppression import FeedbackKind

# Delivery and MessageRef are built once per request and never changed; they are not
# declared frozen only because a frozen dataclass's __init__ costs three times as much.


@dataclass(kw_only=True, slots=True)
class MessageRef:
    """Which message a ``message.received*`` event is about: the job's key."""

    inbox_id: str
    message_id: str
    thread_id: str


@dataclass(kw_only=True, slots=True)
class Feedback:
    """A bounce or complaint (``message.bounced`` / ``message.complained``) about a
    message an inbox sent: one of our replies, or some other message of the inbox."""

    inbox_id: str
    #: The message bounced or complained about (for our replies: ``jobs.sent_message_id``).
    message_id: str
    kind: FeedbackKind
    #: The recipients the event names, bare and lower-cased (``handlers.suppression.
    #: bare_address``), anything without an ``@`` left out; only our reply's recipient
    #: among them is acted on (or, when none is left, that recipient).
    recipients: tuple[str, ...]
    #: The event's ``type``/``sub_type``, for the record and the logs.
    detail: str
    #: The thread of the message (None if the event has no usable one): a reply of ours
    #: still on its way in it makes the store ask for the event again later.
    thread_id: str | None = None


@dataclass(kw_only=True, slots=True)
class SentRef:
    """What a ``message.sent`` event reports: a message an inbox sent, in which thread.

    It names no draft; draft mode matches it to a job by its thread and lets the worker
    find out from AgentMail whether it was the job's draft (see ``service.worker``).
    """

    inbox_id: str
    thread_id: str
    message_id: str


@dataclass(kw_only=True, slots=True)
class Delivery:
    """A verified delivery: who sent it (``svix_id``) and what it carries.

    Intake routes it by what it carries: a ``message`` becomes a job, ``feedback`` goes
    to the suppression list, and a delivery with neither is recorded for deduplication
    and answered ``ignored``.
    """

    svix_id: str
    event_id: str
    event_type: str
    #: The message of a ``message.received*`` event, else None.
    message: MessageRef | None
    #: The event's ``message`` object, stored with the job; the worker parses it
    #: in full (intake checks only what the job's key needs, to stay fast).
    message_json: str | None
    #: The bounce or complaint of a ``message.bounced`` / ``message.complained`` event
    #: the service acts on (``AUTOREPLY_SUPPRESSION``), else None.
    feedback: Feedback | None = None
    #: The sent message of a ``message.sent`` event the service acts on (draft mode),
    #: else None.
    sent: SentRef | None = None


class JobState(enum.StrEnum):
    """Where a job is. ``done``, ``skipped``, ``dead`` and ``discarded`` are final."""

    PENDING = "pending"
    RUNNING = "running"
    #: Draft mode: the reply draft exists and awaits review; the job waits for the
    #: draft to be sent (``message.sent``) and looks at it every
    #: ``AUTOREPLY_DRAFT_CHECK_INTERVAL`` (``run_after``).
    DRAFTED = "drafted"
    DONE = "done"
    SKIPPED = "skipped"
    DEAD = "dead"
    #: Draft mode: the draft was deleted without being sent; the message stays unreplied.
    DISCARDED = "discarded"


#: The states a job ends in; it changes no more (``requeue`` aside, for dead ones).
FINAL_STATES = frozenset({JobState.DONE, JobState.SKIPPED, JobState.DEAD, JobState.DISCARDED})


class JobSource(enum.StrEnum):
    """What brought a job in: the ``jobs.source`` column.

    Both paths deduplicate on the same key, one job per ``(inbox_id, message_id)``, so a
    message has one job whichever path found it first; the source says which one did.
    """

    #: A webhook delivery (intake): the usual path.
    WEBHOOK = "webhook"
    #: The catch-up sweep, which lists an inbox's received messages and enqueues those
    #: that have no job (a webhook that never arrived, or arrived during an outage).
    SWEEP = "sweep"


class AttemptOutcome(enum.StrEnum):
    """How one attempt at a job ended: the ``outcome`` of the ``job_attempt`` log line
    and the label of ``autoreply_job_attempts_total`` (dashboards and alerts use these
    values)."""

    #: The reply is sent (now or by an earlier attempt) and the message relabelled.
    REPLIED = "replied"
    #: The policy or the reservation said not to answer.
    SKIPPED = "skipped"
    #: The message's grace period has not passed: the job waits in the queue until it
    #: does (``AUTOREPLY_REPLY_DELAY`` or a rule's ``delay``).
    DEFERRED = "deferred"
    #: ``AUTOREPLY_DRY_RUN``: decided and rendered, nothing sent or labelled.
    DRY_RUN = "dry_run"
    #: Dead-lettered: a permanent failure, or no retry left within the send window.
    DEAD = "dead"
    #: A transient failure; the job runs again later.
    RETRY = "retry"
    #: Another worker holds the job now; this attempt changed nothing more.
    LEASE_LOST = "lease_lost"
    #: The store could not be written; the lease runs out and the job is claimed again.
    STORE_UNAVAILABLE = "store_unavailable"
    #: Draft mode: the reply draft is created and awaits review.
    DRAFTED = "drafted"
    #: Draft mode: the draft still awaits review; looked at again later.
    WAITING = "waiting"
    #: Draft mode: the draft was deleted without being sent.
    DISCARDED = "discarded"
    #: The outcome until the attempt knows better (every path that ends it sets another).
    ERROR = "error"


class DeliveryOutcome(enum.StrEnum):
    """What intake did with one webhook delivery: the ``Autoreply-Outcome`` header, the
    ``outcome`` of its log line and the label of ``autoreply_deliveries_total``."""

    #: New: recorded with its job (202).
    ACCEPTED = "accepted"
    #: Seen before, as a delivery, an event or a message (200).
    DUPLICATE = "duplicate"
    #: Recorded or not, nothing to do: another event type or inbox (200).
    IGNORED = "ignored"
    #: Refused: unsigned, malformed, too large, too slow (4xx).
    REJECTED = "rejected"
    #: Not recorded; Svix should retry (503).
    UNAVAILABLE = "unavailable"


class FailureKind(enum.StrEnum):
    """Which kind of failure a job attempt met: the ``kind`` label of
    ``autoreply_replies_failed_total`` (dashboards and alerts use these values)."""

    #: Retried while attempts and the Idempotency-Key window last.
    TRANSIENT = "transient"
    #: Dead-lettered at once.
    PERMANENT = "permanent"


class SweepOutcome(enum.StrEnum):
    """How one catch-up sweep pass ended: the ``outcome`` of the ``sweep`` log line and
    the label of ``autoreply_sweep_runs_total`` (dashboards and alerts use these values)."""

    #: Every inbox in scope listed to the end.
    COMPLETED = "completed"
    #: An inbox or the inbox list could not be read, or the store failed.
    FAILED = "failed"
    #: Shutdown, or the sweep lease was taken over.
    INTERRUPTED = "interrupted"


class RegistrationState(enum.StrEnum):
    """Where the webhook registration is: the ``state`` of
    ``autoreply_webhook_registration`` (exactly one is 1)."""

    #: The webhook exists and matches what this service wants.
    REGISTERED = "registered"
    #: Registration has not finished its first attempt yet.
    PENDING = "pending"
    #: The last attempt failed; the service keeps retrying (``/readyz`` says why).
    FAILING = "failing"
    #: No ``AUTOREPLY_PUBLIC_URL``: the service does not register and verifies with the
    #: configured secret.
    MANUAL = "manual"


@dataclass(frozen=True, kw_only=True, slots=True)
class PreparedReply:
    """The reply exactly as it will be sent, stored before the first send.

    Every retry sends these same bytes under the same Idempotency-Key, so a retry
    after an unknown outcome can never become a second, different email.
    """

    to: str
    text: str
    html: str | None
    headers: dict[str, str]
    idempotency_key: str
    template: str
    rule: str | None
    #: ``send`` or ``draft`` (``handlers.modes``), fixed with the reply: a rules change
    #: after it was prepared does not turn a draft into a send or back.
    mode: str = "send"

    def to_json(self) -> str:
        """Serialise for the ``jobs.reply`` column."""
        return json.dumps(
            {
                "to": self.to,
                "text": self.text,
                "html": self.html,
                "headers": self.headers,
                "idempotency_key": self.idempotency_key,
                "template": self.template,
                "rule": self.rule,
                "mode": self.mode,
            },
            ensure_ascii=False,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> PreparedReply:
        """Inverse of ``to_json``."""
        data: dict[str, Any] = json.loads(text)
        return cls(
            to=data["to"],
            text=data["text"],
            html=data["html"],
            headers=dict(data["headers"]),
            idempotency_key=data["idempotency_key"],
            template=data["template"],
            rule=data["rule"],
            # Replies stored before draft mode existed were all sent at once.
            mode=data.get("mode", "send"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """One inbound message to answer (or skip), as claimed by a worker."""

    id: int
    inbox_id: str
    message_id: str
    event_id: str
    event_type: str
    #: The ``message`` object of the webhook event, as received.
    message_json: str
    state: JobState
    #: Claims so far, this one included.
    attempts: int
    created_at: float
    reply: PreparedReply | None
    #: When the reply was first prepared for sending: the Idempotency-Key's window
    #: cannot have started earlier.
    first_send_at: float | None
    sent_message_id: str | None
    #: Why the job is where it is: the skip reason, ``replied``, or the error.
    reason: str | None = None
    #: What brought the job in.
    source: JobSource = JobSource.WEBHOOK
    #: Draft mode: the id of the reply draft, once created.
    draft_id: str | None = None
    #: Draft mode: the id of a message a ``message.sent`` event reported in the job's
    #: thread while the draft awaited review (it may be the draft, sent).
    sent_hint: str | None = None
    #: The conversation the message belongs to.
    thread_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class JobSummary:
    """One job as ``autoreply status`` shows it."""

    inbox_id: str
    message_id: str
    state: JobState
    attempts: int
    reason: str | None
    last_error: str | None
    created_at: float
    updated_at: float
    first_send_at: float | None
    sent_message_id: str | None
    #: What brought the job in.
    source: JobSource = JobSource.WEBHOOK
    #: Draft mode: the id of the reply draft, once created.
    draft_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueStats:
    """Counts for ``/metrics``, ``/readyz`` and ``autoreply status``."""

    by_state: dict[str, int]
    #: When the oldest unfinished (pending or running) job fell due: its creation, or
    #: for a job waiting out a grace period the end of its delay (Unix seconds; may lie
    #: ahead when every unfinished job is still waiting). A delay is not a backlog.
    oldest_pending_created_at: float | None
    #: Entries of the suppression list by cause (``handlers.suppression.Cause``).
    suppressions: dict[str, int] = field(default_factory=dict)
    #: Pending jobs waiting out their grace period (``AUTOREPLY_REPLY_DELAY``, a rule's
    #: ``delay``) whose delay is not yet over at the moment ``Store.stats`` was asked for.
    waiting: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class Suppression:
    """One entry of the suppression list: mail from ``address`` to ``inbox_id`` (``*``:
    to any inbox) is not answered (``suppressed``) until the entry is removed."""

    inbox_id: str
    address: str
    #: ``bounce``, ``transient_bounces``, ``complaint`` or ``manual``.
    cause: str
    #: The bounce's or complaint's type, or the operator's ``--reason``.
    reason: str | None
    #: The reply of ours the bounce or complaint was about (None for manual entries).
    message_id: str | None
    created_at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class InboxSweep:
    """How far the catch-up sweep has come in one inbox, for ``autoreply status``."""

    inbox_id: str
    #: Received messages up to here are fully processed (Unix seconds).
    mark: float
    #: When a sweep last went through the whole inbox (None: none has yet).
    swept_at: float | None
    #: What that sweep found: ``scanned``, ``already_handled``, ``enqueued``, ``skipped``.
    findings: dict[str, int] | None
