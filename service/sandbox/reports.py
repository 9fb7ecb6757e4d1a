"""JSON shapes of the admin API (``/_sandbox/…``), shared by the server and its clients."""

from __future__ import annotations

from typing import TypedDict

SentEmail = TypedDict(
    "SentEmail",
    {
        "operation": str,
        "inbox_id": str,
        "message_id": str,
        "thread_id": str,
        "from": str,
        "to": list[str],
        "cc": list[str],
        "bcc": list[str],
        "reply_to": list[str],
        "subject": str | None,
        "text": str | None,
        "html": str | None,
        "headers": dict[str, str],
        "labels": list[str],
        "in_reply_to": str | None,
        "references": list[str],
        "idempotency_key": str | None,
        "draft_id": str | None,
        "at": str,
    },
)
"""One email the sandbox actually sent (an Idempotency-Key replay is not a send);
``draft_id`` names the draft it was sent from, if any."""


class LabelChange(TypedDict):
    """One successful ``PATCH …/messages/{id}``."""

    inbox_id: str
    message_id: str
    added: list[str]
    removed: list[str]
    labels_after: list[str]
    at: str


class AttemptReport(TypedDict):
    """One HTTP attempt of a delivery; ``status`` is None when no response came back."""

    at: str
    status: int | None
    error: str | None
    duration_ms: float


class DeliveryRef(TypedDict):
    """The handle on one delivery returned by inject and redeliver."""

    delivery_id: str
    svix_id: str
    webhook_id: str


class DeliveryReport(TypedDict):
    """One delivery of one event to one webhook, with every attempt so far.

    ``state`` is ``pending`` (attempts remain), ``succeeded``, ``failed`` (all 8 attempts
    failed) or ``cancelled`` (reset, shutdown, or the webhook was deleted or disabled).
    """

    delivery_id: str
    svix_id: str
    event_id: str
    event_type: str
    webhook_id: str
    url: str
    inbox_id: str | None
    message_id: str | None
    state: str
    attempts: list[AttemptReport]
    created_at: str


class InjectResult(TypedDict):
    """What ``POST /_sandbox/inbound`` created."""

    message_id: str
    thread_id: str
    inbox_id: str
    event_id: str
    deliveries: list[DeliveryRef]


class FeedbackResult(TypedDict):
    """What ``POST /_sandbox/bounce`` or ``POST /_sandbox/complaint`` fired."""

    event_id: str
    event_type: str
    message_id: str
    recipients: list[str]
    deliveries: list[DeliveryRef]


class PersonReply(TypedDict):
    """What ``POST /_sandbox/reply`` sent: a reply from the inbox in the thread."""

    message_id: str
    thread_id: str
    inbox_id: str
    #: The message it answers.
    in_reply_to: str


class RedeliverResult(TypedDict):
    """What ``POST /_sandbox/deliveries/{id}/redeliver`` created."""

    event_id: str
    deliveries: list[DeliveryRef]


class FaultReport(TypedDict):
    """An installed fault and how often it has fired."""

    fault_id: str
    operation: str
    status: int | None
    rate: float
    times: int | None
    retry_after: int | None
    latency_ms: int
    after_send: bool
    fired: int


class RequestsReport(TypedDict):
    """API calls so far: per operation, how many ended with each status, and how many run now."""

    operations: dict[str, dict[str, int]]
    in_flight: dict[str, int]


class ClockReport(TypedDict):
    """The sandbox clock: its time now and how far it is from the wall clock."""

    now: str
    offset_seconds: float


class WebhookReport(TypedDict, total=False):
    """A webhook as ``GET /_sandbox/webhooks`` shows it: the SDK ``Webhook`` fields plus
    ``dropping`` and ``drop_until`` (None while dropping means until cleared)."""

    webhook_id: str
    url: str
    event_types: list[str]
    inbox_ids: list[str]
    pod_ids: list[str]
    inbox_id: str
    secret: str
    enabled: bool
    client_id: str
    created_at: str
    updated_at: str
    dropping: bool
    drop_until: str | None
