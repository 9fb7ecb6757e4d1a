"""JSON log lines: one object per line, the same keys from structlog and from stdlib loggers.

Log shippers parse these lines; the timestamp must be ISO 8601 UTC and close to the
time of the call, whichever path produced the line.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
import structlog

from service.logging import MAX_TRACEBACK_CHARS, MAX_VALUE_CHARS, UtcTimestamp, configure_logging
from tests.support.waiting import until_sync

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture(name="stderr")
def _stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield capsys
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def assert_recent(stamp: object) -> None:
    assert isinstance(stamp, str)
    assert ISO_UTC.match(stamp), stamp
    assert abs(datetime.fromisoformat(stamp).timestamp() - time.time()) < 5


def test_structlog_and_stdlib_lines_share_one_shape(stderr: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json", level="INFO")
    structlog.get_logger("autoreply.intake").info("delivery", status=202)
    logging.getLogger("uvicorn.error").warning("from stdlib")
    ours, theirs = lines(stderr)
    assert ours["event"] == "delivery"
    assert ours["status"] == 202
    assert (ours["level"], ours["logger"]) == ("info", "autoreply.intake")
    assert (theirs["event"], theirs["level"]) == ("from stdlib", "warning")
    assert theirs["logger"] == "uvicorn.error"
    assert_recent(ours["timestamp"])
    assert_recent(theirs["timestamp"])


def test_lines_below_the_level_are_dropped(stderr: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json", level="WARNING")
    structlog.get_logger("autoreply.intake").info("delivery")
    structlog.get_logger("autoreply.intake").warning("store_unavailable")
    assert [line["event"] for line in lines(stderr)] == ["store_unavailable"]


@pytest.mark.slow
def test_timestamps_follow_the_clock_across_seconds() -> None:
    stamp = UtcTimestamp()
    seen: list[str] = []

    def the_second_moved_on() -> bool:
        seen.append(stamp(None, "info", {})["timestamp"])
        return len({s[:19] for s in seen}) >= 2

    until_sync(the_second_moved_on, timeout=30, what="the timestamp's second to move on")
    assert all(ISO_UTC.match(s) for s in seen)
    assert seen == sorted(seen)
    assert len({s[:19] for s in seen}) >= 2  # the cached second moved on
    assert_recent(seen[-1])


def test_long_values_are_cut_in_every_line(stderr: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json", level="INFO")
    huge = "m" * 1_000_000
    structlog.get_logger("autoreply.worker").info("job", message_id=huge, attempt=1)
    logging.getLogger("uvicorn.error").warning("bad %s", huge)
    ours, theirs = lines(stderr)
    assert ours["message_id"] == "m" * MAX_VALUE_CHARS + "...[1000000 chars]"
    assert ours["attempt"] == 1
    assert isinstance(theirs["event"], str)
    assert theirs["event"].endswith("...[1000004 chars]")
    assert len(theirs["event"]) < MAX_VALUE_CHARS + 30


def test_tracebacks_keep_their_ends_within_a_bound(stderr: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json", level="INFO")
    huge = "q" * 1_000_000
    for logger in (structlog.get_logger("autoreply.worker"), logging.getLogger("uvicorn.error")):
        try:
            raise ValueError(f"unparseable {huge} end-of-message")
        except ValueError:
            logger.exception("job_crashed")
    found = lines(stderr)
    assert len(found) == 2
    for line in found:
        text = line["exception"]
        assert isinstance(text, str)
        assert text.startswith("Traceback (most recent call last):")
        assert text.rstrip().endswith("end-of-message")
        assert len(text) <= MAX_TRACEBACK_CHARS + 40
