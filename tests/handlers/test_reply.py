"""What every auto-reply carries: marking headers, one recipient, a safe preview."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.message import InboundMessage
from handlers.reply import html_to_text, preview_of, reply_headers, reply_recipient


def message(**fields: Any) -> InboundMessage:
    base: dict[str, Any] = {
        "event_type": "message.received",
        "inbox_id": "support@example.agentmail.to",
        "message_id": "<m1@example.com>",
        "thread_id": "t1",
        "sender": "Jane Doe <Jane@Example.com>",
    }
    return InboundMessage(**(base | fields))


def test_reply_headers_mark_the_reply_automatic() -> None:
    """RFC 3834 and Exchange responders recognise our reply and stay quiet."""
    assert reply_headers() == {"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"}


def test_reply_goes_to_the_sender_only() -> None:
    """Reply-To lists and other recipients never receive the auto-reply."""
    msg = message(
        reply_to=("list@lists.example.com", "other@example.com"),
        cc=("boss@example.com",),
        to=("support@example.agentmail.to", "colleague@example.com"),
    )
    assert reply_recipient(msg) == "jane@example.com"


def test_reply_recipient_needs_an_address() -> None:
    """A sender without an address cannot be answered (decide() already skips it)."""
    with pytest.raises(ValueError, match="no usable address"):
        reply_recipient(message(sender="undisclosed-recipients"))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"text": "Hello\n\n  there,\n> quoted line\nbye"}, "Hello there, bye"),
        ({"text": None, "preview": "From AgentMail"}, "From AgentMail"),
        (
            {"html": "<head><title>T</title><style>p{}</style></head><p>Hi&amp;bye</p>"},
            "Hi&bye",
        ),
        ({"html": "<p>one</p><p>two<br>three</p><script>x()</script>"}, "one two three"),
        ({}, ""),
    ],
)
def test_preview_source_order(fields: dict[str, Any], expected: str) -> None:
    """The preview comes from the text, else AgentMail's preview, else the visible HTML."""
    assert preview_of(message(**fields)) == expected


def test_preview_is_short_and_cut_at_a_word() -> None:
    """A long message gives a preview of about 200 characters ending in an ellipsis."""
    preview = preview_of(message(text="lorem ipsum " * 100))
    assert len(preview) <= 200
    assert preview.endswith(("ipsum…", "lorem…"))


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<p>Hi</p><![ x", "Hi<![ x"),  # html.parser raised AssertionError (_markupbase)
        ("<a b='" * 3000, "<a b='" * 3000),  # html.parser took seconds (CVE-2025-6069)
        ("<<<<>>>> words", "<<<<>>>> words"),
        ("x < y and y > z", "x < y and y > z"),
        ("<P>Caps</P><SCRIPT>no()</SCRIPT> yes", "Caps yes"),
        ("<!-- a comment --><p>text &amp; more</p>", "text & more"),
    ],
)
def test_html_to_text_reads_malformed_html_without_failing(html: str, expected: str) -> None:
    assert " ".join(html_to_text(html).split()) == expected
