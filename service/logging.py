"""structlog for the service and for uvicorn's own records: one pipeline, two renderers.

JSON lines where a machine reads the logs (containers), a readable console on a
terminal. The service's own events go straight through structlog's native loggers
(rendered with orjson): a line per delivery sits on the webhook's hot path, and the
stdlib ``logging`` round trip cost more than the rest of the logging together.
Standard-library records (uvicorn, httpx) are rendered by the same processors, so
every line has the same shape.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson
import structlog


class UtcTimestamp:
    """Adds ``timestamp``, ISO 8601 in UTC with microseconds, as structlog's
    ``TimeStamper(fmt="iso", utc=True)`` writes it, for a third of its cost: the date and
    time of day are formatted once a second. (A line per delivery is on the webhook path.)
    """

    def __init__(self) -> None:
        # One attribute, replaced whole, so a thread never sees a half-updated pair.
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, _: Any, __: str, event_dict: Any) -> Any:
        now = time.time()
        second = int(now)
        cached, prefix = self._second
        if second != cached:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, prefix)
        event_dict["timestamp"] = f"{prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


#: Characters kept of any one string value of a line. Intake cuts values from requests
#: to 200 itself; this bounds the rest (a message id out of a 1 MiB body in a job's
#: line, an error quoting an API answer), so no line can be megabytes long.
MAX_VALUE_CHARS = 1000


def clip_values(_: Any, __: str, event_dict: Any) -> Any:
    """Cut every string value longer than :data:`MAX_VALUE_CHARS`, marked with its length."""
    for key, value in event_dict.items():
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            event_dict[key] = f"{value[:MAX_VALUE_CHARS]}...[{len(value)} chars]"
    return event_dict


#: Characters kept of a formatted traceback in JSON lines: its head (where it started) and
#: its tail (the exception and its message) share them. A message can quote an unbounded
#: input. (The console format, for a terminal, prints tracebacks whole.)
MAX_TRACEBACK_CHARS = 8000


def clip_traceback(_: Any, __: str, event_dict: Any) -> Any:
    """Cut the middle out of an ``exception`` longer than :data:`MAX_TRACEBACK_CHARS`."""
    text = event_dict.get("exception")
    if isinstance(text, str) and len(text) > MAX_TRACEBACK_CHARS:
        half = MAX_TRACEBACK_CHARS // 2
        event_dict["exception"] = f"{text[:half]}\n...[{len(text)} chars]...\n{text[-half:]}"
    return event_dict


#: How a JSON line carries a traceback: formatted into ``exception``, then clipped.
_JSON_TRACEBACK: list[Any] = [structlog.processors.format_exc_info, clip_traceback]

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    UtcTimestamp(),
    clip_values,
]


def configure_logging(*, fmt: str, level: str) -> None:
    """Route structlog and stdlib logging to stderr in ``fmt`` (json|console)."""
    numeric = logging.getLevelNamesMapping()[level]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        tail: list[Any] = [*_JSON_TRACEBACK, renderer]
        foreign_renderer: Any = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        tail = [renderer, _encode]
        foreign_renderer = renderer
    structlog.configure(
        processors=[*_SHARED, _add_logger_name, *tail],
        # Positional get_logger() arguments reach the factory: the logger's name.
        logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
    _configure_stdlib(numeric, fmt, foreign_renderer)


def _configure_stdlib(level: int, fmt: str, renderer: Any) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *_SHARED,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _drop_color_message,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *(_JSON_TRACEBACK if fmt == "json" else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # One line per delivery comes from intake; uvicorn's access line would repeat it.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # The SDK's HTTP stack logs every request; the job lines already say what happened.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _add_logger_name(logger: Any, _: str, event_dict: Any) -> Any:
    name = getattr(logger, "name", None)
    if name:
        event_dict["logger"] = name
    return event_dict


def _encode(_: Any, __: str, line: str) -> bytes:
    return line.encode("utf-8", "replace")


def _dumps(event: Any, **_: Any) -> bytes:
    return orjson.dumps(event, default=str)


def _drop_color_message(_: Any, __: str, event_dict: Any) -> Any:
    # uvicorn adds an ANSI-coloured copy of its message as an "extra".
    event_dict.pop("color_message", None)
    return event_dict
