"""The Starlette application and its factory (``service.app:create_app``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import intake, metrics
from service.burst import CountRequests
from service.models import QueueStats
from service.runtime import Runtime
from service.settings import WEBHOOK_PATH, Settings
from service.store import StoreUnavailable

#: How long a scrape waits for the store before reporting it down.
STATS_TIMEOUT = 2.0


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> Starlette:
    """Build the app; settings come from the environment unless given.

    The runtime is built here, not in the lifespan, so a bad setting or template
    fails before the server starts listening.
    """
    if runtime is None:
        runtime = Runtime(settings or Settings.from_environ())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = Starlette(
        routes=[
            # Counted for the burst step-back; the endpoint itself knows nothing of it.
            Route(
                WEBHOOK_PATH,
                CountRequests(intake.WebhookEndpoint(), runtime.burst),
                methods=["POST"],
            ),
            Route("/healthz", intake.healthz, methods=["GET"]),
            Route("/readyz", intake.readyz, methods=["GET"]),
            Route("/metrics", scrape, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app


async def scrape(request: Request) -> Response:
    """``GET /metrics``: every metric, in the format the scraper asked for.

    The queue is read from the store now (so every replica reports the shared queue as
    it is) and the registration state from the runtime; ``service.metrics`` encodes.
    """
    runtime: Runtime = request.app.state.runtime
    now = time.time()
    stats: QueueStats | None
    try:
        async with asyncio.timeout(STATS_TIMEOUT):
            stats = await runtime.store.stats(now=now)
    except (StoreUnavailable, TimeoutError):
        stats = None
    body, content_type = metrics.exposition(
        accept=request.headers.get("accept", ""),
        stats=stats,
        registration=runtime.registration,
        now=now,
    )
    return Response(body, headers={"Content-Type": content_type})
