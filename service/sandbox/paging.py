"""Offset pagination behind opaque page tokens, for every list endpoint."""

from __future__ import annotations

from typing import Any, TypeVar

from service.sandbox.validation import decode_page_token, encode_page_token

DEFAULT_LIMIT = 100
MAX_LIMIT = 100

T = TypeVar("T")


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
