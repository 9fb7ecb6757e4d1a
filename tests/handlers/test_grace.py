"""The grace period's pure decisions: which sent messages of a thread answer the inbound
one, whose they are, and how a delay is written."""

from __future__ import annotations

from datetime import timedelta

import pytest

from handlers.grace import (
    OwnReplies,
    PageVerdict,
    Seen,
    ThreadMessage,
    first_answer,
    format_delay,
    sent_after,
)
from handlers.message import PayloadError

INBOUND = "<q@example.com>"


def received(message_id: str) -> ThreadMessage:
    return ThreadMessage(message_id=message_id, labels=frozenset({"received", "unread"}))


def sent(message_id: str, in_reply_to: str | None = INBOUND) -> ThreadMessage:
    return ThreadMessage(message_id=message_id, labels=frozenset({"sent"}), in_reply_to=in_reply_to)


def test_only_sent_messages_after_the_inbound_one_count() -> None:
    """An earlier outbound message and a later follow-up from the customer are no answer."""
    page = [sent("<before@x>", None), received(INBOUND), received("<follow-up@x>"), sent("<a@x>")]
    assert sent_after(INBOUND, page) == PageVerdict(sent_after=(page[3],), seen=Seen.SETTLED)


def test_a_page_without_the_inbound_message_counts_whole_and_asks_for_the_older_one() -> None:
    page = [sent("<a@x>"), received("<b@x>")]
    assert sent_after(INBOUND, page) == PageVerdict(sent_after=(page[0],), seen=Seen.LOOK_OLDER)
    assert sent_after(INBOUND, []) == PageVerdict(sent_after=(), seen=Seen.LOOK_OLDER)


def test_own_replies_sent_or_on_their_way_are_no_answer() -> None:
    own = OwnReplies(sent=frozenset({"<ours@x>"}), sending_to=frozenset({"<earlier@x>"}))
    ours = sent("<ours@x>")
    on_its_way = sent("<unknown-id@x>", in_reply_to="<earlier@x>")
    person = sent("<person@x>")
    assert first_answer([ours, on_its_way], own) is None
    assert first_answer([ours, person, on_its_way], own) == "<person@x>"
    assert first_answer([], own) is None
    assert first_answer([person], OwnReplies()) == "<person@x>"


def test_thread_messages_parse_from_the_sdk_shape() -> None:
    message = ThreadMessage.from_payload(
        {"message_id": "<a@x>", "labels": ["sent"], "in_reply_to": INBOUND, "text": "hi"}
    )
    assert message == sent("<a@x>")
    assert message.sent
    assert not ThreadMessage.from_payload({"message_id": "<b@x>", "labels": []}).sent
    for bad in ({"labels": []}, {"message_id": "<a@x>"}, {"message_id": "", "labels": []}):
        with pytest.raises(PayloadError):
            ThreadMessage.from_payload(bad)


@pytest.mark.parametrize(
    ("delay", "text"),
    [
        (timedelta(0), "0"),
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=10), "10m"),
        (timedelta(hours=36), "36h"),
        (timedelta(days=2), "2d"),
        (timedelta(weeks=1), "1w"),
    ],
)
def test_delays_are_written_as_the_settings_read_them(delay: timedelta, text: str) -> None:
    assert format_delay(delay) == text
