"""Parsing AgentMail's message JSON into the model the decisions use."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.message import Headers, InboundMessage, PayloadError

BASE: dict[str, Any] = {
    "inbox_id": "bot@agentmail.to",
    "thread_id": "thd_1",
    "message_id": "<m1@example.com>",
    "from": "Jane Doe <Jane@Example.com>",
    "to": ["bot@agentmail.to"],
    "labels": ["received", "unread"],
    "text": "Hello",
    "headers": {"Auto-Submitted": "no"},
    "timestamp": "2026-01-01T10:00:00Z",
}


def test_sender_address_and_name() -> None:
    """The reply goes to the bare, lower-cased address; templates greet by name."""
    message = InboundMessage.from_payload(BASE)
    assert message.sender_address == "jane@example.com"
    assert message.sender_name == "Jane Doe"
    assert not message.incomplete


@pytest.mark.parametrize(
    ("missing", "body", "headers"),
    [("text", True, False), ("headers", False, True)],
)
def test_payload_over_the_cap_is_incomplete(missing: str, body: bool, headers: bool) -> None:
    """Without text and html, or without headers, the worker must fetch the message."""
    payload = {k: v for k, v in BASE.items() if k != missing}
    message = InboundMessage.from_payload(payload)
    assert message.body_omitted is body
    assert message.headers_omitted is headers
    assert message.incomplete


def test_html_only_message_is_complete() -> None:
    """An HTML-only email is a whole message, not a truncated one."""
    payload = {**BASE, "html": "<p>Hi</p>"}
    del payload["text"]
    assert not InboundMessage.from_payload(payload).incomplete


def test_headers_are_case_insensitive_and_may_repeat() -> None:
    """Header names match in any case; pairs keep repeated headers."""
    headers = Headers.parse([["List-Id", "a"], ["list-id", "b"], ["X", None]])
    assert headers.get_all("LIST-ID") == ["a", "b"]
    assert headers.get("x") is None
    assert "List-Id" in headers


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message_id", ""),
        ("from", None),
        ("to", [1, 2]),
        ("headers", "x"),
        ("timestamp", "yesterday"),
        ("timestamp", "2026-01-01T10:00:00"),
    ],
)
def test_malformed_fields_are_payload_errors(field: str, value: Any) -> None:
    """Every malformed field is a PayloadError naming it (intake turns it into a 400)."""
    with pytest.raises(PayloadError, match=field):
        InboundMessage.from_payload({**BASE, field: value})
