"""The Idempotency-Key of a message's auto-reply, derived so every retry reuses it."""

from __future__ import annotations

import hashlib

PREFIX = "autoreply-"


def reply_key(inbox_id: str, message_id: str) -> str:
    """A stable key for the reply to ``message_id`` in ``inbox_id``.

    Message-IDs contain ``<``, ``>`` and ``@``, which keys may not (1-256 of
    ``A-Z a-z 0-9 - . _ ~``), so the pair is hashed. The separator cannot occur in
    an inbox id, so different pairs never hash the same input.
    """
    digest = hashlib.sha256(f"{inbox_id}\n{message_id}".encode()).hexdigest()
    return PREFIX + digest
