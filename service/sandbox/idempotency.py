"""``Idempotency-Key`` handling for send, reply and reply-all, as AgentMail documents it.

* same key, same request: the original ``{message_id, thread_id}`` again, no new email;
* same key, different request (content, inbox, endpoint or target message): 409;
* same key while the first request is still in flight: 409;
* empty key: 400; malformed key (outside ``A-Za-z0-9-._~`` or over 256): 400;
* keys are org-wide and expire 24 h after the send completed (sandbox clock);
* a request that fails before sending releases its key, so it can be retried.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.sandbox.clock import Clock
from service.sandbox.errors import ApiError, FieldError, conflict, invalid
from service.sandbox.validation import TOKEN_RE

KEY_TTL = timedelta(hours=24)
HEADER = "Idempotency-Key"


def check_key(raw: str | None) -> str | None:
    """Validate the header value; None when the header was not sent."""
    if raw is None:
        return None
    if raw == "":
        raise ApiError(
            400,
            "Idempotency-Key must not be empty",
            "validation_error",
            [FieldError(HEADER, "must not be empty")],
        )
    if not TOKEN_RE.match(raw):
        raise invalid(HEADER, "must be 1-256 characters from A-Z a-z 0-9 - . _ ~")
    return raw


def fingerprint(operation: str, inbox_id: str, target: str | None, body: Any) -> str:
    """A digest of what makes two requests "the same": endpoint, inbox, target and body.

    Top-level nulls are dropped first: the SDK sends an explicit ``null`` for an argument
    given as None, which means the same as leaving it out.
    """
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if v is not None}
    canonical = json.dumps(
        {"operation": operation, "inbox_id": inbox_id, "target": target, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class _Entry:
    fingerprint: str
    result: dict[str, str] | None = None
    completed_at: datetime | None = None


class IdempotencyStore:
    """Keys in flight and completed keys with their original results."""

    def __init__(self, clock: Clock, ttl: timedelta = KEY_TTL) -> None:
        self._clock = clock
        self._ttl = ttl
        self._entries: dict[str, _Entry] = {}

    def begin(self, key: str, digest: str) -> dict[str, str] | None:
        """Reserve ``key`` for this request, or return the result to replay.

        Raises a 409 when the key is in flight or was used for a different request.
        Returns None when the caller now holds the key and must :meth:`complete` or
        :meth:`release` it.
        """
        entry = self._entries.get(key)
        expired = (
            entry is not None
            and entry.completed_at is not None
            and self._clock.now() >= entry.completed_at + self._ttl
        )
        if expired:
            entry = None
            del self._entries[key]
        if entry is None:
            self._entries[key] = _Entry(digest)
            return None
        if entry.result is None:
            raise conflict(
                "A request with this Idempotency-Key is still in progress; retry it shortly"
            )
        if entry.fingerprint != digest:
            raise conflict("This Idempotency-Key was already used for a different request")
        return dict(entry.result)

    def complete(self, key: str, result: dict[str, str]) -> None:
        """Record the send's result; the key now replays it until it expires."""
        entry = self._entries[key]
        entry.result = dict(result)
        entry.completed_at = self._clock.now()

    def release(self, key: str) -> None:
        """Forget a key whose request failed before sending anything."""
        entry = self._entries.get(key)
        if entry is not None and entry.result is None:
            del self._entries[key]

    def clear(self) -> None:
        """Forget every key."""
        self._entries.clear()
