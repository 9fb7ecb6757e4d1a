"""Fixtures shared by every test package.

* ``_scrub_env`` (autouse): removes ``AGENTMAIL_*`` and ``AUTOREPLY_*`` variables, so a
  developer's shell never leaks into a test.
* ``sandbox``: a fresh AgentMail sandbox on real uvicorn (see :class:`SandboxHandle`),
  retries scaled by 0.001 (Svix's 27.6 h schedule in about 100 s; the first retries come
  after 0, 5 ms, 300 ms and 1.8 s).
* ``sandbox_factory``: start sandboxes with other settings, e.g.
  ``sandbox_factory(time_scale=1e-5, attempt_timeout=0.5, inboxes=["a@x.to", "b@x.to"])``.
* ``receiver``: a scriptable webhook receiver on real uvicorn (``.url``, ``.script()``,
  ``.wait_for()``; see tests/support/receiver.py).
* ``agentmail``: an ``AsyncAgentMail`` SDK client pointed at ``sandbox``.
* ``deployment``: real ``autoreply serve`` processes on a SQLite file, pointed at
  ``sandbox`` (tests/support/deployment.py).

Every server is stopped (and its pending deliveries cancelled) at the end of its test.

Tests are layered by cost: every test that starts a server or a process is marked
``slow``, those using the fixtures above automatically (``SERVER_FIXTURES``), the others
by hand. ``make test`` runs everything; ``make test-fast`` (``-m "not slow"``) the rest.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentmail import AgentMailEnvironment, AsyncAgentMail

from service.sandbox import Sandbox, SandboxClient, create_sandbox_app
from tests.support.deployment import Deployment
from tests.support.receiver import WebhookReceiver
from tests.support.server import serve

DEFAULT_TEST_TIME_SCALE = 0.001
SCRUBBED_PREFIXES = ("AGENTMAIL_", "AUTOREPLY_")
#: Fixtures that start a server: a test using any of them, even indirectly, is slow.
SERVER_FIXTURES = frozenset({"sandbox_factory", "receiver", "running_service", "make_replicas"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that starts a server through a fixture."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _scrub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(SCRUBBED_PREFIXES):
            monkeypatch.delenv(name)


@dataclass
class SandboxHandle:
    """A running sandbox as tests see it.

    ``url`` is the base URL (give it to the SDK as ``AgentMailEnvironment(http=url)``),
    ``api_key`` an accepted key, ``inbox`` the first pre-created inbox (``inboxes`` all
    of them), ``admin`` a :class:`SandboxClient` for the admin API and ``app_state`` the
    live :class:`Sandbox` (owned by the server thread: read, don't write).
    """

    url: str
    api_key: str
    inbox: str
    inboxes: list[str]
    app_state: Sandbox
    admin: SandboxClient

    def sdk(self, **kwargs: Any) -> AsyncAgentMail:
        """An ``AsyncAgentMail`` client for this sandbox (extra kwargs go to the SDK).

        Pass your own ``httpx_client=`` and close it, or use the ``agentmail`` fixture.
        """
        return AsyncAgentMail(
            api_key=kwargs.pop("api_key", self.api_key),
            environment=AgentMailEnvironment(http=self.url, websockets="ws://unused"),
            **kwargs,
        )


SandboxFactory = Callable[..., SandboxHandle]


@pytest.fixture
def sandbox_factory() -> Iterator[SandboxFactory]:
    """Start sandboxes with custom settings; all are stopped after the test."""
    with ExitStack() as stack:

        def start(
            *,
            api_keys: Iterable[str] = ("am_sandbox",),
            inboxes: Iterable[str] = ("demo@agentmail.to",),
            time_scale: float = DEFAULT_TEST_TIME_SCALE,
            **kwargs: Any,
        ) -> SandboxHandle:
            keys, addresses = list(api_keys), list(inboxes)
            app = create_sandbox_app(
                api_keys=keys, inboxes=addresses, time_scale=time_scale, **kwargs
            )
            server = stack.enter_context(serve(app))
            admin = stack.enter_context(SandboxClient(server.url))
            return SandboxHandle(
                url=server.url,
                api_key=keys[0],
                inbox=addresses[0],
                inboxes=addresses,
                app_state=app.state.sandbox,
                admin=admin,
            )

        yield start


@pytest.fixture
def sandbox(sandbox_factory: SandboxFactory) -> SandboxHandle:
    """A fresh sandbox with the default key ``am_sandbox`` and inbox ``demo@agentmail.to``."""
    return sandbox_factory()


@dataclass
class ReceiverHandle:
    """A running :class:`WebhookReceiver`; ``url`` is a ready webhook URL."""

    url: str
    base_url: str
    app: WebhookReceiver

    def script(self, *steps: int | tuple[int, float]) -> None:
        """Queue answers (see :meth:`WebhookReceiver.script`)."""
        self.app.script(*steps)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        """Block until ``count`` requests arrived."""
        return self.app.wait_for(count, timeout)

    @property
    def received(self) -> list[Any]:
        """Requests so far."""
        return self.app.received


@pytest.fixture
def receiver() -> Iterator[ReceiverHandle]:
    """A webhook receiver answering 200 unless scripted otherwise."""
    app = WebhookReceiver()
    with serve(app.app) as server:
        yield ReceiverHandle(url=f"{server.url}/hook", base_url=server.url, app=app)


@pytest.fixture
async def agentmail(sandbox: SandboxHandle) -> AsyncIterator[AsyncAgentMail]:
    """The real SDK, pointed at ``sandbox``, on an httpx client closed after the test."""
    async with httpx.AsyncClient(timeout=30.0) as http:
        yield sandbox.sdk(httpx_client=http)


@pytest.fixture
def deployment(sandbox: SandboxHandle, tmp_path: Path) -> Iterator[Deployment]:
    """``autoreply serve`` processes on a SQLite file in ``tmp_path``, pointed at
    ``sandbox`` (start them with ``deployment.start()``); all stopped afterwards."""
    deployment = Deployment(sandbox, tmp_path)
    yield deployment
    deployment.stop()
