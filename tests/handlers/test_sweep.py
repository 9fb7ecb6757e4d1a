"""The sweep's pure decisions: classification, listing start, mark advance, ``--since``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from handlers.sweep import (
    OVERLAP,
    Finding,
    advance,
    classify,
    first_mark,
    item_time,
    listing_start,
    parse_since,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()


def at(seconds: float) -> str:
    """A list item's ``timestamp`` for Unix time ``seconds``."""
    return datetime.fromtimestamp(seconds, UTC).isoformat()


@pytest.mark.parametrize(
    ("labels", "finding"),
    [
        (["received", "unread"], Finding.ENQUEUE),
        (["received", "unreplied"], Finding.ENQUEUE),
        (["received", "replied"], Finding.HANDLED),
        (["received", "Replied"], Finding.HANDLED),
        (["received", "spam"], Finding.HANDLED),
        (["received", "blocked"], Finding.HANDLED),
        (["received", "unauthenticated"], Finding.HANDLED),
        ([], Finding.ENQUEUE),
        (None, Finding.ENQUEUE),
    ],
)
def test_classify_by_labels(labels: list[str] | None, finding: Finding) -> None:
    """Replied and the labels the policy never answers count as handled; the rest is enqueued."""
    assert classify({"labels": labels}, replied_label="replied") is finding


def test_classify_uses_the_configured_replied_label() -> None:
    """``AUTOREPLY_REPLIED_LABEL`` decides, not the word ``replied``."""
    assert classify({"labels": ["answered"]}, replied_label="answered") is Finding.HANDLED
    assert classify({"labels": ["replied"]}, replied_label="answered") is Finding.ENQUEUE


def test_listing_starts_an_overlap_before_the_mark() -> None:
    """Messages that became listable late, within the overlap, are listed again."""
    assert listing_start(NOW) == datetime.fromtimestamp(NOW, UTC) - timedelta(minutes=10)
    assert timedelta(minutes=10) == OVERLAP


def test_a_first_mark_lists_from_now() -> None:
    """First look: the listing starts at now, never in the past."""
    assert listing_start(first_mark(NOW)) == datetime.fromtimestamp(NOW, UTC)


def test_the_mark_moves_to_the_last_processed_message() -> None:
    """Oldest first: the mark takes the page's latest timestamp."""
    page = [{"timestamp": at(NOW + 1)}, {"timestamp": at(NOW + 5)}, {"timestamp": at(NOW + 3)}]
    assert advance(NOW, page) == NOW + 5


def test_the_mark_never_moves_back_or_on_an_empty_page() -> None:
    """Overlap re-lists older messages; an empty listing leaves the mark alone."""
    assert advance(NOW, [{"timestamp": at(NOW - 300)}]) == NOW
    assert advance(NOW, []) == NOW
    assert advance(NOW, [{"timestamp": None}, {}]) == NOW


def test_item_time_reads_iso_timestamps() -> None:
    """``Z``, offsets and naive values (UTC) are read; garbage is None."""
    assert item_time({"timestamp": "2026-11-30T12:00:00Z"}) == NOW
    assert item_time({"timestamp": "2026-11-30T13:00:00+01:00"}) == NOW
    assert item_time({"timestamp": "2026-11-30T12:00:00"}) == NOW
    assert item_time({"timestamp": "yesterday"}) is None
    assert item_time({"timestamp": 5}) is None


@pytest.mark.parametrize(
    ("text", "since"),
    [
        ("2d", NOW - 2 * 86_400),
        ("36h", NOW - 36 * 3_600),
        ("0", NOW),
        ("2026-11-01T00:00Z", datetime(2026, 11, 1, tzinfo=UTC).timestamp()),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC).timestamp()),
        ("2026-11-01T01:00+01:00", datetime(2026, 11, 1, tzinfo=UTC).timestamp()),
    ],
)
def test_parse_since(text: str, since: float) -> None:
    """A duration back from now, or a moment (UTC unless it says otherwise)."""
    assert parse_since(text, now=NOW) == since


@pytest.mark.parametrize("text", ["yesterday", "2x", "", "2026-13-01", "2027-01-01T00:00Z"])
def test_parse_since_refuses_what_it_cannot_read(text: str) -> None:
    """Unreadable or future values: one clear message naming ``--since``."""
    with pytest.raises(ValueError, match="invalid --since"):
        parse_since(text, now=NOW)


def test_the_mark_never_passes_the_sweepers_clock() -> None:
    """One message stamped in the year 9999 must not move the mark there: every later
    sweep would list only what comes after it. The mark stops at the sweeper's now (and
    still never moves back)."""
    page = [{"timestamp": at(NOW - 60)}, {"timestamp": "9999-12-31T23:59:59Z"}]
    assert advance(NOW - 300, page, now=NOW) == NOW
    assert advance(NOW + 100, page, now=NOW) == NOW + 100
