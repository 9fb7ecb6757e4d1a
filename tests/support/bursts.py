"""Bursts of mail for the reply-limit tests: what the cooldown and the thread cap must
hold against when the messages arrive together."""

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
