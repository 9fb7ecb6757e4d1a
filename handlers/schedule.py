"""Time conditions of rules: weekly windows and date ranges, parsed and evaluated.

A rule of ``rules.toml`` may say *when* it applies, in wall-clock time of one time zone:

- ``weekly``: windows that repeat every week. ``"Mon-Fri 09:00-17:00"`` is one window
  on each listed day (an end at or before the start runs past midnight into the next
  day: ``"Mon-Thu 18:00-09:00"``); ``"Fri 18:00 - Mon 09:00"`` is one span from a day
  and time to a later day and time, across midnight and the end of the week; ``"Sat-Sun"``
  (no times) is whole days.
- ``dates``: calendar ranges. ``"2026-12-24 - 2027-01-01"`` runs from the first day's
  00:00 through the whole last day (inclusive, as Gmail's vacation responder's first
  and last day); ``"2026-12-23 17:00 - 2027-01-04 09:00"`` from a moment to a moment
  (the end excluded, as Outlook's start and end time); ``"2026-12-24"`` is one day.

Weekly windows are evaluated on wall-clock time: a message received at ``t`` falls in a
window when ``t`` shown on a clock in the zone does. That is what an office's opening
hours mean, and it is well defined on the days clocks change: an hour skipped in spring
matches nothing, an hour repeated in autumn matches twice. A date range is one stretch
of real time, from the first moment the clock shows its start to the first moment it
shows its end: a vacation ending (or starting) in the repeated hour does not hold again
(or break off) when the clock shows that hour a second time. ``Schedule.period`` gives
the stretch of time around ``t`` during which the schedule holds (when the office
closed, when it opens again), as real instants.

Pure: no I/O besides ``zoneinfo``'s reading of the system's time zone data.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: Minutes in a week; weekly positions count from Monday 00:00.
WEEK = 7 * 24 * 60
DAY = 24 * 60
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_WORDS = {
    **{name.lower(): index for index, name in enumerate(DAY_NAMES)},
    **{
        full: index
        for index, full in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
    "tues": 1,
    "weds": 2,
    "thur": 3,
    "thurs": 3,
}
#: A range separator: ``-``, an en or em dash, or the word ``to``, spaces allowed.
_SEP = r"\s*(?:-|\u2013|\u2014|\bto\b)\s*"
#: Between two dates the hyphen needs spaces around it (dates hold hyphens themselves).
_DATE_SEP = r"(?:\s+(?:-|to)\s+|\s*[\u2013\u2014]\s*)"
_TIME = r"\d{1,2}:\d{2}"
_DATE = r"\d{4}-\d{2}-\d{2}"
_SPAN = re.compile(rf"([A-Za-z]+)\s+({_TIME}){_SEP}([A-Za-z]+)\s+({_TIME})")
_DAILY = re.compile(rf"(.*?)\s+({_TIME}){_SEP}({_TIME})")
_DATE_POINT = rf"({_DATE})(?:[ T]({_TIME}))?"
_DATE_RANGE = re.compile(rf"{_DATE_POINT}(?:{_DATE_SEP}{_DATE_POINT})?")
#: How far ``period`` looks for where a weekly stretch ends or starts: a stretch that is
#: not the whole week ends within a week; a day more covers the clocks changing.
_WEEKLY_HORIZON = timedelta(days=8)
_SECOND = timedelta(seconds=1)
#: More than any clock change moves the wall clock (Samoa skipped a whole day in 2011):
#: a moment this far inside a date range is inside it whatever the clock does.
_CLOCK_JUMP = timedelta(days=2)
#: Years a date range may name: any real vacation, and no date the clock arithmetic
#: cannot reach (9999-12-31 as a last day would end past the last date Python has).
FIRST_YEAR, LAST_YEAR = 1970, 2999
#: How far from a message ``Schedule.period`` looks for where its stretch began and
#: ends: a vacation of a year is found whole; "always" is not searched for ever.
MAX_REACH = timedelta(days=400)


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """One ``weekly`` entry: stretches of the week, as (start minute, length) pairs.

    Minutes count from Monday 00:00; a stretch may run past Sunday 24:00 into the next
    week. ``text`` is the entry as written, for messages.
    """

    text: str
    spans: tuple[tuple[int, int], ...]

    def contains(self, minute: int) -> bool:
        """True when the minute of the week (0 = Monday 00:00) lies in the window."""
        return any((minute - start) % WEEK < length for start, length in self.spans)


@dataclass(frozen=True, slots=True)
class DateRange:
    """One ``dates`` entry: wall-clock time from ``start`` up to ``end`` (excluded)."""

    text: str
    start: datetime
    end: datetime

    def contains(self, wall: datetime) -> bool:
        """True when the naive wall-clock time ``wall`` lies in the range."""
        return self.start <= wall < self.end


@dataclass(frozen=True, slots=True)
class Period:
    """The stretch during which a schedule holds, as instants in the schedule's zone.

    ``start`` is when it began to hold (None: more than the search horizon ago, e.g. a
    window covering the whole week), ``end`` when it stops (None likewise).
    """

    start: datetime | None
    end: datetime | None


@dataclass(frozen=True, slots=True)
class Schedule:
    """A rule's time condition: it holds when any weekly window or date range does.

    Weekly windows are read on the wall clock (each day's 09:00, whatever the offset;
    a window in the hour repeated in autumn holds both times). A date range is one
    stretch of real time: from the first moment the zone's clock shows its start to
    the first moment it shows its end (see ``instant``), so a vacation ending or
    starting in the repeated hour neither comes back nor breaks off for part of it.
    """

    zone: tzinfo
    weekly: tuple[WeeklyWindow, ...] = ()
    dates: tuple[DateRange, ...] = ()
    #: ``dates`` as real instants (UTC): (first moment, end moment) of each range.
    _spans: tuple[tuple[datetime, datetime], ...] = field(
        init=False, repr=False, compare=False, default=()
    )
    #: ``dates`` in order of their start.
    _sorted: tuple[DateRange, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        spans = tuple(
            (instant(d.start, self.zone).astimezone(UTC), instant(d.end, self.zone).astimezone(UTC))
            for d in self.dates
        )
        object.__setattr__(self, "_spans", spans)
        object.__setattr__(self, "_sorted", tuple(sorted(self.dates, key=lambda d: d.start)))

    def __bool__(self) -> bool:
        return bool(self.weekly or self.dates)

    def wall(self, at: datetime) -> datetime:
        """``at`` (timezone-aware) as naive wall-clock time in the schedule's zone."""
        if at.tzinfo is None:
            raise ValueError("the time must be timezone-aware")
        return at.astimezone(self.zone).replace(tzinfo=None)

    def holds(self, at: datetime) -> bool:
        """True when the instant ``at`` falls in a window or a date range."""
        minute = minute_of_week(self.wall(at))
        if any(w.contains(minute) for w in self.weekly):
            return True
        moment = at.astimezone(UTC)  # compared in UTC: no repeated-hour (fold) quirks
        return any(start <= moment < end for start, end in self._spans)

    def period(self, at: datetime) -> Period | None:
        """The stretch of real time around ``at`` during which the schedule holds
        without a break, windows and ranges that touch or overlap taken together; None
        when it does not hold at ``at``.

        Its ``end`` is when the holding stops ("we are back Monday 09:00"), its
        ``start`` when it began. Holding can only change where the clock crosses an
        edge of a window or range, or where the clock itself jumps (daylight saving),
        so those moments are the candidates.
        """
        if not self.holds(at):
            return None
        points = self._change_points(at)
        end = next((p for p in points if p > at and not self.holds(p)), None)
        start = next((p for p in reversed(points) if p <= at and not self.holds(p - _SECOND)), None)
        return Period(
            start=None if start is None else start.astimezone(self.zone),
            end=None if end is None else end.astimezone(self.zone),
        )

    def first_start(self, after: datetime) -> datetime | None:
        """The first instant at or after ``after`` at which the schedule holds, or None
        when it never does within a week past its last date range (for samples)."""
        if self.holds(after):
            return after
        points = self._change_points(after)
        return next((p for p in points if p > after and self.holds(p)), None)

    def _change_points(self, at: datetime) -> list[datetime]:
        """Every instant (UTC, sorted) near ``at`` where holding may change: each edge
        of a window or range as the clock shows it (or the jump that skips it), and
        each change of the zone's offset. "Near": a week and a day either side of
        ``at`` and of every date range within reach, since a stretch of weekly windows
        that is not the whole week lasts less than a week; and never more than
        ``MAX_REACH`` from ``at``, so a range of years costs no more than one of weeks
        (a stretch longer than that has no ``start`` or ``end``).

        Weekly edges and offset changes are listed only outside the depths of the
        ranges (more than ``_CLOCK_JUMP`` inside their first and last moment): there the
        schedule holds whatever the weekly windows or the clock do (no clock change
        moves the wall clock that far), so none of them can start or end the stretch.
        A year's vacation beside weekly windows thus costs about what two weeks do,
        not fifty-odd."""
        wall = self.wall(at)
        floor, ceiling = wall - MAX_REACH, wall + MAX_REACH
        low, high = wall - _WEEKLY_HORIZON, wall + _WEEKLY_HORIZON
        # The ranges joined to the stretch around ``at``, each within a week and a day
        # of it or of one joined before: passes in start order and back (ranges are
        # sorted), by index (comparing ranges field by field cost seconds for 1,000).
        ranges: list[DateRange] = []
        joined = [False] * len(self._sorted)
        order = range(len(self._sorted))
        grown = True
        while grown:
            grown = False
            for index in order:
                dates = self._sorted[index]
                if not joined[index] and dates.start <= high and dates.end >= low:
                    joined[index] = True
                    ranges.append(dates)
                    low = max(floor, min(low, dates.start - _WEEKLY_HORIZON))
                    high = min(ceiling, max(high, dates.end + _WEEKLY_HORIZON))
                    grown = True
            order = order[::-1]
        walls = [
            edge
            for dates in ranges
            for edge in (dates.start, dates.end)
            if floor <= edge <= ceiling
        ]
        points: set[datetime] = set()
        depths = [(d.start + _CLOCK_JUMP, d.end - _CLOCK_JUMP) for d in ranges]
        for near_low, near_high in _without(low, high, depths):
            if self.weekly:
                # From the week before: a span may start there and end in the piece.
                monday = _monday(near_low) - timedelta(days=7)
                while monday <= near_high:
                    for window in self.weekly:
                        for start, length in window.spans:
                            begin = monday + timedelta(minutes=start)
                            walls += (
                                edge
                                for edge in (begin, begin + timedelta(minutes=length))
                                if near_low <= edge <= near_high
                            )
                    monday += timedelta(days=7)
            points |= _offset_changes(
                instant(near_low, self.zone), instant(near_high, self.zone), self.zone
            )
        points |= {moment.astimezone(UTC) for edge in walls for moment in instants(edge, self.zone)}
        return sorted(points)


