"""The catch-up sweep's decisions: where a listing starts, what to enqueue, how far the
mark moves, and what ``autoreply sweep --since`` means.

The sweep (``service.sweep``) lists each inbox's received messages at AgentMail and
enqueues a job for those that have none, so a message whose webhook never arrived is
still answered. Its state per inbox is a **mark** (Unix seconds): how far it has fully
processed that inbox. These functions are pure, so every rule is tested without I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from handlers.policy import BAD_LABELS, parse_duration

#: How far before the mark each listing starts. A message can become listable after
#: messages with later timestamps were already listed: its ``timestamp`` is when it
#: was received, but it is stored and indexed later (spam and authentication checks,
#: large attachments, replication behind the list). Listing ``mark - OVERLAP`` again
#: finds such a message if it became listable within ten minutes of its timestamp; what
#: was listed before costs one deduplicated lookup each (its job exists). Ten minutes is
#: far beyond the seconds such delays take, and at the default interval (10 minutes) a
#: sweep lists about two intervals of mail, a few pages for a busy inbox.
OVERLAP = timedelta(minutes=10)

#: Messages per list call: the API's cap for filtered lists, and a bounded page.
PAGE_SIZE = 100


class Finding(enum.StrEnum):
    """What the sweep makes of one listed message."""

    #: Has no visible sign of being handled: enqueue it (deduplicated: a message that
    #: already has a job, from its webhook or an earlier sweep, gets no second one).
    ENQUEUE = "enqueue"
    #: Labelled replied, spam, blocked or unauthenticated: the policy would skip it, so
    #: no job is written for it.
    HANDLED = "handled"


def classify(item: Mapping[str, Any], *, replied_label: str) -> Finding:
    """Whether a listed message needs a job (``ENQUEUE``) or is already handled.

    Labels compare case-insensitively, as the policy compares them.
    """
    labels = item.get("labels")
    names = {label.lower() for label in labels if isinstance(label, str)} if labels else set()
    if replied_label.lower() in names or names & BAD_LABELS:
        return Finding.HANDLED
    return Finding.ENQUEUE


def first_mark(now: float, *, overlap: timedelta = OVERLAP) -> float:
    """The mark of an inbox the sweep looks at for the first time: ``now`` plus the
    overlap, so its listings start at ``now`` (``listing_start``) until mail after that
    moves the mark on. A new deployment never reaches into the past: mail from before
    its first look, even minutes before, is left to its webhooks (or ``sweep --since``).
    """
    return now + overlap.total_seconds()


def listing_start(mark: float, *, overlap: timedelta = OVERLAP) -> datetime:
    """Where a sweep lists from: the mark minus the overlap (exclusive bound)."""
    return datetime.fromtimestamp(mark, UTC) - overlap


def item_time(item: Mapping[str, Any]) -> float | None:
    """A listed message's ``timestamp`` as Unix seconds, or None if missing or unreadable."""
    value = item.get("timestamp")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def advance(mark: float, page: Sequence[Mapping[str, Any]], *, now: float | None = None) -> float:
    """The mark after a page was fully processed (every job of it recorded).

    The page is oldest first, so the mark moves to the latest timestamp on it: every
    message up to there was enqueued or found handled. It never moves back, and an
    empty page (nothing listed) leaves it where it is: the next sweep lists from the
    same start again, which costs one call while the inbox is quiet. It is never moved
    to "now": a message timestamped before now may not be listable yet.

    Nor past ``now`` (the sweeper's clock): one message stamped in the year 9999 (a
    clock far ahead, a broken payload) would otherwise move the mark there, and every
    later sweep would list only what comes after it: nothing, for ever.
    """
    times = [t for t in (item_time(item) for item in page) if t is not None]
    latest = max([mark, *times])
    return latest if now is None else max(mark, min(latest, now))


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ].*)?")


def parse_since(text: str, *, now: float) -> float:
    """``--since``: a duration back from ``now`` (``2d``, ``36h``) or an ISO-8601 moment
    (``2026-11-01``, ``2026-11-01T00:00Z``; without a zone: UTC); Unix seconds.

    Raises ``ValueError`` with a message fit for one line of a command's error.
    """
    value = text.strip()
    if _ISO_DATE.fullmatch(value):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"invalid --since {text!r}: not a valid ISO-8601 date") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        since = moment.timestamp()
    else:
        try:
            since = now - parse_duration(value).total_seconds()
        except ValueError:
            raise ValueError(
                f"invalid --since {text!r}: use a duration (2d, 36h) or an ISO-8601 "
                "moment (2026-11-01T00:00Z)"
            ) from None
    if since > now:
        raise ValueError(f"invalid --since {text!r}: it is in the future")
    return since
