"""Webhook operations, org-level (``v0/webhooks``) and inbox-scoped
(``v0/inboxes/{inbox_id}/webhooks``).

``client_id`` follows the idempotency guide: a repeated ``client_id`` returns the
existing webhook unchanged with 200, even when the new request differs. It is scoped per
route (org, or each inbox) and freed when its webhook is deleted; the docs say neither,
so both are sandbox assumptions. Update changes only ``event_types`` (replaced when
non-empty), ``enabled`` and, at org level, the inbox/pod lists; url, client_id and
secret never change. Each route sees only its own webhooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from service.sandbox.errors import invalid, not_found
from service.sandbox.ids import webhook_secret
from service.sandbox.models import WebhookRecord
from service.sandbox.paging import page
from service.sandbox.validation import Body

if TYPE_CHECKING:
    from service.sandbox.state import Sandbox

EVENT_TYPES = frozenset(
    {
        "message.received",
        "message.received.spam",
        "message.received.blocked",
        "message.received.unauthenticated",
        "message.security.completed",
        "message.security.review",
        "message.security.override",
        "message.sent",
        "message.delivered",
        "message.bounced",
        "message.complained",
        "message.rejected",
        "message.opened",
        "domain.verified",
        "calendar.event.created",
        "calendar.event.updated",
        "calendar.event.deleted",
        "calendar.event.responded",
        "calendar.event.starting",
        "calendar.event.ending",
    }
)
MAX_SCOPE_IDS = 10


def _scope(owner_inbox_id: str | None) -> str:
    return f"inbox:{owner_inbox_id}" if owner_inbox_id else "org"


def _require_owner(sandbox: Sandbox, owner_inbox_id: str | None) -> None:
    if owner_inbox_id is not None and owner_inbox_id not in sandbox.inboxes:
        raise not_found("Inbox")


def _event_types(body: Body, *, required: bool) -> list[str] | None:
    values = body.data.get("event_types")
    if values is None:
        if required:
            body.error("event_types", "is required")
        return None
    types = body.strings("event_types")
    if types is None:
        return None
    if required and not types:
        body.error("event_types", "must list at least one event type")
        return None
    for index, event_type in enumerate(types):
        if event_type not in EVENT_TYPES:
            body.error(f"event_types[{index}]", f"unknown event type {event_type!r}")
    return list(dict.fromkeys(types))


def _check_ids(sandbox: Sandbox, body: Body, key: str, ids: list[str] | None) -> None:
    if not ids:
        return
    known = (
        sandbox.inboxes.keys()
        if "inbox" in key
        else {inbox.pod_id for inbox in sandbox.inboxes.values()}
    )
    for index, value in enumerate(ids):
        if value not in known:
            body.error(f"{key}[{index}]", f"unknown {'inbox' if 'inbox' in key else 'pod'}")


def _check_url(body: Body) -> str | None:
    url = body.string("url", required=True)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        body.error("url", "must be an absolute http or https URL")
        return None
    return url


def create(sandbox: Sandbox, owner_inbox_id: str | None, data: Any) -> dict[str, Any]:
    """Create a webhook, or return the one already created with this ``client_id``."""
    _require_owner(sandbox, owner_inbox_id)
    body = Body(data)
    url = _check_url(body)
    event_types = _event_types(body, required=True)
    client_id = body.token("client_id")
    headers = body.string_map("headers", header_names=True)
    if headers is not None and not headers:
        body.error("headers", "must have at least one entry when given")
    inbox_ids: list[str] | None = None
    pod_ids: list[str] | None = None
    if owner_inbox_id is None:
        inbox_ids = body.strings("inbox_ids", max_items=MAX_SCOPE_IDS)
        pod_ids = body.strings("pod_ids", max_items=MAX_SCOPE_IDS)
        _check_ids(sandbox, body, "inbox_ids", inbox_ids)
        _check_ids(sandbox, body, "pod_ids", pod_ids)
    else:
        body.reject("inbox_ids", "pod_ids", reason="is not accepted: the inbox comes from the path")
    body.finish()
    assert url is not None
    assert event_types is not None

    scope = _scope(owner_inbox_id)
    if client_id is not None:
        existing_id = sandbox.webhook_client_ids.get((scope, client_id))
        if existing_id is not None:
            return sandbox.webhooks[existing_id].to_wire()

    now = sandbox.clock.now()
    webhook = WebhookRecord(
        webhook_id=sandbox.ids.webhook_id(),
        url=url,
        event_types=event_types,
        secret=webhook_secret(),
        created_at=now,
        updated_at=now,
        inbox_ids=list(dict.fromkeys(inbox_ids)) if inbox_ids else None,
        pod_ids=list(dict.fromkeys(pod_ids)) if pod_ids else None,
        owner_inbox_id=owner_inbox_id,
        client_id=client_id,
        headers=headers or {},
    )
    sandbox.webhooks[webhook.webhook_id] = webhook
    if client_id is not None:
        sandbox.webhook_client_ids[(scope, client_id)] = webhook.webhook_id
    return webhook.to_wire()


def _find(sandbox: Sandbox, owner_inbox_id: str | None, webhook_id: str) -> WebhookRecord:
    _require_owner(sandbox, owner_inbox_id)
    webhook = sandbox.webhooks.get(webhook_id)
    if webhook is None or webhook.owner_inbox_id != owner_inbox_id:
        raise not_found("Webhook")
    return webhook


def get(sandbox: Sandbox, owner_inbox_id: str | None, webhook_id: str) -> dict[str, Any]:
    """One webhook of this route."""
    return _find(sandbox, owner_inbox_id, webhook_id).to_wire()


def list_(
    sandbox: Sandbox,
    owner_inbox_id: str | None,
    *,
    limit: int | None,
    page_token: str | None,
    ascending: bool | None,
) -> dict[str, Any]:
    """This route's webhooks, newest first unless ``ascending``."""
    _require_owner(sandbox, owner_inbox_id)
    mine = [w for w in sandbox.webhooks.values() if w.owner_inbox_id == owner_inbox_id]
    if not ascending:
        mine.reverse()
    items, wire = page(mine, limit=limit, page_token=page_token)
    wire["webhooks"] = [w.to_wire() for w in items]
    return wire