def _without(
    low: datetime, high: datetime, holes: Iterable[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """The wall-clock stretch ``[low, high]`` less the open stretches ``holes``, as
    closed (low, high) pieces in order."""
    pieces = [(low, high)]
    for hole_low, hole_high in holes:
        if hole_low >= hole_high:
            continue
        pieces = [
            piece
            for piece_low, piece_high in pieces
            for piece in (
                (piece_low, min(piece_high, hole_low)),
                (max(piece_low, hole_high), piece_high),
            )
            if piece[0] <= piece[1]
        ]
    return sorted(set(pieces))


def _offset_changes(low: datetime, high: datetime, zone: tzinfo) -> set[datetime]:
    """The instants in ``[low, high]`` at which ``zone``'s UTC offset changes (to the
    second), found by sampling every 12 hours (zones change at most twice a year)
    and bisecting where two samples differ."""
    found: set[datetime] = set()
    step = timedelta(hours=12)
    moment = low.astimezone(UTC)
    while moment < high:
        later = min(moment + step, high.astimezone(UTC))
        if moment.astimezone(zone).utcoffset() != later.astimezone(zone).utcoffset():
            before, after = moment, later
            while after - before > _SECOND:
                middle = before + (after - before) / 2
                if middle.astimezone(zone).utcoffset() == before.astimezone(zone).utcoffset():
                    before = middle
                else:
                    after = middle
            # Zones change on whole seconds: the one in (before, after].
            found.add(before.replace(microsecond=0) + _SECOND)
        moment = later
    return found


def minute_of_week(wall: datetime) -> int:
    """Minutes since Monday 00:00 of the week of ``wall`` (seconds dropped)."""
    return wall.weekday() * DAY + wall.hour * 60 + wall.minute


def instant(wall: datetime, zone: tzinfo) -> datetime:
    """The first instant at which a clock in ``zone`` shows ``wall`` or later.

    For most times that is simply ``wall`` in the zone. A time shown twice (the hour
    repeated when clocks go back) gives its first occurrence; a time never shown (the
    hour skipped when clocks go forward) gives the moment of the change, when the clock
    jumps past it: a window ending at 02:30 on that night ends at 03:00 local.
    """
    return instants(wall, zone)[0]


def instants(wall: datetime, zone: tzinfo) -> list[datetime]:
    """Every instant at which a clock in ``zone`` shows ``wall``, in order: one, two
    (clocks going back), or none, when the moment of the change is given instead
    (clocks going forward skip ``wall``)."""
    if wall.tzinfo is not None:
        raise ValueError("wall-clock time must be naive")
    first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return [first]  # almost every time: the clock shows it once, whatever the fold
    candidates = sorted({wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1)})
    shown = [c.astimezone(zone) for c in candidates if _shows(c, zone) == wall]
    if shown:
        return shown
    # Skipped by the clock: the change lies between the two readings; find it.
    low, high = candidates[0], candidates[-1]
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if _shows(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return [high.replace(microsecond=0).astimezone(zone)]


def _shows(moment: datetime, zone: tzinfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _monday(wall: datetime) -> datetime:
    midnight = datetime.combine(wall.date(), time())
    return midnight - timedelta(days=wall.weekday())


# -- parsing ---------------------------------------------------------------------------

#: What an IANA zone name looks like ("Europe/Paris", "America/Argentina/Salta",
#: "Etc/GMT+5", "EST5EDT"): letters, digits, ``_+-``, parts joined by ``/``.
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*", re.ASCII)
#: Longer than any IANA name (the longest has 32 characters).
_ZONE_NAME_MAX = 64


def zone(name: str) -> ZoneInfo:
    """The time zone called ``name`` (an IANA name); ``ValueError`` saying why not.

    ``ZoneInfo`` is given only names shaped like zone names: it reads a file named after
    the key, and on some names ("Europe", a folder; a name longer than the system
    allows) raises ``OSError`` rather than its own error, while path-like keys
    ("../../etc/passwd") are refused. ``right/`` zones count leap seconds, so their
    clocks run some 27 seconds off the time AgentMail stamps: refused too.
    """
    hint = "use an IANA name like Europe/Paris"
    if (
        len(name) > _ZONE_NAME_MAX
        or _ZONE_NAME.fullmatch(name) is None
        or name.startswith("right/")
    ):
        raise ValueError(f"unknown time zone {name[:_ZONE_NAME_MAX]!r} ({hint})")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} ({hint})") from None


def parse_weekly(text: str) -> WeeklyWindow:
    """Parse one ``weekly`` entry; ``ValueError`` says what is wrong with it.

    ``"Mon-Fri 09:00-17:00"``, ``"Mon,Wed 18:00-08:00"`` (past midnight),
    ``"Fri 18:00 - Mon 09:00"`` (one span), ``"Sat-Sun"`` or ``"daily"`` (whole days),
    ``"daily 12:00-13:00"``. Day names are English, abbreviated or in full, any case.
    """
    entry = " ".join(text.split())
    if not entry:
        raise ValueError("an empty window; write e.g. 'Mon-Fri 09:00-17:00'")
    if span := _SPAN.fullmatch(entry):
        first, second = _day(span[1]), _day(span[3])
        start = first * DAY + _time_of_day(span[2], end=False)
        end = second * DAY + _time_of_day(span[4], end=True)
        length = (end - start) % WEEK
        if length == 0:
            raise ValueError(
                f"{text!r} starts where it ends: an empty window (or, if you meant "
                "the whole week, leave out the time condition)"
            )
        return WeeklyWindow(text, ((start, length),))
    if daily := _DAILY.fullmatch(entry):
        days = _days(daily[1])
        start = _time_of_day(daily[2], end=False)
        end = _time_of_day(daily[3], end=True)
        if start == end:
            raise ValueError(
                f"{text!r}: {daily[2]} to {daily[3]} is an empty window "
                "(for whole days leave the times out: 'Sat-Sun')"
            )
        length = (end - start) % DAY or DAY
        return WeeklyWindow(text, tuple((day * DAY + start, length) for day in days))
    if re.search(r"\d", entry):
        raise ValueError(
            f"{text!r} is not a weekly window: write 'Mon-Fri 09:00-17:00', "
            "'Fri 18:00 - Mon 09:00', 'daily 12:00-13:00' or 'Sat-Sun'"
        )
    return WeeklyWindow(text, _merge_days(_days(entry)))


def parse_dates(text: str) -> DateRange:
    """Parse one ``dates`` entry; ``ValueError`` says what is wrong with it.

    ``"2026-12-24"`` (one day), ``"2026-12-24 - 2027-01-01"`` (first to last day,
    inclusive), ``"2026-12-23 17:00 - 2027-01-04 09:00"`` (from a moment to a moment).
    A date without a time starts at its 00:00, and as the end includes the whole day.
    """
    entry = " ".join(text.split())
    match = _DATE_RANGE.fullmatch(entry)
    if match is None:
        raise ValueError(
            f"{text!r} is not a date range: write '2026-12-24', '2026-12-24 - 2027-01-01' "
            "or '2026-12-23 17:00 - 2027-01-04 09:00' (dates as YYYY-MM-DD)"
        )
    first_date, first_time, last_date, last_time = match.groups()
    start = _moment(first_date, first_time, end=False)
    if last_date is None:
        if first_time is not None:
            raise ValueError(f"{text!r}: a single moment is no range; give an end too")
        end = _moment(first_date, None, end=True)
    else:
        end = _moment(last_date, last_time, end=True)
    if end < start or (last_date is not None and last_date < first_date):
        raise ValueError(f"{text!r} ends before it starts")
    if end == start:
        raise ValueError(f"{text!r} starts where it ends: an empty range")
    return DateRange(text, start, end)


def weekly_overlap(windows: Sequence[WeeklyWindow]) -> str | None:
    """Why two of ``windows`` overlap, or None.

    Windows of one rule that share minutes are a typing mistake (a wrong day or hour);
    windows that only touch (one ends at 18:00, the next starts at 18:00) are fine.
    """
    pieces = [(window, start, length) for window in windows for start, length in window.spans]
    for index, (window, start, length) in enumerate(pieces):
        for other, other_start, other_length in pieces[index + 1 :]:
            if other is window:  # the days of one entry never overlap each other
                continue
            shared = _shared(start, length, other_start, other_length)
            if shared is None:
                continue
            where = f"{format_minute(shared[0])} to {format_minute(shared[1])}"
            return f"{window.text!r} and {other.text!r} overlap ({where})"
    return None


def dates_overlap(ranges: Sequence[DateRange]) -> str | None:
    """Why two of ``ranges`` overlap, or None (ranges that only touch are fine)."""
    ordered = sorted(ranges, key=lambda r: r.start)
    for earlier, later in itertools.pairwise(ordered):
        if later.start < earlier.end:
            return (
                f"{earlier.text!r} and {later.text!r} overlap (from {later.start:%Y-%m-%d %H:%M})"
            )
    return None


def complement(windows: Iterable[WeeklyWindow]) -> tuple[tuple[int, int], ...]:
    """The stretches of the week no window covers, as (start minute, length) pairs in
    week order; a stretch running past Sunday 24:00 is one pair, listed last."""
    covered = _covered(windows)
    gaps: list[tuple[int, int]] = []
    minute = 0
    while minute < WEEK:
        if covered[minute]:
            minute += 1
            continue
        end = minute
        while end < WEEK and not covered[end]:
            end += 1
        gaps.append((minute, end - minute))
        minute = end
    if len(gaps) > 1 and gaps[0][0] == 0 and sum(gaps[-1]) == WEEK:
        first = gaps.pop(0)
        gaps[-1] = (gaps[-1][0], gaps[-1][1] + first[1])
    return tuple(gaps)


def format_minute(minute: int) -> str:
    """A minute of the week as ``Fri 18:00``."""
    minute %= WEEK
    day, rest = divmod(minute, DAY)
    return f"{DAY_NAMES[day]} {rest // 60:02d}:{rest % 60:02d}"


def _covered(windows: Iterable[WeeklyWindow]) -> bytearray:
    """One flag per minute of the week: 1 where a window covers it."""
    covered = bytearray(WEEK)
    for window in windows:
        for start, length in window.spans:
            for minute in range(start, start + min(length, WEEK)):
                covered[minute % WEEK] = 1
    return covered


def _shared(a: int, a_len: int, b: int, b_len: int) -> tuple[int, int] | None:
    """The first shared minute range of two week stretches (start, end), or None."""
    for shift in (-WEEK, 0, WEEK):
        start = max(a, b + shift)
        end = min(a + a_len, b + shift + b_len)
        if start < end:
            return start, end
    return None


def _day(word: str) -> int:
    index = _DAY_WORDS.get(word.lower())
    if index is None:
        raise ValueError(
            f"{word!r} is not a day of the week (use Mon, Tue, Wed, Thu, Fri, Sat, Sun "
            "or the full names)"
        )
    return index


def _days(text: str) -> list[int]:
    """``Mon-Fri``, ``Mon,Wed,Fri``, ``Fri-Mon`` (wrapping), ``daily``: day indexes."""
    if text.strip().lower() in ("daily", "every day"):
        return list(range(7))
    days: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"{text!r}: an empty day in the list")
        bounds = re.split(_SEP, part)
        if len(bounds) == 1:
            chosen = [_day(bounds[0])]
        elif len(bounds) == 2:
            first, last = _day(bounds[0]), _day(bounds[1])
            chosen = [(first + i) % 7 for i in range((last - first) % 7 + 1)]
        else:
            raise ValueError(f"{part!r} is not a day or a range of days like Mon-Fri")
        for day in chosen:
            if day in days:
                raise ValueError(f"{text!r} names {DAY_NAMES[day]} twice")
            days.append(day)
    return days


def _merge_days(days: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Whole days as spans; consecutive days become one span (so Sat-Sun is one)."""
    spans: list[tuple[int, int]] = []
    for day in days:
        if spans and (spans[-1][0] + spans[-1][1]) % WEEK == day * DAY and spans[-1][1] < WEEK:
            spans[-1] = (spans[-1][0], spans[-1][1] + DAY)
        else:
            spans.append((day * DAY, DAY))
    return tuple(spans)


def _time_of_day(text: str, *, end: bool) -> int:
    """``HH:MM`` as minutes since midnight; ``24:00`` only as an end."""
    hours, minutes = (int(part) for part in text.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes) or (hours == 24 and not end):
        allowed = "00:00 to 24:00" if end else "00:00 to 23:59"
        raise ValueError(f"{text} is not a time of day ({allowed})")
    return hours * 60 + minutes


def _moment(day: str, clock: str | None, *, end: bool) -> datetime:
    try:
        parsed = date.fromisoformat(day)
    except ValueError:
        raise ValueError(f"{day} is not a date (YYYY-MM-DD)") from None
    if not FIRST_YEAR <= parsed.year <= LAST_YEAR:
        raise ValueError(f"{day}: use a year from {FIRST_YEAR} to {LAST_YEAR}")
    if clock is None:
        midnight = datetime.combine(parsed, time())
        return midnight + timedelta(days=1) if end else midnight
    minutes = _time_of_day(clock, end=end)
    return datetime.combine(parsed, time()) + timedelta(minutes=minutes)
