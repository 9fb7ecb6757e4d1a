"""Verifying and parsing AgentMail's Svix-signed webhook deliveries.

The only module that imports ``svix``. Verification runs over the raw request bytes
(never re-serialised JSON) and turns every failure, including the ``ValueError`` and
``binascii.Error`` that ``svix`` raises for malformed signature headers, into
``RejectedDelivery`` with the HTTP status and a reason a sender can act on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from svix.webhooks import Webhook, WebhookVerificationError

from handlers.message import MESSAGE_RECEIVED, InboundMessage, PayloadError

_SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")


class RejectedDelivery(Exception):
    """The delivery is refused; ``status`` is the HTTP answer and ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, kw_only=True, slots=True)
class Delivery:
    """A verified delivery: who sent it (``svix_id``) and what it carries."""

    svix_id: str
    event_id: str
    event_type: str
    #: The parsed message of a ``message.received*`` event, else None (ignored events).
    message: InboundMessage | None
    #: The ``message`` object exactly as received, stored with the job.
    message_json: str | None


class Verifier:
    """Checks Svix signatures against one or more secrets (several during rotation)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is needed")
        self._webhooks = [Webhook(secret) for secret in secrets]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Return the ``svix-id`` of a correctly signed delivery, else raise 401/400."""
        wanted = {name: headers.get(name, "") for name in _SVIX_HEADERS}
        missing = [name for name, value in wanted.items() if not value]
        if missing:
            raise RejectedDelivery(401, f"missing header {missing[0]}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RejectedDelivery(400, "body is not UTF-8") from None
        problem = "signature does not match"
        for webhook in self._webhooks:
            try:
                webhook.verify(text, wanted)
            except WebhookVerificationError as exc:
                problem = _describe(str(exc))
            except (ValueError, TypeError):
                # svix raises these (binascii.Error is a ValueError) for signature
                # headers it cannot even parse: as much a forgery as a wrong one.
                problem = "malformed svix-signature"
            else:
                return wanted["svix-id"]
        raise RejectedDelivery(401, problem)


def _describe(message: str) -> str:
    lowered = message.lower()
    if "too old" in lowered:
        return "timestamp too old"
    if "too new" in lowered:
        return "timestamp too new"
    if "timestamp" in lowered:
        return "invalid svix-timestamp"
    return "signature does not match"


def parse_delivery(svix_id: str, body: bytes) -> Delivery:
    """Parse a verified body; a body the service cannot use is a 400 with the reason."""
    try:
        event = json.loads(body)
    except ValueError:
        raise RejectedDelivery(400, "body is not JSON") from None
    if not isinstance(event, dict):
        raise RejectedDelivery(400, "body is not a JSON object")
    event_id = _field(event, "event_id")
    event_type = _field(event, "event_type")
    if not event_type.startswith(MESSAGE_RECEIVED):
        return Delivery(
            svix_id=svix_id,
            event_id=event_id,
            event_type=event_type,
            message=None,
            message_json=None,
        )
    raw_message = event.get("message")
    if not isinstance(raw_message, dict):
        raise RejectedDelivery(400, f"{event_type} event without a message object")
    try:
        message = InboundMessage.from_payload(raw_message, event_type=event_type)
    except PayloadError as exc:
        raise RejectedDelivery(400, str(exc)) from None
    message_json = json.dumps(raw_message, ensure_ascii=False, separators=(",", ":"))
    _check_encodable(message_json)
    return Delivery(
        svix_id=svix_id,
        event_id=event_id,
        event_type=event_type,
        message=message,
        message_json=message_json,
    )


def _field(event: dict[str, Any], key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str) or not value:
        raise RejectedDelivery(400, f"{key} must be a non-empty string")
    _check_encodable(value)
    return value


def _check_encodable(text: str) -> None:
    # JSON's \ud800 escapes decode to lone surrogates, which no database can store.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RejectedDelivery(400, "body contains invalid unicode escapes") from None
