"""The service's own verbs: ``serve``, ``register``, ``migrate``.

Configuration problems end the command with one line naming the setting (exit 2),
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import uvicorn

from service.agentmail_api import AgentMailApi, ApiFailure
from service.cli import fail, load_settings
from service.logging import configure_logging
from service.server import uvicorn_config
from service.settings import SettingsError
from service.store import StoreUnavailable, open_store
from service.templates import TemplateError


def add_commands(subparsers: Any) -> None:
    """Register ``serve``, ``register`` and ``migrate``."""
    serve = subparsers.add_parser("serve", help="run the webhook service (uvicorn)")
    serve.add_argument("--host", default="0.0.0.0", help="interface to bind (default 0.0.0.0)")  # noqa: S104
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.set_defaults(handler=_serve)

    register = subparsers.add_parser(
        "register", help="register or repair the webhook once and print it"
    )
    register.set_defaults(handler=_register)

    migrate = subparsers.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(handler=_migrate)


def _serve(args: argparse.Namespace) -> int:
    from service.app import create_app

    settings = load_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    try:
        app = create_app(settings)
    except (SettingsError, TemplateError) as exc:
        fail(f"configuration error: {exc}", 2)
    server = uvicorn.Server(uvicorn_config(app, host=args.host, port=args.port))
    server.run()
    return 0 if server.started else 1


def _register(args: argparse.Namespace) -> int:
    from service import registration

    settings = load_settings()
    configure_logging(fmt=settings.log_format, level="WARNING")
    desired = registration.webhook_spec(settings)
    if desired is None:
        fail("configuration error: AUTOREPLY_PUBLIC_URL: is required to register", 2)

    async def run() -> dict[str, object]:
        api = AgentMailApi(
            api_key=settings.api_key,
            base_url=settings.base_url,
            timeout=settings.api_timeout_seconds,
        )
        try:
            return registration.describe(await registration.ensure_webhook(api, desired))
        finally:
            await api.aclose()

    try:
        webhook = asyncio.run(run())
    except ApiFailure as failure:
        fail(f"registration failed: {failure.reason}", 1)
    print(f"webhook {webhook['webhook_id']} -> {webhook['url']}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    settings = load_settings()

    async def run() -> None:
        store = open_store(settings.database_url)
        await store.open()
        await store.close()

    try:
        asyncio.run(run())
    except StoreUnavailable as exc:
        fail(f"migration failed: {exc}", 1)
    print("database is up to date")
    return 0
