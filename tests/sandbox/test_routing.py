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
