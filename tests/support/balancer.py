"""A tiny HTTP load balancer for tests and benchmarks of several replicas.

``Balancer().app`` is an ASGI app (serve it with tests/support/server.py's ``serve``)
that forwards each request to a random backend from ``backends``, as a cloud load
balancer would. A backend that refuses the connection is skipped (the request never
reached it, so trying another is safe); any other failure answers 502, and the sender
(Svix) retries. ``backends`` may be replaced at any time from another thread.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.sandbox.client import IDLE_CONNECTION_SECONDS

#: Headers that belong to one connection, not to the request being forwarded.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"}
)


class Balancer:
    """Forwards every request to a random backend from ``backends`` (see the module docstring)."""

    def __init__(self) -> None:
        self.backends: list[str] = []
        #: backend URL -> requests it answered
        self.forwarded: Counter[str] = Counter()
        self._client: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[Route("/{path:path}", self._proxy, methods=["GET", "POST", "PUT", "PATCH"])],
            lifespan=self._lifespan,
        )

    @asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(keepalive_expiry=IDLE_CONNECTION_SECONDS)
        async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
            self._client = client
            yield

    async def _proxy(self, request: Request) -> Response:
        assert self._client is not None
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        backends = list(self.backends)
        random.shuffle(backends)
        for backend in backends:
            try:
                answer = await self._client.request(
                    request.method, backend + request.url.path, headers=headers, content=body
                )
            except httpx.ConnectError:
                continue
            except httpx.HTTPError as exc:
                return Response(f"bad gateway: {exc!r}", status_code=502)
            self.forwarded[backend] += 1
            return Response(
                answer.content,
                status_code=answer.status_code,
                headers={
                    k: v
                    for k, v in answer.headers.items()
                    if k.lower() not in HOP_BY_HOP | {"content-encoding"}
                },
            )
        return Response("no backend accepted the connection", status_code=502)
