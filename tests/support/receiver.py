"""A scriptable webhook receiver: a tiny Starlette app that records every request.

Each POST is recorded (headers, raw body, arrival time on ``time.monotonic``) and
answered from a script: queued ``(status, delay)`` steps first, then the default. It
runs under a real uvicorn (see :func:`tests.support.server.serve`), so deliveries cross
a real socket. The receiver does not verify signatures itself: tests do, with
:func:`verify`, so a bad signature fails the test instead of hiding in a 400.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from svix.webhooks import Webhook


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    arrived: float
    answered: int

    @property
    def svix_id(self) -> str:
        """The ``svix-id`` header."""
        return self.headers["svix-id"]

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)


def verify(received: Received, secret: str) -> dict[str, Any]:
    """Check the Svix signature with the real ``svix`` library; return the parsed event."""
    Webhook(secret).verify(received.body, received.headers)
    event: dict[str, Any] = json.loads(received.body)
    return event


class WebhookReceiver:
    """Records deliveries and answers them per script; thread-safe for test code."""

    def __init__(self, default_status: int = 200) -> None:
        self.default_status = default_status
        self._script: deque[tuple[int, float]] = deque()
        self._received: list[Received] = []
        self._changed = threading.Condition()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    def script(self, *steps: int | tuple[int, float]) -> None:
        """Queue answers: a status, or ``(status, delay_seconds)``; then the default."""
        for step in steps:
            self._script.append(step if isinstance(step, tuple) else (step, 0.0))

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        arrived = time.monotonic()
        status, delay = self._script.popleft() if self._script else (self.default_status, 0.0)
        with self._changed:
            self._received.append(
                Received(
                    path=request.url.path,
                    headers=dict(request.headers),
                    body=body,
                    arrived=arrived,
                    answered=status,
                )
            )
            self._changed.notify_all()
        if delay:
            await asyncio.sleep(delay)
        return Response(status_code=status)

    @property
    def received(self) -> list[Received]:
        """Everything received so far, in arrival order."""
        with self._changed:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least ``count`` requests arrived; return them all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(self._received)} of {count} webhook requests after {timeout:g} s"
                    )
                self._changed.wait(remaining)
            return list(self._received)
