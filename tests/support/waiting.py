"""Polling helpers: wait for a condition instead of sleeping a fixed time.

``what`` names the condition in the TimeoutError; it may be a callable, called only on
timeout, to describe the state the wait ended in (the job's state, the log's tail).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL = 0.01

Description = str | Callable[[], str]


def _timed_out(within: float, what: Description, default: object) -> TimeoutError:
    described = what() if callable(what) else what
    return TimeoutError(f"timed out after {within:g} s waiting for {described or default}")


async def until(
    predicate: Callable[[], bool], *, within: float = 10.0, what: Description = ""
) -> None:
    """Poll ``predicate`` (a cheap, possibly blocking call) until true; TimeoutError if not."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(POLL)
    raise _timed_out(within, what, predicate)


async def until_awaited(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, what: Description = ""
) -> None:
    """Await ``check()`` (e.g. a store read) until it is true; TimeoutError if not.

    ``within`` bounds the whole wait, a ``check()`` that hangs included.
    """
    bound = asyncio.timeout(within)
    try:
        async with bound:
            while True:
                if await check():
                    return
                await asyncio.sleep(POLL)
    except TimeoutError:
        if not bound.expired():
            raise  # the check's own TimeoutError, not the wait's
        raise _timed_out(within, what, check) from None


def until_sync(
    predicate: Callable[[], bool], *, timeout: float = 10.0, what: Description = ""
) -> None:
    """The blocking variant of :func:`until`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(POLL)
    raise _timed_out(timeout, what, predicate)
