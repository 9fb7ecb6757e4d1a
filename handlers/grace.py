"""The grace period: when a delayed reply may be decided, and whether someone answered first.

With a delay (``AUTOREPLY_REPLY_DELAY`` or a rule's ``delay``), a message's job is not
decided before the message's received time plus the delay. Then the worker reads the
message's thread; a message *sent* in it after the inbound one (AgentMail labels every
outgoing message ``sent``) by anyone but this service means a person, or another agent,
answered first: the job is skipped ``answered_in_thread``.

Which sent messages are this service's own is not something the thread says (another
auto-responder's reply looks the same), so the worker asks the store (``OwnReplies``):
every reply this service sent is recorded on its job (``sent_message_id``). A reply on
its way has no recorded id yet (sent, its answer not yet written down), so a sent
message answering (``in_reply_to``) a message whose reply is on its way is counted as
that reply. The functions here are pure: they get the thread's messages and those ids.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from handlers.message import PayloadError

#: The skip reason of a job whose thread got an answer from someone else during its delay.
ANSWERED_IN_THREAD = "answered_in_thread"
#: The label AgentMail puts on every message sent from an inbox (by the API, the console,
#: a draft sent, another agent using the inbox).
SENT_LABEL = "sent"


_UNITS = (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1))


def format_delay(delay: timedelta) -> str:
    """``delay`` in the settings' duration syntax, in the largest unit that divides it:
    ``0``, ``90s``, ``10m``, ``36h``, ``2d``."""
    seconds = int(delay.total_seconds())
    if seconds <= 0:
        return "0"
    unit, size = next((u, n) for u, n in _UNITS if seconds % n == 0)
    return f"{seconds // size}{unit}"


def due_at(received: datetime, delay: timedelta) -> datetime:
    """When a message received at ``received`` may be decided, given its ``delay``."""
    return received + delay


@dataclass(frozen=True, kw_only=True, slots=True)
class ThreadMessage:
    """One message of a thread, with what the answered check needs."""

    message_id: str
    labels: frozenset[str]
    #: The message it answers, if any.
    in_reply_to: str | None = None

    @property
    def sent(self) -> bool:
        """Whether the inbox sent this message (rather than received it)."""
        return SENT_LABEL in self.labels

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> ThreadMessage:
        """From one item of a thread's ``messages`` (the SDK's ``Message`` JSON shape)."""
        message_id = data.get("message_id") if isinstance(data, Mapping) else None
        labels = data.get("labels") if isinstance(data, Mapping) else None
        if not isinstance(message_id, str) or not message_id:
            raise PayloadError("thread message: message_id must be a non-empty string")
        if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
            raise PayloadError("thread message: labels must be a list of strings")
        in_reply_to = data.get("in_reply_to")
        return cls(
            message_id=message_id,
            labels=frozenset(labels),
            in_reply_to=in_reply_to if isinstance(in_reply_to, str) else None,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class OwnReplies:
    """This service's replies in one thread, as its store knows them."""

    #: The ids of the replies sent (recorded on their jobs).
    sent: frozenset[str] = frozenset()
    #: The inbound messages whose reply is stored and may be going out right now: sent
    #: for all the service knows, its id not recorded yet.
    sending_to: frozenset[str] = frozenset()

    def includes(self, message: ThreadMessage) -> bool:
        """Whether ``message`` is one of these replies."""
        return message.message_id in self.sent or (
            message.in_reply_to is not None and message.in_reply_to in self.sending_to
        )


class Seen(enum.Enum):
    """What one page of a thread says about the inbound message's answers."""

    #: The inbound message is on the page: everything after it has been looked at.
    SETTLED = "settled"
    #: The inbound message is older than the page: the next, older page must be read
    #: too (unless an answer was found already).
    LOOK_OLDER = "look_older"


@dataclass(frozen=True, kw_only=True, slots=True)
class PageVerdict:
    """The sent messages after the inbound one on one page, and whether to read on."""

    #: The messages sent after the inbound one, oldest first: answers, unless they are
    #: this service's own replies.
    sent_after: tuple[ThreadMessage, ...]
    seen: Seen


def sent_after(inbound_id: str, page: Sequence[ThreadMessage]) -> PageVerdict:
    """The sent messages that come after ``inbound_id`` on ``page`` (ascending, as
    AgentMail returns a thread's messages).

    When the inbound message is not on the page, every message of the page is later than
    it (the first page holds the newest messages; older pages follow), so all of the
    page's sent messages count, and the caller reads the older page next.
    """
    for index, message in enumerate(page):
        if message.message_id == inbound_id:
            later = page[index + 1 :]
            return PageVerdict(sent_after=tuple(m for m in later if m.sent), seen=Seen.SETTLED)
    return PageVerdict(sent_after=tuple(m for m in page if m.sent), seen=Seen.LOOK_OLDER)


def first_answer(sent: Sequence[ThreadMessage], own: OwnReplies) -> str | None:
    """The id of the first of ``sent`` that is not one of this service's replies, if any."""
    return next((m.message_id for m in sent if not own.includes(m)), None)