def _merge(current: list[str] | None, add: list[str] | None, remove: list[str] | None) -> list[str]:
    merged = list(dict.fromkeys([*(current or []), *(add or [])]))
    return [value for value in merged if value not in set(remove or [])]


def update(
    sandbox: Sandbox, owner_inbox_id: str | None, webhook_id: str, data: Any
) -> dict[str, Any]:
    """Apply the allowed changes in one step, or none of them."""
    webhook = _find(sandbox, owner_inbox_id, webhook_id)
    body = Body(data)
    event_types = _event_types(body, required=False)
    enabled = body.boolean("enabled")
    body.reject(
        "url",
        "client_id",
        "secret",
        reason="cannot be changed; delete the webhook and create a new one",
    )
    lists: dict[str, list[str] | None] = {}
    if owner_inbox_id is None:
        for key in ("add_inbox_ids", "remove_inbox_ids", "add_pod_ids", "remove_pod_ids"):
            lists[key] = body.strings(key, max_items=MAX_SCOPE_IDS)
        _check_ids(sandbox, body, "add_inbox_ids", lists["add_inbox_ids"])
        _check_ids(sandbox, body, "add_pod_ids", lists["add_pod_ids"])
    else:
        body.reject(
            "add_inbox_ids",
            "remove_inbox_ids",
            "add_pod_ids",
            "remove_pod_ids",
            "inbox_ids",
            "pod_ids",
            reason="is not accepted: an inbox webhook is fixed to its inbox",
        )
    body.finish()

    inbox_ids = webhook.inbox_ids
    pod_ids = webhook.pod_ids
    if owner_inbox_id is None:
        inbox_ids = _merge(webhook.inbox_ids, lists["add_inbox_ids"], lists["remove_inbox_ids"])
        pod_ids = _merge(webhook.pod_ids, lists["add_pod_ids"], lists["remove_pod_ids"])
        if len(inbox_ids) > MAX_SCOPE_IDS:
            raise invalid("add_inbox_ids", f"a webhook may list at most {MAX_SCOPE_IDS} inboxes")
        if len(pod_ids) > MAX_SCOPE_IDS:
            raise invalid("add_pod_ids", f"a webhook may list at most {MAX_SCOPE_IDS} pods")
        was_scoped = bool(webhook.inbox_ids or webhook.pod_ids)
        if was_scoped and not inbox_ids and not pod_ids:
            raise invalid(
                "remove_inbox_ids", "a scoped webhook must keep at least one inbox or pod"
            )

    if event_types:
        webhook.event_types = event_types
    if enabled is not None:
        webhook.enabled = enabled
    webhook.inbox_ids = inbox_ids or None
    webhook.pod_ids = pod_ids or None
    webhook.updated_at = sandbox.clock.now()
    return webhook.to_wire()


def delete(sandbox: Sandbox, owner_inbox_id: str | None, webhook_id: str) -> None:
    """Delete a webhook; its ``client_id`` becomes free and its pending deliveries stop."""
    webhook = _find(sandbox, owner_inbox_id, webhook_id)
    del sandbox.webhooks[webhook.webhook_id]
    if webhook.client_id is not None:
        sandbox.webhook_client_ids.pop((webhook.scope, webhook.client_id), None)
