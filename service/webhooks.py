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
on the webhook path under load (docs/benchmarks.md). The differential test in
tests/service/test_verifier_differential.py holds the two verdicts equal.

Secrets are read more strictly than ``svix`` reads them (``handlers.secrets``): ``svix``
decodes base64 leniently, silently dropping a mistyped character and accepting a key of
a single byte; a verifier here refuses to exist with such a secret instead.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import orjson
from svix.webhooks import Webhook, WebhookVerificationError

from handlers.events import (
    FEEDBACK_EVENT_TYPES,
    MESSAGE_BOUNCED,
    MESSAGE_COMPLAINED,
    MESSAGE_SENT,
    is_received,
)
from handlers.secrets import secret_key
from handlers.suppression import bare_address, feedback_kind
from service.models import Delivery, Feedback, MessageRef, SentRef

_SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")
#: Svix's tolerance is five minutes either way; the shortcut stays a second inside it,
#: so it never accepts a timestamp that svix, with its own clock reading, would refuse.
_SHORTCUT_TOLERANCE = 299
#: The longest timestamp the shortcut reads: 11 digits reach the year 5138. Longer ones
#: (and the 400-digit kind that overflowed a float) go to svix, which refuses them.
_SHORTCUT_DIGITS = 11


class RejectedDelivery(Exception):
    """The delivery is refused; ``status`` is the HTTP answer and ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Verifier:
    """Checks Svix signatures against one or more secrets (several during rotation)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        """Raise ``ValueError`` (saying why, never showing the secret) unless every one
        of ``secrets`` passes ``secret_key``: no delivery is ever checked with a key
        that a typo or a placeholder made."""
        if not secrets:
            raise ValueError("at least one webhook secret is needed")
        keys = []
        for number, secret in enumerate(secrets, 1):
            try:
                keys.append(secret_key(secret))
            except ValueError as exc:
                which = f"secret {number} of {len(secrets)}" if len(secrets) > 1 else "secret"
                raise ValueError(f"{which} {exc}") from None
        self._webhooks = [Webhook(secret) for secret in secrets]
        # Keyed once: copying a keyed HMAC costs less than keying one per delivery.
        self._macs = [hmac.new(key, digestmod="sha256") for key in keys]

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
            except Exception:  # noqa: BLE001 - whatever svix raises, it did not accept
                # svix raises ValueError (binascii.Error is one) for signature headers it
                # cannot even parse, UnicodeEncodeError for an svix-id it cannot encode:
                # as much a forgery as a wrong signature, and never a 500.
                problem = "malformed svix-signature"
            else:
                return wanted["svix-id"]
        raise RejectedDelivery(401, problem)


def _signed_plainly(
    macs: Sequence[hmac.HMAC], body: bytes, svix_id: str, timestamp: str, signatures: str
) -> bool:
    """True when the headers are in their ordinary form and one ``v1`` signature is the
    HMAC-SHA256 of ``{svix-id}.{svix-timestamp}.{body}``: exactly what svix accepts.

    False means "ask svix", never "forged": a timestamp not written as svix writes it
    (fractional, signed, zero-padded, non-ASCII, hundreds of digits), a signature list
    svix would refuse to read, an svix-id that is not UTF-8, or no match all get svix's
    own verdict and reason. Nothing here raises.
    """
    # svix signs ``str(int(float(header)))``: only a header that is already that string
    # (ASCII digits, no leading zero, short enough for a float) is signed as it reads.
    if not (
        0 < len(timestamp) <= _SHORTCUT_DIGITS
        and timestamp.isascii()
        and timestamp.isdigit()
        and timestamp[0] != "0"
    ):
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
    try:
        prefix = f"{svix_id}.{timestamp}.".encode()
    except UnicodeEncodeError:  # a lone surrogate: svix cannot encode it either
        return False
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
    """A reason a sender can act on, from svix's message."""
    lowered = message.lower()
    if "too old" in lowered:
        return "timestamp too old"
    if "too new" in lowered:
        return "timestamp too new"
    # svix says "Invalid Signature Headers" only when it cannot read the timestamp.
    if "timestamp" in lowered or "invalid signature headers" in lowered:
        return "invalid svix-timestamp"
    return "signature does not match"


def parse_delivery(
    svix_id: str, body: bytes, *, acted_on: Collection[str] = FEEDBACK_EVENT_TYPES
) -> Delivery:
    """Parse a verified body and route it by its event type; a body the service cannot
    use is a 400 with the reason.

    ``message.received*`` events always carry the message that becomes a job. Of the
    other types, those in ``acted_on`` (the configuration's: see
    ``service.registration.event_types``) are parsed for what the service does with
    them: ``message.bounced`` and ``message.complained`` into ``Delivery.feedback``.
    Anything else comes back with neither, to be recorded and answered ``ignored``.
    A new type the service acts on gets its parser in ``_PARSERS``.
    """
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
    delivery = Delivery(
        svix_id=svix_id, event_id=event_id, event_type=event_type, message=None, message_json=None
    )
    if is_received(event_type):
        _received(delivery, event)
    elif event_type in acted_on and (parser := _PARSERS.get(event_type)) is not None:
        parser(delivery, event)
    return delivery


