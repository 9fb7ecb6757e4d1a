"""Prometheus metrics, defined once and shared by intake and the workers."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DELIVERIES = Counter(
    "autoreply_deliveries_total",
    "Webhook deliveries by outcome and HTTP status.",
    ["outcome", "status"],
)
JOB_ATTEMPTS = Counter("autoreply_job_attempts_total", "Job attempts by outcome.", ["outcome"])
REPLIES_SENT = Counter("autoreply_replies_sent_total", "Auto-replies sent.")
REPLIES_SKIPPED = Counter(
    "autoreply_replies_skipped_total", "Messages not answered, by policy reason.", ["reason"]
)
REPLIES_DEAD = Counter(
    "autoreply_replies_dead_lettered_total", "Jobs moved to the dead-letter state."
)
REPLY_LATENCY = Histogram(
    "autoreply_delivery_to_reply_seconds",
    "From recording the delivery to the reply being sent.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400),
)
