"""Pagination behind opaque page tokens, for every list endpoint.

Two kinds of token, both base64 JSON that clients must treat as opaque:

* :func:`page` (inboxes, webhooks, the messages of one thread) uses an offset;
* :func:`keyset_page` (``messages.list``, ``threads.list``) names the sort key of the last
  item served, so the next page starts right after it whatever changed in between. A
  catch-up sweep that pages through ``labels=["unread"]`` while removing ``unread`` from
  what it has handled would skip items under offsets; with a key it sees each once, and
  mail arriving during a newest-first walk does not repeat items across pages.

A token the sandbox did not issue (or issued for another list order) is a 400.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from service.sandbox.errors import invalid
from service.sandbox.validation import decode_page_token, encode_page_token, parse_datetime

DEFAULT_LIMIT = 100
MAX_LIMIT = 100

T = TypeVar("T")
SortKey = tuple[datetime, int]


def page(
    items: list[T], *, limit: int | None, page_token: str | None
) -> tuple[list[T], dict[str, Any]]:
    """One page of ``items`` (already in answer order) and the list-response envelope.

    The envelope holds ``count`` (items in this page), ``limit`` and, when more items
    follow, ``next_page_token``; the caller adds the items under its own key.
    """
    offset = decode_page_token(page_token)
    size = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
    chunk = items[offset : offset + size]
    wire: dict[str, Any] = {"count": len(chunk), "limit": size}
    if offset + size < len(items):
        wire["next_page_token"] = encode_page_token(offset + size)
    return chunk, wire


def _encode_key(key: SortKey, ascending: bool) -> str:
    raw = json.dumps({"t": key[0].isoformat(), "s": key[1], "a": ascending}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_key(token: str, ascending: bool) -> SortKey:
    try:
        padded = token + "=" * (-len(token) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
        moment = parse_datetime(decoded["t"])
        sequence = decoded["s"]
        order = decoded["a"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise invalid("page_token", "is not a valid page token") from exc
    if moment is None or not isinstance(sequence, int) or order is not ascending:
        raise invalid("page_token", "is not a valid page token")
    return moment, sequence


def keyset_page(
    items: list[T],
    *,
    key: Callable[[T], SortKey],
    ascending: bool,
    limit: int | None,
    page_token: str | None,
) -> tuple[list[T], dict[str, Any]]:
    """One page of ``items`` (sorted by ``key``, ascending or not) after the token's key.

    The envelope is the same as :func:`page`'s; ``next_page_token`` is present only
    when items follow this page.
    """
    if page_token:
        last = _decode_key(page_token, ascending)
        items = [i for i in items if (key(i) > last if ascending else key(i) < last)]
    size = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
    chunk = items[:size]
    wire: dict[str, Any] = {"count": len(chunk), "limit": size}
    if len(items) > size:
        wire["next_page_token"] = _encode_key(key(chunk[-1]), ascending)
    return chunk, wire
