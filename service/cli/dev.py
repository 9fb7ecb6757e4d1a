"""The sandbox and the service in one process: ``autoreply dev`` and ``autoreply demo``.

``dev`` keeps both running for trying things by hand; ``demo`` injects a handful of
emails, prints what the service did with each, and exits 0 only if every outcome is
the expected one (it doubles as a smoke test of a fresh install).

Both run on one event loop under their own uvicorn server. Only the service's server
listens for SIGINT/SIGTERM; when it stops, the sandbox is stopped after it, so Ctrl-C
ends both in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette

from service.app import create_app
from service.runtime import Runtime
from service.sandbox import create_sandbox_app
from service.server import uvicorn_config
from service.settings import Settings

SANDBOX_KEY = "am_sandbox"
DEMO_INBOX = "demo@agentmail.to"


class _BackgroundServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the main one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True, kw_only=True, slots=True)
class Ports:
    """Where the two servers listen."""

    host: str = "127.0.0.1"
    sandbox: int = 9100
    service: int = 8000

    @property
    def sandbox_url(self) -> str:
        return f"http://{self.host}:{self.sandbox}"

    @property
    def service_url(self) -> str:
        return f"http://{self.host}:{self.service}"


def dev_settings(ports: Ports, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings pointing the service at the local sandbox; other settings as configured."""
    env = dict(os.environ if environ is None else environ)
    env.update(
        AGENTMAIL_API_KEY=SANDBOX_KEY,
        AGENTMAIL_BASE_URL=ports.sandbox_url,
        AUTOREPLY_PUBLIC_URL=ports.service_url,
    )
    env.pop("AUTOREPLY_WEBHOOK_SECRET", None)
    return Settings.from_environ(env, dotenv=None)


@contextlib.asynccontextmanager
async def sandbox_server(ports: Ports, *, inboxes: tuple[str, ...]) -> AsyncIterator[Starlette]:
    """Run the sandbox in the background for the duration of the block."""
    app = create_sandbox_app(api_keys=(SANDBOX_KEY,), inboxes=inboxes)
    server = _BackgroundServer(uvicorn_config(app, host=ports.host, port=ports.sandbox))
    task = asyncio.create_task(server.serve())
    try:
        await _until_started(server, task)
        yield app
    finally:
        server.should_exit = True
        await task


async def serve_service(settings: Settings, ports: Ports, *, background: bool = False) -> Any:
    """Build the service app; serve it (blocking) or return a running background server."""
    runtime = Runtime(settings)
    app = create_app(runtime=runtime)
    config = uvicorn_config(app, host=ports.host, port=ports.service)
    if not background:
        await uvicorn.Server(config).serve()
        return None
    server = _BackgroundServer(config)
    task = asyncio.create_task(server.serve())
    await _until_started(server, task)
    return server, task, runtime


async def _until_started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped before it started")
        await asyncio.sleep(0.02)
