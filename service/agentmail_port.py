"""What the worker needs from AgentMail: the ``AgentMailPort`` protocol and ``ApiFailure``.

The worker's steps are decided here in the service; AgentMail only answers four calls
(the fourth, reading a thread, only for messages with a grace period or in draft mode),
and two more in draft mode (create a reply draft, see whether it is still there).
The catch-up sweep (``service.sweep``) needs two more, listing calls, named apart in
``SweepPort`` so the worker's port stays its three calls.
Naming those calls as a protocol lets the worker run against anything that answers
them: ``service.agentmail_api.AgentMailApi`` (the SDK adapter) in the service, and a
recording fake in the worker's unit tests. This module imports no SDK, so neither the
worker nor those tests load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from service.models import PreparedReply


class ApiFailure(Exception):
    """A call to AgentMail failed; ``transient`` says whether trying again can help.

    ``status`` is the HTTP status when AgentMail answered (None for a transport error or
    a timeout); ``retry_after`` is its ``Retry-After`` in seconds, if it sent one.
    """

    def __init__(
        self,
        reason: str,
        *,
        transient: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.status = status
        self.retry_after = retry_after


def is_transient(status: int | None) -> bool:
    """Whether a call that failed with HTTP ``status`` (None: no answer) may succeed when
    tried again: timeouts, conflicts (409: the same Idempotency-Key still in flight),
    rate limits and server errors. Other 4xx will fail the same way every time."""
    return status is None or status in (408, 409, 425, 429) or status >= 500


class AgentMailPort(Protocol):
    """The AgentMail calls one job makes. Every failure is raised as ``ApiFailure``."""

    async def get_message(self, inbox_id: str, message_id: str) -> dict[str, Any]:
        """The full message, in the webhook payload's JSON shape."""
        ...

    async def update_labels(
        self,
        inbox_id: str,
        message_id: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
    ) -> list[str]:
        """One atomic label change; returns the message's labels after it."""
        ...

    async def reply(self, inbox_id: str, message_id: str, reply: PreparedReply) -> str:
        """Send ``reply`` to the sender only, under ``reply.idempotency_key``; return the
        sent message's id (the original one when the key was used before)."""
        ...

    async def get_thread(
        self, inbox_id: str, thread_id: str, *, page_token: str | None = None
    ) -> ThreadPage:
        """One page of a thread's messages: the newest first page, then older ones."""
        ...

    async def create_draft(
        self, inbox_id: str, message_id: str, reply: PreparedReply, *, client_id: str
    ) -> str:
        """Create ``reply`` as a reply draft to ``message_id``, to the sender only, under
        ``client_id``; return the draft's id (the existing draft's when ``client_id`` was
        used before and that draft still exists)."""
        ...

    async def draft_exists(self, inbox_id: str, draft_id: str) -> bool:
        """Whether the draft is still there (False once it was sent or deleted: 404)."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class ThreadPage:
    """One page of a thread (``GET .../threads/{thread_id}``).

    ``messages`` are in the SDK's ``Message`` JSON shape, ordered by timestamp ascending;
    the first page holds the newest messages and ``next_page_token`` (None on the last
    page) leads to older ones.
    """

    messages: list[dict[str, Any]]
    next_page_token: str | None


#: The label AgentMail puts on every inbound message (sent ones carry ``sent``): the
#: sweep lists only these.
RECEIVED_LABEL = "received"
#: The label AgentMail puts on every message an inbox sent.
SENT_LABEL = "sent"


@dataclass(frozen=True, kw_only=True, slots=True)
class MessagePage:
    """One page of an inbox's received messages, oldest first.

    ``messages`` are the list's items in the webhook payload's JSON shape (``from``,
    ``timestamp`` as ISO-8601, ``labels``...), without the body: the worker fetches the
    full message before deciding. ``next_page_token`` is None on the last page.
    """

    messages: list[dict[str, Any]]
    next_page_token: str | None


class SweepPort(Protocol):
    """The AgentMail calls the catch-up sweep makes. Every failure is ``ApiFailure``."""

    async def list_inbox_ids(self) -> list[str]:
        """Every inbox of the account (all pages)."""
        ...

    async def list_received(
        self, inbox_id: str, *, after: datetime, limit: int, page_token: str | None = None
    ) -> MessagePage:
        """One page of ``inbox_id``'s received messages with a timestamp after ``after``
        (exclusive), oldest first, at most ``limit``; ``page_token`` continues a listing."""
        ...
