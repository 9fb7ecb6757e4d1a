"""The sandbox as one Starlette app: ``/v0`` REST API plus the ``/_sandbox`` admin API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Mount

from service.sandbox.admin import admin_routes
from service.sandbox.api import RestApi
from service.sandbox.clock import Clock
from service.sandbox.delivery import DEFAULT_ATTEMPT_TIMEOUT
from service.sandbox.state import DEFAULT_API_KEYS, DEFAULT_INBOXES, Sandbox


def create_sandbox_app(
    *,
    api_keys: Iterable[str] = DEFAULT_API_KEYS,
    inboxes: Iterable[str] = DEFAULT_INBOXES,
    time_scale: float = 1.0,
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
    seed: int | None = None,
    clock: Clock | None = None,
) -> Starlette:
    """Build a sandbox app; its state is ``app.state.sandbox``.

    ``time_scale`` multiplies the webhook retry delays (0.001 runs Svix's 27.6 h schedule
    in about 100 s); ``attempt_timeout`` is how long a receiver may take per attempt;
    ``seed`` makes ids and fault draws repeatable; ``clock`` replaces the wall clock used
    for timestamps and Idempotency-Key expiry. Serve it with lifespan on (uvicorn does by
    default): startup opens the webhook sender, shutdown cancels pending deliveries.
    """
    sandbox = Sandbox(
        api_keys=api_keys,
        inboxes=inboxes,
        time_scale=time_scale,
        attempt_timeout=attempt_timeout,
        seed=seed,
        clock=clock,
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await sandbox.start()
        try:
            yield
        finally:
            await sandbox.stop()

    app = Starlette(
        routes=[Mount("/v0", app=RestApi(sandbox)), *admin_routes()],
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    return app
