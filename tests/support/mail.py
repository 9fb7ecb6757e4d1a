"""Mail the end-to-end tests inject into the sandbox: a list post, and the bursts the
cooldown and the thread cap must hold against when the messages arrive together."""

from __future__ import annotations

from typing import Any


def from_one_sender(sandbox: Any, count: int = 5) -> list[dict[str, Any]]:
    """``count`` messages from Jane, each starting a thread of its own."""
    burst = [
        sandbox.admin.inject(
            from_="Jane <jane@example.com>", to=sandbox.inbox, subject=f"Topic {i}", text="Hi"
        )
        for i in range(count)
    ]
    assert len({m["thread_id"] for m in burst}) == count
    return burst


def in_one_thread(sandbox: Any, count: int = 5) -> list[dict[str, Any]]:
    """``count`` messages in one thread, each from another sender: Ann's first, then
    answers to it."""
    first = sandbox.admin.inject(
        from_="Ann <ann@example.com>", to=sandbox.inbox, subject="Meeting", text="When?"
    )
    burst = [first] + [
        sandbox.admin.inject(
            from_=f"P{i} <p{i}@example.com>",
            to=sandbox.inbox,
            subject="Re: Meeting",
            text="Me too",
            in_reply_to=first["message_id"],
        )
        for i in range(count - 1)
    ]
    assert {m["thread_id"] for m in burst} == {first["thread_id"]}
    return burst


def list_post(sandbox: Any) -> dict[str, Any]:
    """A mailing-list post (``List-Id``): the policy skips it as ``list_header``."""
    return dict(
        sandbox.admin.inject(
            from_="List <news@example.com>",
            to=sandbox.inbox,
            subject="Weekly news",
            text="...",
            headers={"List-Id": "<news.example.com>"},
        )
    )
