"""Time conditions of rules: which rule answers a message received at a given moment,
across midnight, week ends, vacations and the days clocks change; and the properties
that make the windows trustworthy (a window and its complement tile the week)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from handlers.message import InboundMessage
from handlers.rules import choose, parse_rules
from handlers.schedule import (
    DAY,
    DAY_NAMES,
    WEEK,
    Period,
    Schedule,
    WeeklyWindow,
    complement,
    dates_overlap,
    instants,
    parse_dates,
    parse_weekly,
    weekly_overlap,
)

RULES = """\
[[rule]]
name = "christmas"
inbox = "berlin@example.com"
timezone = "Europe/Berlin"
dates = "2026-12-24 - 2026-12-27"
template = "holiday"

[[rule]]
name = "berlin closed"
inbox = "berlin@example.com"
timezone = "Europe/Berlin"
weekly = ["Mon-Thu 18:00-09:00", "Fri 18:00 - Mon 09:00"]
template = "closed"

[[rule]]
name = "berlin maintenance"
inbox = "night@example.com"
timezone = "Europe/Berlin"
weekly = "Sun 02:00-03:00"
template = "maintenance"

[[rule]]
name = "new york closed"
inbox = "ny@example.com"
timezone = "America/New_York"
weekly = ["Mon-Thu 18:00-09:00", "Fri 18:00 - Mon 09:00"]
template = "closed"

