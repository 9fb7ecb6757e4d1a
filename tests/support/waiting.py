"""Polling helpers: wait for a condition instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL = 0.01


async def until(predicate: Callable[[], bool], *, within: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` (a cheap, possibly blocking call) until true; TimeoutError if not."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(POLL)
    raise TimeoutError(f"timed out after {within:g} s waiting for {what or predicate}")


async def until_awaited(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, what: str = ""
) -> None:
    """Await ``check()`` (e.g. a store read) until it is true; TimeoutError if not."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(POLL)
    raise TimeoutError(f"timed out after {within:g} s waiting for {what or check}")


def until_sync(predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "") -> None:
    """The blocking variant of :func:`until`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(POLL)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what or predicate}")
