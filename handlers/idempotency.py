"""The Idempotency-Key of a message's auto-reply and the client_id of its draft, derived so
every retry (and every replica) reuses them."""

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


DRAFT_PREFIX = "autoreply-draft-"


def draft_client_id(inbox_id: str, message_id: str) -> str:
    """The ``client_id`` of the reply draft to ``message_id`` in ``inbox_id``.

    Derived like :func:`reply_key` (a ``client_id`` takes the same characters, no
    ``@``), under its own prefix because AgentMail asks not to reuse a ``client_id``
    across resource types: a retry, or another replica, creating the draft again gets
    the same draft back instead of a second one.
    """
    digest = hashlib.sha256(f"{inbox_id}\n{message_id}".encode()).hexdigest()
    return DRAFT_PREFIX + digest


DRAFT_SEND_PREFIX = "autoreply-draft-send-"


def draft_send_key(inbox_id: str, draft_id: str) -> str:
    """The Idempotency-Key ``autoreply drafts send`` sends a draft under: the same for
    every run, so sending a draft twice (two operators, a retried command) sends once."""
    digest = hashlib.sha256(f"{inbox_id}\n{draft_id}".encode()).hexdigest()
    return DRAFT_SEND_PREFIX + digest