[[rule]]
name = "kathmandu lunch"
inbox = "ktm@example.com"
timezone = "Asia/Kathmandu"
weekly = "daily 12:00-13:00"
template = "lunch"
"""


def message(inbox: str) -> InboundMessage:
    return InboundMessage(
        event_type="message.received",
        inbox_id=inbox,
        message_id="<m@example.com>",
        thread_id="t",
        sender="jane@example.com",
        subject="Hello",
    )


B, NY, KTM, NIGHT = "berlin@example.com", "ny@example.com", "ktm@example.com", "night@example.com"

#: (inbox, received at, the rule that answers; None: the default template). Times are
#: UTC, so each row also pins down the zone's offset on that day.
TABLE = [
    # A Berlin weekday in winter (CET, UTC+1): open 09:00-18:00.
    (B, "2026-12-01T07:59Z", "berlin closed"),  # Tue 08:59
    (B, "2026-12-01T08:00Z", None),  # Tue 09:00 opens
    (B, "2026-12-01T16:59Z", None),  # Tue 17:59
    (B, "2026-12-01T17:00Z", "berlin closed"),  # Tue 18:00 closes
    (B, "2026-12-01T22:59Z", "berlin closed"),  # Tue 23:59, the last minute before midnight
    (B, "2026-12-01T23:00Z", "berlin closed"),  # Wed 00:00, across midnight
    # The weekend, across Sunday 24:00 into Monday.
    (B, "2026-12-04T16:59Z", None),  # Fri 17:59
    (B, "2026-12-04T17:00Z", "berlin closed"),  # Fri 18:00
    (B, "2026-12-05T11:00Z", "berlin closed"),  # Sat noon
    (B, "2026-12-06T22:59Z", "berlin closed"),  # Sun 23:59
    (B, "2026-12-06T23:00Z", "berlin closed"),  # Mon 00:00
    (B, "2026-12-07T07:59Z", "berlin closed"),  # Mon 08:59
    (B, "2026-12-07T08:00Z", None),  # Mon 09:00
    # A vacation: its first and last minute, and the minutes either side.
    (B, "2026-12-23T22:59Z", "berlin closed"),  # Wed 23 23:59
    (B, "2026-12-23T23:00Z", "christmas"),  # Thu 24 00:00, first minute
    (B, "2026-12-24T12:00Z", "christmas"),  # a working hour inside the vacation
    (B, "2026-12-27T22:59Z", "christmas"),  # Sun 27 23:59, last minute
    (B, "2026-12-27T23:00Z", "berlin closed"),  # Mon 28 00:00
    # Europe/Berlin springs forward on Sun 2026-03-29 (02:00 CET -> 03:00 CEST).
    (B, "2026-03-23T07:30Z", "berlin closed"),  # Mon before: 08:30 CET
    (B, "2026-03-30T07:30Z", None),  # Mon after: 09:30 CEST
    (B, "2026-03-30T06:59Z", "berlin closed"),  # 08:59 CEST
    (B, "2026-03-30T07:00Z", None),  # 09:00 CEST
    (NIGHT, "2026-03-29T00:59Z", None),  # 01:59 CET
    (NIGHT, "2026-03-29T01:00Z", None),  # 03:00 CEST: 02:00-03:00 never happened
    # ... and falls back on Sun 2026-10-25 (03:00 CEST -> 02:00 CET): 02:xx twice.
    (NIGHT, "2026-10-24T23:59Z", None),  # 01:59 CEST
    (NIGHT, "2026-10-25T00:00Z", "berlin maintenance"),  # 02:00 CEST
    (NIGHT, "2026-10-25T00:59Z", "berlin maintenance"),  # 02:59 CEST
    (NIGHT, "2026-10-25T01:00Z", "berlin maintenance"),  # 02:00 CET, again
    (NIGHT, "2026-10-25T01:59Z", "berlin maintenance"),  # 02:59 CET
    (NIGHT, "2026-10-25T02:00Z", None),  # 03:00 CET
    (B, "2026-10-19T07:30Z", None),  # Mon before: 09:30 CEST
    (B, "2026-10-26T07:30Z", "berlin closed"),  # Mon after: 08:30 CET
    (B, "2026-10-26T08:00Z", None),  # 09:00 CET
    # America/New_York: forward on Sun 2026-03-08, back on Sun 2026-11-01.
    (NY, "2026-03-02T13:30Z", "new york closed"),  # Mon before: 08:30 EST
    (NY, "2026-03-09T13:30Z", None),  # Mon after: 09:30 EDT
    (NY, "2026-03-08T07:30Z", "new york closed"),  # Sun 03:30 EDT, the change itself
    (NY, "2026-10-30T21:59Z", None),  # Fri 17:59 EDT
    (NY, "2026-10-30T22:00Z", "new york closed"),  # Fri 18:00 EDT
    (NY, "2026-11-01T06:30Z", "new york closed"),  # Sun 01:30 EST, the repeated hour
    (NY, "2026-11-02T13:59Z", "new york closed"),  # Mon 08:59 EST
    (NY, "2026-11-02T14:00Z", None),  # Mon 09:00 EST
    # Asia/Kathmandu is UTC+05:45: lunch 12:00-13:00 is 06:15-07:15 UTC.
    (KTM, "2026-12-01T06:14Z", None),
    (KTM, "2026-12-01T06:15Z", "kathmandu lunch"),
    (KTM, "2026-12-01T07:14Z", "kathmandu lunch"),
    (KTM, "2026-12-01T07:15Z", None),
]


@pytest.mark.parametrize(("inbox", "received", "rule"), TABLE)
def test_the_rule_matching_the_received_time(inbox: str, received: str, rule: str | None) -> None:
    """Each row: a message received then gets the named rule's template (or the
    default's), in the rule's own zone whatever the service's is."""
    at = datetime.fromisoformat(received)
    choice = choose(
        parse_rules(RULES, timezone=ZoneInfo("Pacific/Auckland")), message(inbox), received_at=at
    )
    assert choice.rule_name == rule


BERLIN = ZoneInfo("Europe/Berlin")


def closed(zone: Any = BERLIN) -> Schedule:
    weekly = (parse_weekly("Mon-Thu 18:00-09:00"), parse_weekly("Fri 18:00 - Mon 09:00"))
    return Schedule(zone, weekly=weekly)


