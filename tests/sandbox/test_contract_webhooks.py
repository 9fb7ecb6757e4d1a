"""Webhooks through the real SDK: every answer validated strictly against its model."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from agentmail.core.api_error import ApiError
from agentmail.errors import NotFoundError, ValidationError
from agentmail.types.validation_error_response import ValidationErrorResponse
from agentmail.webhooks.types.list_webhooks_response import ListWebhooksResponse
from agentmail.webhooks.types.webhook import Webhook

from tests.sandbox.conftest import NO_RETRY, Contract, strict

URL = "http://127.0.0.1:9/hook"


async def test_org_webhook_lifecycle(contract: Contract, sandbox: Any) -> None:
    sdk = contract.client
    created = await sdk.webhooks.create(
        url=URL, event_types=["message.received"], inbox_ids=[sandbox.inbox]
    )
    assert contract.last().status == 200
    wire = strict(Webhook, contract.last_json())
    assert wire.secret.startswith("whsec_")
    assert len(base64.b64decode(wire.secret.removeprefix("whsec_"))) == 24
    assert wire.enabled is True
    assert wire.inbox_ids == [sandbox.inbox]
    assert wire.inbox_id is None

    await sdk.webhooks.get(created.webhook_id)
    assert strict(Webhook, contract.last_json()) == wire

    await sdk.webhooks.list()
    listed = strict(ListWebhooksResponse, contract.last_json())
    assert [w.webhook_id for w in listed.webhooks] == [created.webhook_id]
    assert listed.count == 1

    updated = await sdk.webhooks.update(
        created.webhook_id,
        event_types=["message.received", "message.sent"],
        enabled=False,
        add_pod_ids=["pod_sandbox"],
    )
    wire = strict(Webhook, contract.last_json())
    assert wire.event_types == ["message.received", "message.sent"]
    assert wire.enabled is False
    assert wire.pod_ids == ["pod_sandbox"]
    assert updated.secret == created.secret
    assert updated.url == created.url

    await sdk.webhooks.delete(created.webhook_id)
    assert contract.last().status == 204
    with pytest.raises(NotFoundError) as caught:
        await sdk.webhooks.get(created.webhook_id)
    assert caught.value.body.code == "not_found"


async def test_inbox_webhook_lifecycle(contract: Contract, sandbox: Any) -> None:
    hooks = contract.client.inboxes.webhooks
    created = await hooks.create(sandbox.inbox, url=URL, event_types=["message.received"])
    wire = strict(Webhook, contract.last_json())
    assert wire.inbox_id == sandbox.inbox
    await hooks.get(sandbox.inbox, created.webhook_id)
    strict(Webhook, contract.last_json())
    await hooks.list(sandbox.inbox)
    listed = strict(ListWebhooksResponse, contract.last_json())
    assert [w.webhook_id for w in listed.webhooks] == [created.webhook_id]
    await hooks.update(sandbox.inbox, created.webhook_id, enabled=False)
    assert strict(Webhook, contract.last_json()).enabled is False
    # Each route sees only its own webhooks.
    with pytest.raises(NotFoundError):
        await contract.client.webhooks.get(created.webhook_id)
    await contract.client.webhooks.list()
    assert strict(ListWebhooksResponse, contract.last_json()).webhooks == []
    await hooks.delete(sandbox.inbox, created.webhook_id)
    assert contract.last().status == 204
    with pytest.raises(NotFoundError):
        await hooks.get(sandbox.inbox, created.webhook_id)


async def test_each_webhook_gets_a_fresh_secret(contract: Contract) -> None:
    secrets = {
        (await contract.client.webhooks.create(url=URL, event_types=["message.sent"])).secret
        for _ in range(3)
    }
    assert len(secrets) == 3


async def test_repeated_client_id_returns_the_existing_webhook_unchanged(
    contract: Contract,
) -> None:
    sdk = contract.client.webhooks
    first = await sdk.create(url=URL, event_types=["message.received"], client_id="hook-1")
    again = await sdk.create(
        url="http://127.0.0.1:9/other", event_types=["message.sent"], client_id="hook-1"
    )
    assert contract.last().status == 200
    assert strict(Webhook, contract.last_json()) == strict(
        Webhook, first.model_dump(by_alias=True, mode="json", exclude_none=True)
    )
    assert again.url == URL
    assert again.event_types == ["message.received"]
    assert again.secret == first.secret
    listed = await sdk.list()
    assert listed.count == 1


async def test_client_id_is_per_route_and_freed_by_delete(contract: Contract, sandbox: Any) -> None:
    org = await contract.client.webhooks.create(
        url=URL, event_types=["message.received"], client_id="same"
    )
    scoped = await contract.client.inboxes.webhooks.create(
        sandbox.inbox, url=URL, event_types=["message.received"], client_id="same"
    )
    assert scoped.webhook_id != org.webhook_id
    await contract.client.webhooks.delete(org.webhook_id)
    fresh = await contract.client.webhooks.create(
        url=URL, event_types=["message.received"], client_id="same"
    )
    assert fresh.webhook_id != org.webhook_id


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"event_types": []}, "event_types"),
        ({"event_types": ["message.nope"]}, "event_types[0]"),
        ({"client_id": "me@example"}, "client_id"),
        ({"client_id": "x" * 257}, "client_id"),
        ({"url": "ftp://example.com/hook"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"inbox_ids": [f"i{n}@agentmail.to" for n in range(11)]}, "inbox_ids"),
        ({"pod_ids": [f"pod_{n}" for n in range(11)]}, "pod_ids"),
    ],
)
async def test_create_validation(contract: Contract, fields: dict[str, Any], path: str) -> None:
    kwargs: dict[str, Any] = {"url": URL, "event_types": ["message.received"], **fields}
    with pytest.raises(ValidationError):
        await contract.client.webhooks.create(**kwargs, request_options=NO_RETRY)
    body = strict(ValidationErrorResponse, contract.last_json())
    assert body.code == "validation_error"
    assert path in [e["path"] for e in body.errors]
    await contract.client.webhooks.list()
    assert contract.last_json()["count"] == 0


async def test_event_types_are_required(raw: Any) -> None:
    answer = raw.post("/v0/webhooks", json={"url": URL})
    assert answer.status_code == 400
    assert "event_types" in [
        e["path"] for e in strict(ValidationErrorResponse, answer.json()).errors
    ]


async def test_update_rules(contract: Contract, sandbox: Any, raw: Any) -> None:
    sdk = contract.client.webhooks
    hook = await sdk.create(url=URL, event_types=["message.received"], inbox_ids=[sandbox.inbox])
    # An empty event_types list leaves the list as it is.
    same = await sdk.update(hook.webhook_id, event_types=[])
    assert same.event_types == ["message.received"]
    # url, client_id and secret cannot change.
    for field_name in ("url", "client_id", "secret"):
        answer = raw.patch(f"/v0/webhooks/{hook.webhook_id}", json={field_name: "x"})
        assert answer.status_code == 400, field_name
    # A scoped webhook keeps at least one inbox or pod.
    with pytest.raises(ValidationError):
        await sdk.update(
            hook.webhook_id, remove_inbox_ids=[sandbox.inbox], request_options=NO_RETRY
        )
    # An inbox webhook accepts only event_types and enabled.
    scoped = await contract.client.inboxes.webhooks.create(
        sandbox.inbox, url=URL, event_types=["message.received"]
    )
    answer = raw.patch(
        f"/v0/inboxes/{sandbox.inbox}/webhooks/{scoped.webhook_id}",
        json={"add_inbox_ids": [sandbox.inbox]},
    )
    assert answer.status_code == 400
    answer = raw.post(
        f"/v0/inboxes/{sandbox.inbox}/webhooks",
        json={"url": URL, "event_types": ["message.received"], "inbox_ids": [sandbox.inbox]},
    )
    assert answer.status_code == 400
    unchanged = await sdk.get(hook.webhook_id)
    assert unchanged.updated_at == same.updated_at


async def test_list_is_newest_first_and_pages(contract: Contract) -> None:
    sdk = contract.client.webhooks
    ids = [(await sdk.create(url=URL, event_types=["message.sent"])).webhook_id for _ in range(5)]
    first = await sdk.list(limit=2)
    strict(ListWebhooksResponse, contract.last_json())
    assert [w.webhook_id for w in first.webhooks] == ids[::-1][:2]
    assert first.next_page_token
    second = await sdk.list(limit=2, page_token=first.next_page_token)
    third = await sdk.list(limit=2, page_token=second.next_page_token)
    assert [w.webhook_id for w in [*second.webhooks, *third.webhooks]] == ids[::-1][2:]
    assert third.next_page_token is None
    ascending = await sdk.list(ascending=True)
    assert [w.webhook_id for w in ascending.webhooks] == ids
    with pytest.raises(ApiError) as caught:
        await sdk.list(page_token="garbage!", request_options=NO_RETRY)
    assert caught.value.status_code == 400
    strict(ValidationErrorResponse, contract.last_json())


async def test_unknown_inbox_route_is_404(contract: Contract) -> None:
    with pytest.raises(ApiError) as caught:
        await contract.client.inboxes.webhooks.list("nobody@agentmail.to")
    assert caught.value.status_code == 404
