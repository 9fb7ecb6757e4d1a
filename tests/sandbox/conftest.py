"""Helpers for the sandbox's own tests: an SDK client that keeps every raw JSON answer,
so each answer can be validated strictly against the SDK's pydantic models."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from agentmail import AgentMailEnvironment, AsyncAgentMail
from pydantic import BaseModel

from service.sandbox import AsyncSandboxClient

if TYPE_CHECKING:
    from tests.conftest import SandboxHandle

NO_RETRY: dict[str, Any] = {"max_retries": 0}


def known_keys(model: type[BaseModel]) -> set[str]:
    """The wire names of a model's fields."""
    return {f.alias or name for name, f in model.model_fields.items()}


def strict(model: type[BaseModel], raw: Any) -> Any:
    """Validate ``raw`` with ``model.model_validate`` (not the SDK's lenient parsing) and
    check that it carries no key the model does not know."""
    assert isinstance(raw, dict), raw
    unknown = set(raw) - known_keys(model)
    assert not unknown, f"{model.__name__} has no fields {unknown}"
    return model.model_validate(raw)


@dataclass
class Exchange:
    """One HTTP request/response the SDK made."""

    method: str
    url: httpx.URL
    status: int
    headers: httpx.Headers
    body: Any


@dataclass
class Contract:
    """An SDK client plus the raw answers it received."""

    client: AsyncAgentMail
    http: httpx.AsyncClient
    exchanges: list[Exchange] = field(default_factory=list)

    def last(self) -> Exchange:
        """The most recent exchange."""
        return self.exchanges[-1]

    def last_json(self) -> Any:
        """The most recent answer body."""
        return self.exchanges[-1].body


@pytest.fixture
async def contract(sandbox: SandboxHandle) -> AsyncIterator[Contract]:
    """``AsyncAgentMail`` on the sandbox, recording every raw answer."""
    async with _contract_on(sandbox) as found:
        yield found


@pytest.fixture
async def contract_factory() -> AsyncIterator[Callable[[SandboxHandle], Awaitable[Contract]]]:
    """A recording SDK client for a sandbox made by ``sandbox_factory``."""
    async with AsyncExitStack() as stack:

        async def make(handle: SandboxHandle) -> Contract:
            return await stack.enter_async_context(_contract_on(handle))

        yield make


@asynccontextmanager
async def _contract_on(sandbox: SandboxHandle) -> AsyncIterator[Contract]:
    exchanges: list[Exchange] = []

    async def record(response: httpx.Response) -> None:
        content = await response.aread()
        body = response.json() if content else None
        exchanges.append(
            Exchange(
                response.request.method,
                response.request.url,
                response.status_code,
                response.headers,
                body,
            )
        )

    async with httpx.AsyncClient(timeout=30.0, event_hooks={"response": [record]}) as http:
        client = AsyncAgentMail(
            api_key=sandbox.api_key,
            environment=AgentMailEnvironment(http=sandbox.url, websockets="ws://unused"),
            httpx_client=http,
        )
        yield Contract(client=client, http=http, exchanges=exchanges)


@pytest.fixture
async def admin_async(sandbox: SandboxHandle) -> AsyncIterator[AsyncSandboxClient]:
    """The async admin client for ``sandbox``."""
    async with AsyncSandboxClient(sandbox.url) as client:
        yield client


@pytest.fixture
def raw(sandbox: SandboxHandle) -> Iterator[httpx.Client]:
    """A plain httpx client on the sandbox with the API key set, for non-SDK requests."""
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}
    with httpx.Client(base_url=sandbox.url, headers=headers, timeout=30.0) as client:
        yield client


def create_webhook(
    client: httpx.Client,
    url: str,
    event_types: list[str] | None = None,
    *,
    inbox: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Create a webhook over plain HTTP (org-level, or inbox-scoped with ``inbox``)."""
    path = f"/v0/inboxes/{inbox}/webhooks" if inbox else "/v0/webhooks"
    body = {"url": url, "event_types": event_types or ["message.received"], **fields}
    answer = client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    webhook: dict[str, Any] = answer.json()
    return webhook