@pytest.mark.parametrize(
    ("received", "start", "end"),
    [
        # An ordinary weekend.
        ("2026-12-05T12:00+01:00", "2026-12-04T18:00+01:00", "2026-12-07T09:00+01:00"),
        # The weekend clocks go forward: it closes in CET and opens in CEST.
        ("2026-03-28T12:00+01:00", "2026-03-27T18:00+01:00", "2026-03-30T09:00+02:00"),
        # The weekend they go back.
        ("2026-10-24T12:00+02:00", "2026-10-23T18:00+02:00", "2026-10-26T09:00+01:00"),
        # A weeknight.
        ("2026-12-01T23:30+01:00", "2026-12-01T18:00+01:00", "2026-12-02T09:00+01:00"),
    ],
)
def test_the_window_says_when_the_office_opens_again(received: str, start: str, end: str) -> None:
    """``period`` gives the real instants the closed stretch began and ends."""
    period = closed().period(datetime.fromisoformat(received))
    assert period is not None
    assert period.start == datetime.fromisoformat(start)
    assert period.end == datetime.fromisoformat(end)
    assert period.end.tzinfo is BERLIN


def test_a_vacation_joined_to_evenings_and_a_weekend_ends_when_the_office_opens() -> None:
    """Windows and ranges that touch or overlap count as one stretch: a vacation ending on
    a Friday runs on through the weekend to Monday 09:00."""
    schedule = Schedule(
        BERLIN, weekly=closed().weekly, dates=(parse_dates("2026-12-24 - 2027-01-01"),)
    )
    period = schedule.period(datetime(2026, 12, 28, 12, tzinfo=BERLIN))
    assert period is not None
    assert period.start == datetime(2026, 12, 23, 18, tzinfo=BERLIN)
    assert period.end == datetime(2027, 1, 4, 9, tzinfo=BERLIN)


def test_a_stretch_of_years_is_not_searched_to_its_ends() -> None:
    """A range of centuries ("always") holds, but its start and end lie beyond the reach
    of the search: None, found in milliseconds, not by walking a thousand years."""
    schedule = Schedule(
        BERLIN, weekly=closed().weekly, dates=(parse_dates("1970-01-01 - 2999-12-31"),)
    )
    assert schedule.period(datetime(2026, 6, 1, tzinfo=UTC)) == Period(start=None, end=None)
    year = Schedule(BERLIN, dates=(parse_dates("2026-01-01 - 2026-12-31"),))
    period = year.period(datetime(2026, 6, 1, tzinfo=UTC))
    assert period == Period(
        start=datetime(2026, 1, 1, tzinfo=BERLIN), end=datetime(2027, 1, 1, tzinfo=BERLIN)
    )


def test_a_window_ending_in_the_skipped_hour_ends_when_the_clock_jumps() -> None:
    """A window ending at 02:30 on the night clocks go forward ends at the jump (03:00
    CEST, 01:00 UTC), the first moment the clock shows 02:30 or later."""
    schedule = Schedule(BERLIN, weekly=(parse_weekly("Sat 22:00 - Sun 02:30"),))
    period = schedule.period(datetime(2026, 3, 29, 0, 30, tzinfo=UTC))
    assert period is not None
    assert period.end == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert instants(datetime(2026, 3, 29, 2, 30), BERLIN) == [datetime(2026, 3, 29, 1, tzinfo=UTC)]


