"""Prometheus metrics: counters shared by intake and the workers, and their exposition.

Counters and the latency histogram are process-wide and updated where things happen.
What describes the queue (jobs by state, those waiting out a grace period, age of the
oldest unfinished job) and the webhook registration is read at scrape time instead, so
every replica reports the shared queue as it is now, not as it last saw it: ``GET
/metrics`` (``service.app``) reads them from the store and the runtime and hands them to
``exposition``. This module knows neither, so the worker and intake can import it without
the rest of the service.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from handlers.suppression import Cause
from service.models import JobState, QueueStats, RegistrationState

DELIVERIES = Counter(
    "autoreply_deliveries_total",
    "Webhook deliveries by outcome and HTTP status.",
    ["outcome", "status"],
)
#: Labelled with ``service.models.AttemptOutcome``.
JOB_ATTEMPTS = Counter("autoreply_job_attempts_total", "Job attempts by outcome.", ["outcome"])
REPLIES_SENT = Counter("autoreply_replies_sent_total", "Auto-replies sent.")
DRAFTS_CREATED = Counter(
    "autoreply_drafts_created_total", "Reply drafts created for review (draft mode)."
)
DRAFTS_DISCARDED = Counter(
    "autoreply_drafts_discarded_total", "Reply drafts deleted without being sent (draft mode)."
)
REPLIES_SKIPPED = Counter(
    "autoreply_replies_skipped_total", "Messages not answered, by policy reason.", ["reason"]
)
#: Labelled with ``service.models.FailureKind``.
REPLIES_FAILED = Counter(
    "autoreply_replies_failed_total",
    "Job attempts that failed (AgentMail error, timeout, template error), by kind: "
    "transient ones are retried while attempts and the Idempotency-Key window last, "
    "permanent ones are dead-lettered at once.",
    ["kind"],
)
REPLIES_DEAD = Counter(
    "autoreply_replies_dead_lettered_total", "Jobs moved to the dead-letter state."
)
REPLY_LATENCY = Histogram(
    "autoreply_delivery_to_reply_seconds",
    "From recording the delivery to the reply being sent.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400),
)

#: Addresses put on the suppression list by a bounce or complaint about one of our
#: replies, by cause (``bounce``, ``transient_bounces``, ``complaint``). The list itself,
#: manual entries included, is ``autoreply_suppressions`` (read at scrape time).
SUPPRESSIONS_ADDED = Counter(
    "autoreply_suppressions_added_total",
    "Addresses suppressed by a bounce or complaint about one of our replies, by cause.",
    ["cause"],
)

#: The catch-up sweep (``service.sweep``), labelled with ``service.models.SweepOutcome``.
SWEEP_RUNS = Counter("autoreply_sweep_runs_total", "Catch-up sweep passes by outcome.", ["outcome"])
SWEEP_SCANNED = Counter(
    "autoreply_sweep_messages_scanned_total", "Received messages listed by the catch-up sweep."
)
SWEEP_ENQUEUED = Counter(
    "autoreply_sweep_jobs_enqueued_total",
    "Jobs the catch-up sweep created: messages no webhook delivered (normally 0).",
)
#: Labelled by inbox id: configuration (``AUTOREPLY_INBOX_IDS``) or the account's own
#: inboxes, never a value from a request.
SWEEP_LAST_SUCCESS = Gauge(
    "autoreply_sweep_last_success_timestamp_seconds",
    "When this process last swept the inbox to the end (Unix time).",
    ["inbox_id"],
)


def exposition(
    *, accept: str, stats: QueueStats | None, registration: RegistrationState, now: float
) -> tuple[bytes, str]:
    """Every metric, encoded as ``accept`` asks: the body and its Content-Type.

    ``stats`` is the queue as the store reported it for this scrape (None when it did
    not answer: ``autoreply_store_up`` is then 0 and the queue gauges are left out).
    """
    encode, content_type = choose_encoder(accept)
    snapshot = _Snapshot(stats=stats, now=now, registration=registration)
    return encode(_Combined((REGISTRY, snapshot))), content_type


class _Snapshot(Collector):
    """The gauges computed at scrape time."""

    def __init__(
        self, *, stats: QueueStats | None, now: float, registration: RegistrationState
    ) -> None:
        self.stats = stats
        self.now = now
        self.registration = registration

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("autoreply_store_up", "1 if the store answered this scrape, else 0.")
        up.add_metric([], 0.0 if self.stats is None else 1.0)
        yield up
        if self.stats is not None:
            jobs = GaugeMetricFamily(
                "autoreply_jobs",
                "Jobs by state (pending and running are the queue; dead are dead letters).",
                labels=["state"],
            )
            for state in JobState:
                jobs.add_metric([state.value], float(self.stats.by_state.get(state.value, 0)))
            yield jobs
            waiting = GaugeMetricFamily(
                "autoreply_jobs_waiting",
                "Pending jobs waiting out a grace period (AUTOREPLY_REPLY_DELAY, a rule's "
                'delay), not yet due; counted in autoreply_jobs{state="pending"} too.',
            )
            waiting.add_metric([], float(self.stats.waiting))
            yield waiting
            oldest = self.stats.oldest_pending_created_at
            age = GaugeMetricFamily(
                "autoreply_oldest_pending_job_age_seconds",
                "Age of the oldest job not yet finished (pending or running), from when it "
                "fell due (the end of its grace period, if it has one); 0 when none.",
            )
            age.add_metric([], 0.0 if oldest is None else max(0.0, self.now - oldest))
            yield age
            suppressions = GaugeMetricFamily(
                "autoreply_suppressions",
                "Entries of the suppression list by cause (bounce, transient_bounces, "
                "complaint, manual).",
                labels=["cause"],
            )
            for cause in Cause:
                count = self.stats.suppressions.get(cause.value, 0)
                suppressions.add_metric([cause.value], float(count))
            yield suppressions
        registration = GaugeMetricFamily(
            "autoreply_webhook_registration",
            "Webhook registration state: 1 for the current state, 0 for the others.",
            labels=["state"],
        )
        for name in RegistrationState:
            registration.add_metric([name.value], 1.0 if name is self.registration else 0.0)
        yield registration


class _Combined(Collector):
    """Several collectors as one, so one encoder call renders them all."""

    def __init__(self, parts: Iterable[Collector]) -> None:
        self.parts = tuple(parts)

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()
