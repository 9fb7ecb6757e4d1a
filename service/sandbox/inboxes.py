"""Inbox operations: create (with ``client_id``), get, list.

The inbox id is its address, ``username@domain``; a create without a username gets a
random one, and the domain defaults to ``agentmail.to``. Any syntactically valid domain is
accepted (the real API wants a verified one). Every inbox sits in one pod,
``pod_sandbox``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from service.sandbox.errors import ApiError, not_found
from service.sandbox.models import DEFAULT_POD_ID, InboxRecord
from service.sandbox.paging import page
from service.sandbox.validation import Body

if TYPE_CHECKING:
    from service.sandbox.state import Sandbox

DEFAULT_DOMAIN = "agentmail.to"
_USERNAME = re.compile(r"^[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?$")
_DOMAIN = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def create(sandbox: Sandbox, data: Any) -> dict[str, Any]:
    """Create an inbox, or return the one already created with this ``client_id``."""
    body = Body(data)
    username = body.string("username")
    domain = body.string("domain")
    display_name = body.string("display_name")
    client_id = body.token("client_id")
    metadata = body.data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        body.error("metadata", "must be an object")
    if username is not None and not _USERNAME.match(username.lower()):
        body.error("username", "may hold only letters, digits and . _ + - (not at either end)")
    if domain is not None and not _DOMAIN.match(domain.lower()):
        body.error("domain", "is not a valid domain name")
    body.finish()

    if client_id is not None and client_id in sandbox.inbox_client_ids:
        return sandbox.inboxes[sandbox.inbox_client_ids[client_id]].to_wire()

    address = f"{(username or sandbox.ids.username()).lower()}@{(domain or DEFAULT_DOMAIN).lower()}"
    if address in sandbox.inboxes:
        raise ApiError(409, f"Inbox {address} already exists", "already_exists")
    now = sandbox.clock.now()
    inbox = InboxRecord(
        inbox_id=address,
        pod_id=DEFAULT_POD_ID,
        created_at=now,
        updated_at=now,
        display_name=display_name,
        client_id=client_id,
        metadata=metadata,
    )
    sandbox.inboxes[address] = inbox
    if client_id is not None:
        sandbox.inbox_client_ids[client_id] = address
    return inbox.to_wire()


def find(sandbox: Sandbox, inbox_id: str) -> InboxRecord:
    """The inbox with this id (addresses compare case-insensitively), or a 404."""
    inbox = sandbox.inboxes.get(inbox_id.lower())
    if inbox is None:
        raise not_found("Inbox")
    return inbox


def get(sandbox: Sandbox, inbox_id: str) -> dict[str, Any]:
    """One inbox."""
    return find(sandbox, inbox_id).to_wire()


def list_(
    sandbox: Sandbox, *, limit: int | None, page_token: str | None, ascending: bool | None
) -> dict[str, Any]:
    """All inboxes, newest first unless ``ascending``."""
    inboxes = list(sandbox.inboxes.values())
    if not ascending:
        inboxes.reverse()
    items, wire = page(inboxes, limit=limit, page_token=page_token)
    wire["inboxes"] = [i.to_wire() for i in items]
    return wire
