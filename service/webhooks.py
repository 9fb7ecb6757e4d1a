"""Verifying and parsing AgentMail's Svix-signed webhook deliveries.

The only module that imports ``svix``. Verification runs over the raw request bytes
(never re-serialised JSON) and turns every failure, including the ``ValueError`` and
``binascii.Error`` that ``svix`` raises for malformed signature headers, into
``RejectedDelivery`` with the HTTP status and a reason a sender can act on.

``svix`` decides every delivery but the plainly valid ones: those pass a shortcut
first (``_signed_plainly``), one HMAC in C over the raw bytes, which accepts only what
``svix`` would accept too. Anything else, from a wrong signature to a header svix reads
in its own way, goes to ``svix`` for the verdict and the reason. The shortcut exists
because the library's Python-level checks cost as much as a third of a delivery's time
on the webhook path under load (docs/benchmarks.md).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from svix.webhooks import Webhook, WebhookVerificationError

from handlers.message import MESSAGE_RECEIVED

_SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")
_SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not a secret
#: Svix's tolerance is five minutes either way; the shortcut stays a second inside it,
#: so it never accepts a timestamp that svix, with its own clock reading, would refuse.
_SHORTCUT_TOLERANCE = 299


class RejectedDelivery(Exception):
    """The delivery is refused; ``status`` is the HTTP answer and ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# Delivery and MessageRef are built once per request and never changed; they are not
# declared frozen only because a frozen dataclass's __init__ costs three times as much.


@dataclass(kw_only=True, slots=True)
class MessageRef:
    """Which message a ``message.received*`` event is about: the job's key."""

    inbox_id: str
    message_id: str
    thread_id: str


@dataclass(kw_only=True, slots=True)
class Delivery:
    """A verified delivery: who sent it (``svix_id``) and what it carries."""

    svix_id: str
    event_id: str
    event_type: str
    #: The message of a ``message.received*`` event, else None (ignored events).
    message: MessageRef | None
    #: The event's ``message`` object, stored with the job; the worker parses it
    #: in full (intake checks only what the job's key needs, to stay fast).
    message_json: str | None


class Verifier:
    """Checks Svix signatures against one or more secrets (several during rotation)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is needed")
        self._webhooks = [Webhook(secret) for secret in secrets]
        # Keyed once: copying a keyed HMAC costs less than keying one per delivery.
        self._macs = [hmac.new(key, digestmod="sha256") for key in map(_secret_key, secrets) if key]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Return the ``svix-id`` of a correctly signed delivery, else raise 401/400."""
        svix_id = headers.get("svix-id", "")
        timestamp = headers.get("svix-timestamp", "")
        signatures = headers.get("svix-signature", "")
        if not (svix_id and timestamp and signatures):
            missing = next(name for name in _SVIX_HEADERS if not headers.get(name))
            raise RejectedDelivery(401, f"missing header {missing}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RejectedDelivery(400, "body is not UTF-8") from None
        if _signed_plainly(self._macs, body, svix_id, timestamp, signatures):
            return svix_id
        wanted = {"svix-id": svix_id, "svix-timestamp": timestamp, "svix-signature": signatures}
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


def _secret_key(secret: str) -> bytes | None:
    """The HMAC key of a ``whsec_`` secret, decoded as svix decodes it (None if it cannot
    be: such a secret is left to svix alone)."""
    try:
        return base64.b64decode(secret.removeprefix(_SECRET_PREFIX) + "==")
    except (binascii.Error, ValueError):
        return None


def _signed_plainly(
    macs: Sequence[hmac.HMAC], body: bytes, svix_id: str, timestamp: str, signatures: str
) -> bool:
    """True when the headers are in their ordinary form and one ``v1`` signature is the
    HMAC-SHA256 of ``{svix-id}.{svix-timestamp}.{body}``: exactly what svix accepts.

    False means "ask svix", never "forged": a fractional timestamp, a signature list svix
    would refuse to read, or no match all get svix's own verdict and reason.
    """
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs(time.time() - int(timestamp)) > _SHORTCUT_TOLERANCE:
        return False
    candidates = []
    for entry in signatures.split(" "):
        parts = entry.split(",")
        if len(parts) != 2:  # svix refuses the whole header then
            return False
        if parts[0] == "v1":
            try:
                candidates.append(base64.b64decode(parts[1]))
            except (binascii.Error, ValueError):
                return False
    prefix = f"{svix_id}.{timestamp}.".encode()
    for keyed in macs:
        mac = keyed.copy()
        mac.update(prefix)
        mac.update(body)
        expected = mac.digest()
        for candidate in candidates:
            if hmac.compare_digest(expected, candidate):
                return True
    return False


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
        # orjson also refuses JSON escapes of lone surrogates, which no database
        # could store.
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
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
    message = event.get("message")
    if not isinstance(message, dict):
        raise RejectedDelivery(400, f"{event_type} event without a message object")
    ref = MessageRef(
        inbox_id=_field(message, "inbox_id", "message."),
        message_id=_field(message, "message_id", "message."),
        thread_id=_field(message, "thread_id", "message."),
    )
    return Delivery(
        svix_id=svix_id,
        event_id=event_id,
        event_type=event_type,
        message=ref,
        message_json=orjson.dumps(message).decode(),
    )


def _field(data: dict[str, Any], key: str, prefix: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise RejectedDelivery(400, f"{prefix}{key} must be a non-empty string")
    return value
