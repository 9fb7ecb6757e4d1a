"""What every automatic reply carries, whatever its template: headers, recipient, preview.

RFC 3834 section 3 and RFC 5230 section 5: mark the reply as automatic so other
responders stay quiet, and send it to one address only.
"""

from __future__ import annotations

import re
from html import unescape

from handlers.message import InboundMessage

#: Length of the ``preview`` template variable, in characters.
PREVIEW_LENGTH = 200
#: How much of a body the preview is taken from: its first words are near the top,
#: and parsing a whole 1 MB HTML body would hold the event loop for most of a second.
PREVIEW_SOURCE_LIMIT = 64 * 1024

_SKIPPED_TAGS = frozenset({"script", "style", "head", "title"})
_LINE_BREAKS = frozenset({"br", "p", "div", "li", "tr"})
#: A tag: "<" and a letter, "/", "!" or "?", up to the next ">", never across another
#: "<", so the scan is linear ("a < b" is text, as browsers read it).
_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")
_TAG_NAME = re.compile(r"<\s*(/?)\s*([A-Za-z][A-Za-z0-9]*)")


def reply_headers() -> dict[str, str]:
    """Headers for every auto-reply: ``Auto-Submitted`` (RFC 3834 3.1.7) and Exchange's
    ``X-Auto-Response-Suppress``, so neither RFC-aware nor Exchange responders answer it."""
    return {"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"}


def reply_recipient(message: InboundMessage) -> str:
    """The one address the reply goes to: the sender's bare address.

    Never Reply-To (it may be a list, RFC 3834 section 4) and never the other recipients.
    """
    address = message.sender_address
    if "@" not in address:
        raise ValueError(f"sender {message.sender!r} has no usable address")
    return address


def preview_of(message: InboundMessage, *, length: int = PREVIEW_LENGTH) -> str:
    """A short one-line preview of the message: its own words, without quoted lines.

    Taken from the text body, else AgentMail's ``preview``, else the HTML with tags
    stripped; whitespace is collapsed and the result cut at a word with an ellipsis.
    """
    if message.text:
        source = message.text[:PREVIEW_SOURCE_LIMIT]
    elif message.preview:
        source = message.preview[:PREVIEW_SOURCE_LIMIT]
    else:
        source = html_to_text((message.html or "")[:PREVIEW_SOURCE_LIMIT])
    unquoted = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(">"))
    return shorten(" ".join(unquoted.split()), length)


def shorten(text: str, length: int) -> str:
    """Cut ``text`` to at most ``length`` characters at a word boundary, adding an ellipsis."""
    if len(text) <= length:
        return text
    cut = text[: length - 1]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,.;:") + "…"


def html_to_text(html: str) -> str:
    """The visible text of an HTML fragment; scripts, styles and the head are dropped.

    A linear scan of tags rather than ``html.parser``: that parser is quadratic on
    malformed input in the Pythons this runs on (CVE-2025-6069: 64 KiB took 15 s on
    the event loop) and raises ``AssertionError`` on some (``<![``). A preview needs
    only the words between the tags.
    """
    parts: list[str] = []
    skipping = 0
    position = 0
    for tag in _TAG.finditer(html):
        if not skipping:
            parts.append(html[position : tag.start()])
        position = tag.end()
        name = _TAG_NAME.match(tag.group())
        if name is None:  # a comment, a doctype, a stray "<...>"
            continue
        closing, tag_name = name.group(1) == "/", name.group(2).lower()
        if tag_name in _SKIPPED_TAGS:
            skipping = max(0, skipping - 1) if closing else skipping + 1
        elif not closing and not skipping and tag_name in _LINE_BREAKS:
            parts.append("\n")
    if not skipping:
        parts.append(html[position:])
    return re.sub(r"[ \t]+", " ", unescape("".join(parts)))
