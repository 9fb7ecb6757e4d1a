"""Retry decisions: backoff grows, Retry-After is honoured, the key window is never outlived."""

from __future__ import annotations

import itertools

import pytest

from handlers.idempotency import reply_key
from handlers.retry import SEND_WINDOW, RetryPolicy

NOW = 1_800_000_000.0


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_backoff_grows_and_is_capped(rand: float) -> None:
    """Each failure waits longer (within jitter), never beyond the cap."""
    policy = RetryPolicy(base=2.0, cap=600.0)
    delays = [policy.delay(attempt, rand=rand) for attempt in range(1, 20)]
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays))
    assert delays[0] >= 1.0
    assert max(delays) <= 600.0


def test_retry_after_is_a_floor() -> None:
    """A 429's Retry-After is waited out even when the backoff is shorter."""
    policy = RetryPolicy()
    assert policy.delay(1, retry_after=30.0, rand=0.0) == 30.0
    assert policy.delay(20, retry_after=1.0, rand=0.0) >= 300.0


def test_gives_up_after_max_attempts() -> None:
    """Permanent trouble that looks transient still ends in the dead-letter state."""
    policy = RetryPolicy(max_attempts=3)
    assert policy.next_run(attempt=2, now=NOW, first_send_at=None, rand=0.0) is not None
    assert policy.next_run(attempt=3, now=NOW, first_send_at=None, rand=0.0) is None


def test_no_retry_beyond_the_idempotency_window() -> None:
    """A retry that would land after the key may have expired is refused."""
    policy = RetryPolicy(base=2.0, cap=600.0)
    first = NOW - SEND_WINDOW + 10.0
    assert policy.next_run(attempt=1, now=NOW, first_send_at=first, rand=0.0) is not None
    assert policy.next_run(attempt=10, now=NOW, first_send_at=first, rand=0.0) is None


def test_before_any_send_the_window_does_not_apply() -> None:
    """A job that never reached the send can wait as long as the backoff says."""
    policy = RetryPolicy()
    assert policy.next_run(attempt=5, now=NOW, first_send_at=None, rand=0.5) is not None


def test_reply_key_is_stable_distinct_and_valid() -> None:
    """One key per (inbox, message), always the same, in AgentMail's allowed alphabet."""
    key = reply_key("bot@agentmail.to", "<a/b@example.com>")
    assert key == reply_key("bot@agentmail.to", "<a/b@example.com>")
    assert key != reply_key("other@agentmail.to", "<a/b@example.com>")
    assert key != reply_key("bot@agentmail.to", "<a/c@example.com>")
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    assert set(key) <= allowed
    assert 1 <= len(key) <= 256
