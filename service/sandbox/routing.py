"""Path matching on the raw, still percent-encoded request path.

uvicorn percent-decodes ``scope["path"]``, so a Message-ID holding ``%2F`` would split
into two segments there. Here each segment of ``scope["raw_path"]`` is decoded on its
own, so ``%2F`` stays inside its segment. The SDK does not encode ``/`` at all, so a
``{message_id}`` may also span several raw segments when it starts with ``<`` and the
joined value ends with ``>`` (a Message-ID always does), so ``<id>/raw`` is the message
``<id>`` plus a sub-route, not a message id. A parameter never takes one of the literal
sub-route names the SDK uses (``search``, ``send``, ...), so ``…/messages/search`` is an
unknown route rather than "message ``search`` not found".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")

SPANNING_PARAMS = frozenset({"message_id"})

# Literal segments the SDK puts where a path parameter could stand (``v0/inboxes/search``,
# ``…/messages/batch-update``, ``v0/webhooks/polling``, ...): never an id.
RESERVED_SEGMENTS = frozenset({"search", "send", "batch-update", "polling", "raw"})


def raw_segments(raw_path: bytes) -> list[str]:
    """The path's segments, each percent-decoded separately; empty ones dropped."""
    text = raw_path.decode("latin-1")
    return [unquote(part, encoding="utf-8", errors="replace") for part in text.split("/") if part]


@dataclass(frozen=True)
class Pattern(Generic[T]):
    """A path template such as ``v0/inboxes/{inbox_id}/messages/{message_id}``."""

    method: str
    template: str
    target: T

    @property
    def parts(self) -> tuple[str, ...]:
        """The template's segments."""
        return tuple(p for p in self.template.split("/") if p)

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        """The path parameters if ``segments`` fit this template."""
        return _match(self.parts, list(segments), {})


def _match(
    parts: Sequence[str], segments: list[str], found: dict[str, str]
) -> dict[str, str] | None:
    if not parts:
        return found if not segments else None
    if not segments:
        return None
    head = parts[0]
    if not (head.startswith("{") and head.endswith("}")):
        if head != segments[0]:
            return None
        return _match(parts[1:], segments[1:], found)
    name = head[1:-1]
    if segments[0] in RESERVED_SEGMENTS:
        return None
    longest = 1
    if name in SPANNING_PARAMS and segments[0].startswith("<"):
        longest = len(segments) - (len(parts) - 1)
    for span in range(1, max(longest, 1) + 1):
        value = "/".join(segments[:span])
        if span > 1 and not value.endswith(">"):
            continue
        result = _match(parts[1:], segments[span:], {**found, name: value})
        if result is not None:
            return result
    return None


def resolve(
    patterns: Sequence[Pattern[T]], method: str, segments: Sequence[str]
) -> tuple[Pattern[T] | None, dict[str, str], bool]:
    """Find the pattern for a request.

    Returns ``(pattern, params, path_known)``: the pattern is None when nothing serves
    this method, and ``path_known`` tells a 405 (some method serves the path) from a 404.
    """
    path_known = False
    for pattern in patterns:
        params = pattern.match(segments)
        if params is None:
            continue
        path_known = True
        if pattern.method == method:
            return pattern, params, True
    return None, {}, path_known