def test_a_vacation_ending_in_the_repeated_hour_does_not_come_back() -> None:
    """A range is one stretch of real time: ending at 02:30 on the night Berlin's clocks
    go back, it ends at the first 02:30 (CEST, 00:30 UTC) and does not hold again when
    the clock shows 02:00 to 02:30 a second time (CET)."""
    schedule = Schedule(BERLIN, dates=(parse_dates("2026-10-20 00:00 - 2026-10-25 02:30"),))
    assert schedule.holds(datetime(2026, 10, 25, 0, 10, tzinfo=UTC))  # 02:10 CEST
    assert not schedule.holds(datetime(2026, 10, 25, 0, 30, tzinfo=UTC))  # 02:30 CEST
    assert not schedule.holds(datetime(2026, 10, 25, 1, 10, tzinfo=UTC))  # 02:10 CET
    period = schedule.period(datetime(2026, 10, 25, 0, 10, tzinfo=UTC))
    assert period is not None
    assert period.end is not None
    assert period.end.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_a_vacation_starting_in_the_repeated_hour_holds_through_it() -> None:
    """Starting at 02:30 that night, it starts at the first 02:30 and holds on while the
    clock goes back to 02:00: no half hour of office replies in the middle."""
    schedule = Schedule(BERLIN, dates=(parse_dates("2026-10-25 02:30 - 2026-11-01 00:00"),))
    assert not schedule.holds(datetime(2026, 10, 25, 0, 10, tzinfo=UTC))  # 02:10 CEST
    assert schedule.holds(datetime(2026, 10, 25, 1, 10, tzinfo=UTC))  # 02:10 CET
    period = schedule.period(datetime(2026, 10, 25, 1, 10, tzinfo=UTC))
    assert period is not None
    assert period.start is not None
    assert period.start.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_a_window_ending_in_the_repeated_hour_ends_at_the_occurrence_after_receipt() -> None:
    """Received during the second 01:30 in New York (EST), a window ending at 01:45 ends
    at the second 01:45, not at the first, which lies in the past."""
    ny = ZoneInfo("America/New_York")
    schedule = Schedule(ny, weekly=(parse_weekly("Sun 01:00-01:45"),))
    received = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST, the second one
    period = schedule.period(received)
    assert period is not None
    assert period.start is not None
    assert period.end is not None
    # (Compared in UTC: Python never equates a repeated-hour time to another zone's.)
    assert period.end.astimezone(UTC) == datetime(2026, 11, 1, 6, 45, tzinfo=UTC)
    assert period.start.astimezone(UTC) == datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mon-Fri 09:00-17:00", [(d * DAY + 540, 480) for d in range(5)]),
        ("mon,wed 22:00-06:00", [(22 * 60, 480), (2 * DAY + 22 * 60, 480)]),
        ("Fri 18:00 - Mon 09:00", [(4 * DAY + 18 * 60, 2 * DAY + 15 * 60)]),
        ("Friday 18:00 to Monday 09:00", [(4 * DAY + 18 * 60, 2 * DAY + 15 * 60)]),
        ("Sat-Sun", [(5 * DAY, 2 * DAY)]),
        ("Fri-Mon", [(4 * DAY, 4 * DAY)]),
        ("daily 12:00-13:00", [(d * DAY + 720, 60) for d in range(7)]),
        ("Sun 00:00-24:00", [(6 * DAY, DAY)]),
        ("Tue 9:00\u201317:30", [(DAY + 540, 510)]),
    ],
)
def test_weekly_entries(text: str, expected: list[tuple[int, int]]) -> None:
    """The spellings people write for windows, as stretches of the week."""
    assert list(parse_weekly(text).spans) == expected


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026-12-24", "2026-12-24T00:00", "2026-12-25T00:00"),
        ("2026-12-24 - 2027-01-01", "2026-12-24T00:00", "2027-01-02T00:00"),
        ("2026-12-24 to 2027-01-01", "2026-12-24T00:00", "2027-01-02T00:00"),
        ("2026-12-23 17:00 - 2027-01-04 09:00", "2026-12-23T17:00", "2027-01-04T09:00"),
        ("2026-12-23T17:00 \u2013 2027-01-04", "2026-12-23T17:00", "2027-01-05T00:00"),
    ],
)
def test_date_entries(text: str, start: str, end: str) -> None:
    """A date alone is its whole day; as the end, the last day is included."""
    parsed = parse_dates(text)
    assert (parsed.start, parsed.end) == (
        datetime.fromisoformat(start),
        datetime.fromisoformat(end),
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("Mnday 09:00-17:00", "'Mnday' is not a day of the week"),
        ("Mon-Fri 25:00-26:00", "25:00 is not a time of day"),
        ("Mon-Fri 09:60-17:00", "09:60 is not a time of day"),
        ("Mon 24:00-08:00", "24:00 is not a time of day (00:00 to 23:59)"),
        ("Mon-Fri 09:00-09:00", "empty window"),
        ("Fri 18:00 - Fri 18:00", "starts where it ends"),
        ("09:00-17:00", "not a weekly window"),
        ("Mon,Tue,Mon", "names Mon twice"),
        ("", "an empty window"),
    ],
)
def test_impossible_weekly_entries_are_refused(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_weekly(text)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("2027-01-06 - 2026-12-24", "ends before it starts"),
        ("2026-12-24 18:00 - 2026-12-24 09:00", "ends before it starts"),
        ("2026-12-24 10:00 - 2026-12-24 10:00", "an empty range"),
        ("2026-02-30", "2026-02-30 is not a date"),
        ("2026-12-24 25:00 - 2026-12-25", "25:00 is not a time of day"),
        ("2026-12-24 18:00", "give an end too"),
        ("24.12.2026", "not a date range"),
        ("2026-12-24-2027-01-01", "not a date range"),
        ("2026-12-24 - 9999-12-31", "9999-12-31: use a year from 1970 to 2999"),
        ("0001-01-01", "use a year from 1970 to 2999"),
    ],
)
def test_impossible_date_entries_are_refused(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_dates(text)


def test_overlapping_windows_are_named_with_where_they_overlap() -> None:
    windows = [parse_weekly("Mon-Fri 09:00-17:00"), parse_weekly("Fri 12:00-18:00")]
    assert weekly_overlap(windows) == (
        "'Mon-Fri 09:00-17:00' and 'Fri 12:00-18:00' overlap (Fri 12:00 to Fri 17:00)"
    )
    touching = [parse_weekly("Mon-Thu 18:00-09:00"), parse_weekly("Fri 18:00 - Mon 09:00")]
    assert weekly_overlap(touching) is None
    across_the_week_end = [parse_weekly("Sun 20:00 - Mon 10:00"), parse_weekly("Mon 08:00-09:00")]
    assert weekly_overlap(across_the_week_end) is not None


# -- properties ------------------------------------------------------------------------

times = st.integers(min_value=0, max_value=DAY - 1)


def clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@st.composite
def weekly_entries(draw: st.DrawFn) -> str:
    """Any valid ``weekly`` entry, in each of its forms."""
    form = draw(st.sampled_from(["days", "daily", "span"]))
    if form == "span":
        first, last = draw(st.integers(0, 6)), draw(st.integers(0, 6))
        start, end = draw(times), draw(times)
        if first == last and start == end:
            end = (end + 1) % DAY
        return f"{DAY_NAMES[first]} {clock(start)} - {DAY_NAMES[last]} {clock(end)}"
    days = draw(st.lists(st.integers(0, 6), min_size=1, max_size=7, unique=True))
    names = ",".join(DAY_NAMES[d] for d in days)
    if form == "days":
        return names
    start, end = draw(times), draw(st.integers(min_value=0, max_value=DAY))
    if start == end % DAY:
        end = (start + 1) % DAY
    return f"{names} {clock(start)}-{clock(end)}"


def covers(spans: Any, minute: int) -> bool:
    return any((minute - start) % WEEK < length for start, length in spans)


@settings(max_examples=60, deadline=None)
@given(entry=weekly_entries())
def test_a_window_and_its_complement_cover_every_minute_of_the_week_exactly_once(
    entry: str,
) -> None:
    window = parse_weekly(entry)
    rest = complement([window])
    for minute in range(WEEK):
        assert window.contains(minute) != covers(rest, minute), (entry, minute)
    # The complement is itself a set of disjoint, non-touching stretches.
    assert sum(length for _, length in rest) == WEEK - sum(map(window.contains, range(WEEK)))


@settings(max_examples=60, deadline=None)
@given(entries=st.lists(weekly_entries(), min_size=1, max_size=4))
def test_overlap_is_reported_exactly_when_two_windows_share_a_minute(entries: list[str]) -> None:
    windows = [parse_weekly(e) for e in entries]
    shared = any(sum(w.contains(minute) for w in windows) > 1 for minute in range(WEEK))
    assert (weekly_overlap(windows) is not None) == shared
    if not shared:
        rest = complement(windows)
        for minute in range(WEEK):
            assert any(w.contains(minute) for w in windows) != covers(rest, minute)


#: Days of 2026 (counted from 1 January) on which one of ``ZONES`` changes its clocks:
#: Lord Howe 5 April and 4 October, New York 8 March and 1 November, Berlin 29 March
#: and 25 October.
CLOCK_CHANGE_DAYS = [66, 87, 94, 276, 297, 304]
ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe", "UTC"]


@st.composite
def date_ranges(draw: st.DrawFn) -> list[str]:
    """Up to two non-overlapping ranges in 2026, whole days or moments."""
    count = draw(st.integers(0, 2))
    starts = sorted(draw(st.lists(st.integers(0, 360 * DAY), min_size=count, max_size=count)))
    texts, previous_end = [], -1
    for start in starts:
        start = max(start, previous_end)
        length = draw(st.integers(1, 20 * DAY))
        first = datetime(2026, 1, 1) + timedelta(minutes=start)
        last = first + timedelta(minutes=length)
        if draw(st.booleans()):
            texts.append(f"{first:%Y-%m-%d %H:%M} - {last:%Y-%m-%d %H:%M}")
            previous_end = start + length
        else:
            texts.append(f"{first:%Y-%m-%d} - {last:%Y-%m-%d}")
            previous_end = (start // DAY + length // DAY + 2) * DAY
    return texts


@settings(max_examples=200, deadline=None)
@given(
    entries=st.lists(weekly_entries(), min_size=0, max_size=3),
    ranges=date_ranges(),
    zone=st.sampled_from(ZONES),
    minute=st.one_of(
        st.integers(min_value=0, max_value=365 * DAY),
        # Most of the draws a few days either side of a clock change.
        st.builds(
            lambda day, offset: day * DAY + offset,
            st.sampled_from(CLOCK_CHANGE_DAYS),
            st.integers(min_value=-4 * DAY, max_value=4 * DAY),
        ),
    ),
)
def test_the_period_is_exactly_the_unbroken_stretch_around_the_receipt(
    entries: list[str], ranges: list[str], zone: str, minute: int
) -> None:
    """Whatever the zone (DST both ways, +05:45, Lord Howe's half-hour DST): the schedule
    holds at every real minute from the period's start up to its end, and not in the
    minute before the start nor at the end."""
    windows = tuple(parse_weekly(e) for e in entries)
    dates = tuple(parse_dates(r) for r in ranges)
    schedule = Schedule(ZoneInfo(zone), weekly=windows, dates=dates)
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)
    period = schedule.period(at)
    assert (period is not None) == schedule.holds(at)
    if period is None:
        return
    if period.end is None:  # the windows cover the whole week
        assert windows
        assert complement(windows) == ()
        return
    assert period.start is not None
    assert period.start <= at < period.end
    assert not schedule.holds(period.end)
    assert not schedule.holds(period.start - timedelta(minutes=1))
    step = period.start
    while step < period.end:
        assert schedule.holds(step), (step, period)
        step += timedelta(minutes=1)


def test_one_entry_is_a_window_in_one_zone() -> None:
    """The parsed window keeps the text for messages."""
    assert parse_weekly("Sat-Sun") == WeeklyWindow("Sat-Sun", ((5 * DAY, 2 * DAY),))


def test_a_public_holiday_in_an_after_hours_rule_joins_the_evening_and_weekend() -> None:
    """A holiday listed in the same rule as the weekly windows: closed from Thursday
    18:00 (Christmas Eve evening) through Friday the 25th and the weekend to Monday."""
    schedule = Schedule(BERLIN, weekly=closed().weekly, dates=(parse_dates("2026-12-25"),))
    period = schedule.period(datetime(2026, 12, 25, 12, tzinfo=BERLIN))
    assert period == Period(
        start=datetime(2026, 12, 24, 18, tzinfo=BERLIN),
        end=datetime(2026, 12, 28, 9, tzinfo=BERLIN),
    )


quarters = st.integers(min_value=0, max_value=DAY // 15 - 1).map(lambda q: q * 15)


@st.composite
def long_ranges(draw: st.DrawFn) -> list[str]:
    """One or two ranges of up to half a year in 2026-2027, on quarter hours."""
    count = draw(st.integers(1, 2))
    texts, start = [], draw(st.integers(0, 200)) * DAY + draw(quarters)
    for _ in range(count):
        length = draw(st.integers(1, 180 * DAY // 15)) * 15
        first = datetime(2026, 1, 1) + timedelta(minutes=start)
        last = first + timedelta(minutes=length)
        texts.append(f"{first:%Y-%m-%d %H:%M} - {last:%Y-%m-%d %H:%M}")
        start += length + draw(st.integers(0, 10 * DAY // 15)) * 15
    return texts


@settings(max_examples=100, deadline=None)
# A span starting the week before the searched piece after a range and ending in it.
@example(
    entries=[("Fri", 15, 0)],
    ranges=["2026-01-01 00:00 - 2026-01-07 00:00"],
    zone="Europe/Berlin",
    day=0,
    quarter=0,
)
@given(
    entries=st.lists(
        st.tuples(st.sampled_from(DAY_NAMES), quarters, quarters), min_size=1, max_size=3
    ),
    ranges=long_ranges(),
    zone=st.sampled_from(ZONES),
    day=st.integers(min_value=0, max_value=420),
    quarter=quarters,
)
def test_the_period_of_a_long_vacation_beside_weekly_windows_is_exact(
    entries: list[tuple[str, int, int]], ranges: list[str], zone: str, day: int, quarter: int
) -> None:
    """Vacations of months beside weekly windows (whose edges the search skips deep
    inside a range): the period still starts and ends exactly where holding changes.
    Every edge and clock change of these zones falls on a quarter hour, so stepping by
    quarter hours visits every change."""
    texts = [
        f"{d} {clock(s)} - {d} {clock(e if e != s else (s + 15) % DAY)}" for d, s, e in entries
    ]
    windows = tuple(parse_weekly(t) for t in texts)
    if weekly_overlap(windows) is not None:
        windows = windows[:1]
    schedule = Schedule(ZoneInfo(zone), weekly=windows, dates=tuple(map(parse_dates, ranges)))
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=day, minutes=quarter)
    period = schedule.period(at)
    assert (period is not None) == schedule.holds(at)
    if period is None:
        return
    if period.end is None:  # the windows cover the whole week
        assert complement(windows) == ()
        return
    quarter_hour = timedelta(minutes=15)
    assert period.start is not None
    assert period.start <= at < period.end
    assert not schedule.holds(period.end)
    assert not schedule.holds(period.start - quarter_hour)
    step = period.start
    while step < period.end:
        assert schedule.holds(step), (step, period)
        step += quarter_hour


def test_touching_ranges_listed_in_any_order_make_one_stretch() -> None:
    """Forty two-day ranges that touch, listed shuffled: received in the middle, the
    stretch runs from the first one's start to the last one's end (chaining both ways
    through a list searched by index, not by comparing ranges)."""
    first = datetime(2026, 3, 1)
    texts = [
        f"{first + timedelta(days=2 * n):%Y-%m-%d} - {first + timedelta(days=2 * n + 1):%Y-%m-%d}"
        for n in range(40)
    ]
    order = [(n * 17) % 40 for n in range(40)]  # 17 is prime to 40: each index once
    schedule = Schedule(BERLIN, dates=tuple(parse_dates(texts[n]) for n in order))
    assert dates_overlap(schedule.dates) is None
    period = schedule.period(datetime(2026, 4, 10, 12, tzinfo=BERLIN))
    assert period == Period(
        start=datetime(2026, 3, 1, tzinfo=BERLIN), end=datetime(2026, 5, 20, tzinfo=BERLIN)
    )
