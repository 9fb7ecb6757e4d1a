"""Raw-path routing: percent-decoding per segment, Message-IDs spanning raw slashes."""

from __future__ import annotations

import pytest

from service.sandbox.api import ROUTES
from service.sandbox.routing import raw_segments, resolve


@pytest.mark.parametrize(
    ("raw", "method", "operation", "params"),
    [
        (b"/v0/inboxes", "GET", "inboxes.list", {}),
        (b"/v0/inboxes/a@x.to/messages/send", "POST", "messages.send", {"inbox_id": "a@x.to"}),
        (
            b"/v0/inboxes/a@x.to/messages/%3Ca%2Fb%40x%3E/reply",
            "POST",
            "messages.reply",
            {"inbox_id": "a@x.to", "message_id": "<a/b@x>"},
        ),
        (
            b"/v0/inboxes/a@x.to/messages/%3Ca/b/c@x%3E/reply-all",
            "POST",
            "messages.reply_all",
            {"inbox_id": "a@x.to", "message_id": "<a/b/c@x>"},
        ),
        (
            b"/v0/inboxes/a@x.to/messages/%3Ca/b@x%3E",
            "PATCH",
            "messages.update",
            {"inbox_id": "a@x.to", "message_id": "<a/b@x>"},
        ),
        (b"/v0/threads/thd_1/", "GET", "threads.get", {"thread_id": "thd_1"}),
    ],
)
def test_resolve(raw: bytes, method: str, operation: str, params: dict[str, str]) -> None:
    pattern, found, known = resolve(ROUTES, method, raw_segments(raw))
    assert pattern is not None
    assert known
    assert pattern.target.name == operation
    assert found == params


def test_unknown_and_wrong_method() -> None:
    assert resolve(ROUTES, "GET", raw_segments(b"/v0/nothing")) == (None, {}, False)
    pattern, _, known = resolve(ROUTES, "PUT", raw_segments(b"/v0/webhooks/ep_1"))
    assert pattern is None
    assert known


@pytest.mark.parametrize(
    "raw",
    [
        b"/v0/inboxes/a@x.to/messages/search",
        b"/v0/inboxes/a@x.to/messages/%3Cm@x%3E/raw",
        b"/v0/inboxes/a@x.to/messages/<m@x>/raw",
        b"/v0/inboxes/search",
        b"/v0/threads/search",
    ],
)
def test_sub_routes_are_not_ids(raw: bytes) -> None:
    """``search`` is no message id, and ``<id>/raw`` is no Message-ID spanning a slash."""
    assert resolve(ROUTES, "GET", raw_segments(raw)) == (None, {}, False)


def test_list_routes() -> None:
    for raw, params in (
        (b"/v0/threads", {}),
        (b"/v0/inboxes/a@x.to/threads", {"inbox_id": "a@x.to"}),
    ):
        pattern, found, _ = resolve(ROUTES, "GET", raw_segments(raw))
        assert pattern is not None
        assert pattern.target.name == "threads.list"
        assert found == params
