"""The Starlette application and its factory (``service.app:create_app``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from service import intake, metrics
from service.runtime import Runtime
from service.settings import WEBHOOK_PATH, Settings


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
            Route(WEBHOOK_PATH, intake.WebhookEndpoint(), methods=["POST"]),
            Route("/healthz", intake.healthz, methods=["GET"]),
            Route("/readyz", intake.readyz, methods=["GET"]),
            Route("/metrics", metrics.scrape, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app
