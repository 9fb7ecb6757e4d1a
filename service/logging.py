"""structlog for the service and for uvicorn's own records: one pipeline, two renderers.

JSON lines where a machine reads the logs (containers), a readable console on a
terminal. Standard-library records (uvicorn, the SDK's httpx) go through the same
processors, so every line has the same shape.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(*, fmt: str, level: str) -> None:
    """Route structlog and stdlib logging to stderr in ``fmt`` (json|console)."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if fmt == "json" else _identity,
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
    # The SDK's httpx logs every request at INFO; the job lines already say what happened.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _drop_color_message(_: Any, __: str, event_dict: Any) -> Any:
    # uvicorn adds an ANSI-coloured copy of its message as an "extra".
    event_dict.pop("color_message", None)
    return event_dict


def _identity(_: Any, __: str, event_dict: Any) -> Any:
    return event_dict
