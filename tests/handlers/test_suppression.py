"""Which bounces and complaints suppress an address, and what the list accepts as one."""

from __future__ import annotations

import pytest

from handlers.suppression import (
    Cause,
    FeedbackKind,
    against_our_reply,
    bare_address,
    feedback_kind,
    normalise_address,
    stored_address,
    suppression_cause,
)


@pytest.mark.parametrize(
    ("event_type", "type_", "kind"),
    [
        ("message.bounced", "Permanent", FeedbackKind.PERMANENT_BOUNCE),
        ("message.bounced", "permanent", FeedbackKind.PERMANENT_BOUNCE),
        ("message.bounced", "Transient", FeedbackKind.TRANSIENT_BOUNCE),
        ("message.bounced", "Undetermined", FeedbackKind.TRANSIENT_BOUNCE),
        ("message.bounced", "", FeedbackKind.TRANSIENT_BOUNCE),
        ("message.complained", "abuse", FeedbackKind.COMPLAINT),
        ("message.complained", "fraud", FeedbackKind.COMPLAINT),
        ("message.complained", "", FeedbackKind.COMPLAINT),
        ("message.complained", "not-spam", FeedbackKind.NOT_A_COMPLAINT),
    ],
)
def test_feedback_kinds(event_type: str, type_: str, kind: FeedbackKind) -> None:
    """Only a bounce AgentMail calls permanent is one; anything else may pass."""
    assert feedback_kind(event_type, type_) is kind


def test_other_events_are_not_feedback() -> None:
    with pytest.raises(ValueError, match="not a bounce"):
        feedback_kind("message.sent", "x")


@pytest.mark.parametrize(
    ("kind", "count", "limit", "cause"),
    [
        (FeedbackKind.PERMANENT_BOUNCE, 0, 3, Cause.BOUNCE),
        (FeedbackKind.COMPLAINT, 0, 3, Cause.COMPLAINT),
        (FeedbackKind.NOT_A_COMPLAINT, 0, 3, None),
        (FeedbackKind.TRANSIENT_BOUNCE, 1, 3, None),
        (FeedbackKind.TRANSIENT_BOUNCE, 2, 3, None),
        (FeedbackKind.TRANSIENT_BOUNCE, 3, 3, Cause.TRANSIENT_BOUNCES),
        (FeedbackKind.TRANSIENT_BOUNCE, 1, 1, Cause.TRANSIENT_BOUNCES),
        (FeedbackKind.TRANSIENT_BOUNCE, 50, 0, None),
    ],
)
def test_what_suppresses(kind: FeedbackKind, count: int, limit: int, cause: Cause | None) -> None:
    assert suppression_cause(kind, transient_bounces=count, limit=limit) is cause


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("jane@example.com", "jane@example.com"),
        ("  Jane@Example.COM ", "jane@example.com"),
        ("a+tag@mail.example.co.uk", "a+tag@mail.example.co.uk"),
    ],
)
def test_addresses_are_bare_and_lower_cased(text: str, address: str) -> None:
    assert normalise_address(text) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "jane",
        "@example.com",
        "jane@",
        "Jane <jane@example.com>",
        "jane@example.com, john@example.com",
        "jane doe@example.com",
        "jane@@example.com",
        "jane@localhost",
        "jane@example.",
        "x" * 250 + "@example.com",
    ],
)
def test_anything_else_is_refused_with_the_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r"not an email address|over 254"):
        normalise_address(text)


@pytest.mark.parametrize(
    "text",
    ["jane\x01@example.com", "\x00jane@example.com", "jane\u200b@example.com", "jane\udcff@x.org"],
)
def test_a_control_invisible_or_unencodable_character_is_refused(text: str) -> None:
    """It would make an entry that prints as ``jane@example.com`` and never matches her
    (or, a lone surrogate from a mis-encoded command line, one no database can store)."""
    for check in (normalise_address, stored_address):
        with pytest.raises(ValueError, match="control or invisible character"):
            check(text)


def test_an_address_a_reply_went_to_is_removable_even_if_not_addable() -> None:
    """A bounce suppresses the address a reply went to, ``ops@intranet`` too: ``remove``
    checks no more than the policy checks a sender."""
    assert stored_address(" OPS@Intranet ") == "ops@intranet"
    with pytest.raises(ValueError, match="not an email address"):
        normalise_address("ops@intranet")
    with pytest.raises(ValueError, match="not an email address"):
        stored_address("jane doe@example.com")


@pytest.mark.parametrize(
    ("text", "bare"),
    [
        ("jane@example.com", "jane@example.com"),
        ("  JANE@Example.com ", "jane@example.com"),
        ("Jane Doe <Jane@Example.com>", "jane@example.com"),
        ("<jane@example.com>", "jane@example.com"),
        ("not an address", "not an address"),
    ],
)
def test_recipients_are_compared_bare(text: str, bare: str) -> None:
    assert bare_address(text) == bare


@pytest.mark.parametrize(
    ("recipients", "against"),
    [
        (("jane@example.com",), ("jane@example.com",)),
        ((), ("jane@example.com",)),
        (("john@example.com", "jane@example.com"), ("jane@example.com",)),
        (("john@example.com",), ()),
        (tuple(f"x{i}@example.org" for i in range(10_000)), ()),
    ],
)
def test_feedback_is_against_our_reply_s_one_recipient_only(
    recipients: tuple[str, ...], against: tuple[str, ...]
) -> None:
    assert against_our_reply(recipients, "jane@example.com") == against