def _received(delivery: Delivery, event: dict[str, Any]) -> None:
    """``message.received*``: the job's key and the message object to store with it."""
    message = event.get("message")
    if not isinstance(message, dict):
        raise RejectedDelivery(400, f"{delivery.event_type} event without a message object")
    delivery.message = MessageRef(
        inbox_id=_field(message, "inbox_id", "message."),
        message_id=_field(message, "message_id", "message."),
        thread_id=_field(message, "thread_id", "message."),
    )
    delivery.message_json = orjson.dumps(message).decode()


#: Bounced recipients are ``{address, status}`` objects, complained ones plain strings.
_FEEDBACK_OBJECTS = {MESSAGE_BOUNCED: "bounce", MESSAGE_COMPLAINED: "complaint"}


def _feedback(delivery: Delivery, event: dict[str, Any]) -> None:
    """``message.bounced`` / ``message.complained``: what the suppression list needs."""
    name = _FEEDBACK_OBJECTS[delivery.event_type]
    data = event.get(name)
    if not isinstance(data, dict):
        raise RejectedDelivery(400, f"{delivery.event_type} event without a {name} object")
    prefix = f"{name}."
    type_ = data.get("type")
    if not isinstance(type_, str):
        raise RejectedDelivery(400, f"{prefix}type must be a string")
    sub_type = data.get("sub_type")
    raw = data.get("recipients")
    if not isinstance(raw, list):
        raise RejectedDelivery(400, f"{prefix}recipients must be a list")
    recipients: list[str] = []
    for entry in raw:
        address = entry.get("address") if isinstance(entry, dict) else entry
        if not isinstance(address, str):
            raise RejectedDelivery(400, f"{prefix}recipients holds something not an address")
        # Only compared with the address our reply went to (the store keeps that one);
        # one that is no address at all is left out, as if unnamed.
        if "@" in (bare := bare_address(address)):
            recipients.append(bare)
    detail = _detail(type_)
    if isinstance(sub_type, str) and sub_type:
        detail = f"{detail}/{_detail(sub_type)}"
    delivery.feedback = Feedback(
        inbox_id=_field(data, "inbox_id", prefix),
        message_id=_field(data, "message_id", prefix),
        kind=feedback_kind(delivery.event_type, type_),
        recipients=tuple(dict.fromkeys(recipients)),
        detail=detail,
        thread_id=_optional_field(data, "thread_id"),
    )


#: Characters kept of a bounce's or complaint's ``type`` and ``sub_type``: AgentMail's
#: are words (``Permanent``, ``General``, ``abuse``); what a remote reporter writes is
#: stored with the feedback, the suppression and every skip it causes, so it is bounded.
MAX_DETAIL_CHARS = 64


def _detail(text: str) -> str:
    """A ``type`` or ``sub_type`` as recorded: at most :data:`MAX_DETAIL_CHARS`
    characters, anything unprintable (a terminal escape for whoever runs
    ``suppressions list``) shown as ``?``."""
    clipped = text[:MAX_DETAIL_CHARS]
    if clipped.isprintable():
        return clipped
    return "".join(c if c.isprintable() else "?" for c in clipped)


def _sent(delivery: Delivery, event: dict[str, Any]) -> None:
    """``message.sent``: which message an inbox sent, in which thread (draft mode)."""
    data = event.get("send")
    if not isinstance(data, dict):
        raise RejectedDelivery(400, f"{delivery.event_type} event without a send object")
    delivery.sent = SentRef(
        inbox_id=_field(data, "inbox_id", "send."),
        thread_id=_field(data, "thread_id", "send."),
        message_id=_field(data, "message_id", "send."),
    )


_PARSERS: dict[str, Callable[[Delivery, dict[str, Any]], None]] = {
    MESSAGE_BOUNCED: _feedback,
    MESSAGE_COMPLAINED: _feedback,
    MESSAGE_SENT: _sent,
}


def _optional_field(data: dict[str, Any], key: str) -> str | None:
    """``data[key]`` if it is a usable id (a non-empty string without NUL), else None."""
    value = data.get(key)
    if isinstance(value, str) and value and "\x00" not in value:
        return value
    return None


def _field(data: dict[str, Any], key: str, prefix: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise RejectedDelivery(400, f"{prefix}{key} must be a non-empty string")
    if "\x00" in value:
        # PostgreSQL cannot store or even compare it: a 503 that Svix retries forever.
        raise RejectedDelivery(400, f"{prefix}{key} must not contain NUL")
    return value
