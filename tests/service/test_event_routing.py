"""Which event types the configuration subscribes to, and how intake routes each type.

Pure functions, no server: ``registration.event_types`` (what registration subscribes
to) and ``parse_delivery`` (what intake does with each type). The event builders of
``tests.support.intake`` are checked against the SDK's own models, so the shapes here
are AgentMail's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agentmail.events.types.message_bounced_event import MessageBouncedEvent
from agentmail.events.types.message_complained_event import MessageComplainedEvent
from agentmail.events.types.message_sent_event import MessageSentEvent

from handlers.events import subscribed_event_types
from handlers.suppression import FeedbackKind
from service import registration
from service.settings import Settings
from service.webhooks import MAX_DETAIL_CHARS, RejectedDelivery, parse_delivery
from tests.support.intake import SECRET, bounce_event, complaint_event, message_event

BASE = {"AGENTMAIL_API_KEY": "am_x", "AUTOREPLY_WEBHOOK_SECRET": SECRET}


def settings(**env: str) -> Settings:
    return Settings.from_environ({**BASE, **env}, dotenv=None)


def test_default_configuration_subscribes_to_feedback() -> None:
    """Received mail always; bounces and complaints for the suppression list by default."""
    assert registration.event_types(settings()) == (
        "message.received",
        "message.bounced",
        "message.complained",
    )
    assert registration.event_types(settings(AUTOREPLY_SUPPRESSION="false")) == (
        "message.received",
    )


def test_sent_events_are_added_on_request() -> None:
    """The documented place for ``message.sent`` (draft mode, a reply delay)."""
    assert subscribed_event_types(suppression=False, sent=True) == (
        "message.received",
        "message.sent",
    )


def test_a_grace_period_anywhere_subscribes_to_sent_events(tmp_path: Path) -> None:
    """AUTOREPLY_REPLY_DELAY, or a delay in any rule: message.sent too. A rule's delay
    "0" is no grace period, and a broken rules.toml counts as none (serve refuses it)."""
    plain = ("message.received",)
    with_sent = ("message.received", "message.sent")
    off = {"AUTOREPLY_SUPPRESSION": "false"}
    assert registration.event_types(settings(**off, AUTOREPLY_REPLY_DELAY="10m")) == with_sent
    assert registration.event_types(settings(**off, AUTOREPLY_REPLY_DELAY="0")) == plain
    rules = tmp_path / "rules.toml"
    folder = {**off, "AUTOREPLY_TEMPLATES_DIR": str(tmp_path)}
    rules.write_text('[[rule]]\nname = "a"\ntemplate = "default"\ndelay = "0"\n')
    assert registration.event_types(settings(**folder)) == plain
    rules.write_text('[[rule]]\nname = "a"\ntemplate = "default"\ndelay = "90s"\n')
    assert registration.event_types(settings(**folder)) == with_sent
    rules.write_text('[[rule]]\nname = "a"\ndelay = "90s"\n')
    assert registration.event_types(settings(**folder)) == plain
    assert registration.event_types(settings(AUTOREPLY_REPLY_DELAY="1m")) == (
        "message.received",
        "message.bounced",
        "message.complained",
        "message.sent",
    )


def test_webhook_spec_carries_the_event_types() -> None:
    spec = registration.webhook_spec(
        settings(AUTOREPLY_PUBLIC_URL="https://a.example.com", AUTOREPLY_INBOX_IDS="b@x.to,a@x.to")
    )
    assert spec is not None
    assert spec.url == "https://a.example.com/webhooks/agentmail"
    assert spec.inbox_ids == ("a@x.to", "b@x.to")
    assert spec.event_types == registration.event_types(settings())
    assert registration.webhook_spec(settings()) is None


def body(event: dict[str, object]) -> bytes:
    return json.dumps(event).encode()


def test_builders_are_shaped_as_the_sdk_events() -> None:
    """The test events parse as the SDK's pydantic models, field for field."""
    bounce = MessageBouncedEvent.model_validate(bounce_event())
    assert bounce.bounce.recipients[0].address == "jane@example.com"
    complaint = MessageComplainedEvent.model_validate(complaint_event())
    assert complaint.complaint.recipients == ["jane@example.com"]


def test_received_events_carry_the_job_key() -> None:
    delivery = parse_delivery("msg_1", body(message_event(3)))
    assert delivery.message is not None
    assert delivery.message.message_id == "<m3@example.com>"
    assert delivery.feedback is None


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (bounce_event(), FeedbackKind.PERMANENT_BOUNCE),
        (bounce_event(type_="Transient", sub_type="MailboxFull"), FeedbackKind.TRANSIENT_BOUNCE),
        (bounce_event(type_="Undetermined"), FeedbackKind.TRANSIENT_BOUNCE),
        (complaint_event(), FeedbackKind.COMPLAINT),
        (complaint_event(type_="not-spam"), FeedbackKind.NOT_A_COMPLAINT),
    ],
)
def test_feedback_is_routed_with_its_kind(event: dict[str, object], kind: FeedbackKind) -> None:
    delivery = parse_delivery("msg_1", body(event))
    assert delivery.message is None
    assert delivery.feedback is not None
    assert delivery.feedback.kind is kind
    assert delivery.feedback.inbox_id == "bot@agentmail.to"
    assert delivery.feedback.message_id == "<reply1@agentmail.to>"
    assert delivery.feedback.recipients == ("jane@example.com",)
    assert delivery.feedback.thread_id == "thd_1"


def test_feedback_without_a_usable_thread_has_none() -> None:
    """The thread only says whether a reply of ours may be on its way in it: a missing
    or unusable one is no reason to refuse the event."""
    for thread in (None, "", 5, "t\x00"):
        event = bounce_event()
        event["bounce"] = {**event["bounce"], "thread_id": thread}  # type: ignore[dict-item]
        delivery = parse_delivery("msg_1", body(event))
        assert delivery.feedback is not None
        assert delivery.feedback.thread_id is None


def test_feedback_recipients_are_bare_and_lower_cased_as_a_reply_is_addressed() -> None:
    """Written as our reply's recipient is (``sender_address``): a display name, case and
    spaces do not make Jane someone else. Nothing is refused: the store only compares
    them with the address our reply went to; what is no address at all is left out (an
    event naming nobody usable is against our reply's one recipient)."""
    event = bounce_event(
        recipients=("Jane@Example.COM", "Jane Doe <JANE@example.com>", " jane@example.com ", "x")
    )
    delivery = parse_delivery("msg_1", body(event))
    assert delivery.feedback is not None
    assert delivery.feedback.recipients == ("jane@example.com",)
    unusable = parse_delivery("msg_1", body(bounce_event(recipients=("", "undisclosed"))))
    assert unusable.feedback is not None
    assert unusable.feedback.recipients == ()


def test_a_reporter_s_long_or_unprintable_type_is_recorded_clipped() -> None:
    """``type``/``sub_type`` go into the feedback row, the suppression's reason and every
    skip it causes: a 100 KB sub-type or a terminal escape from a remote feedback report
    must not. The kind is still read from the whole type."""
    event = complaint_event(type_="abuse\x1b[2J" + "x" * 100_000)
    delivery = parse_delivery("msg_1", body(event))
    assert delivery.feedback is not None
    assert delivery.feedback.kind is FeedbackKind.COMPLAINT
    assert len(delivery.feedback.detail) <= 2 * MAX_DETAIL_CHARS + 1
    assert delivery.feedback.detail.startswith("abuse?[2J")
    assert delivery.feedback.detail.isprintable()
    bounce = bounce_event(type_="Permanent", sub_type="G" * 10_000)
    detail = parse_delivery("msg_1", body(bounce)).feedback.detail  # type: ignore[union-attr]
    assert detail == "Permanent/" + "G" * MAX_DETAIL_CHARS


def with_nul(event: dict[str, object], part: str | None, key: str) -> dict[str, object]:
    """``event`` with a NUL in its ``key`` (of its ``part`` object, if given)."""
    if part is None:
        return {**event, key: f"{event[key]}\x00"}
    inner = dict(event[part])  # type: ignore[call-overload]
    inner[key] = f"{inner[key]}\x00"
    return {**event, part: inner}


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (with_nul(bounce_event(), None, "event_id"), "event_id"),
        (with_nul(bounce_event(), "bounce", "inbox_id"), "bounce.inbox_id"),
        (with_nul(complaint_event(), "complaint", "message_id"), "complaint.message_id"),
        (with_nul(message_event(), "message", "thread_id"), "message.thread_id"),
    ],
)
def test_an_id_with_a_nul_is_400_not_a_503_retried_forever(
    event: dict[str, object], field: str
) -> None:
    """PostgreSQL can neither store nor compare a text holding NUL: without this check the
    delivery was a 503 ("store unavailable") that Svix retries until it gives up."""
    with pytest.raises(RejectedDelivery) as refused:
        parse_delivery("msg_1", body(event))
    assert refused.value.status == 400
    assert refused.value.reason == f"{field} must not contain NUL"


def test_feedback_the_configuration_does_not_act_on_is_ignored() -> None:
    """With suppression off a bounce is not even parsed: recorded and ignored."""
    broken = {"type": "event", "event_type": "message.bounced", "event_id": "evt_b"}
    delivery = parse_delivery("msg_1", body(broken), acted_on=())
    assert delivery.message is None
    assert delivery.feedback is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"bounce": None}, "message.bounced event without a bounce object"),
        ({"bounce": {**bounce_event()["bounce"], "recipients": "x"}}, "bounce.recipients"),  # type: ignore[dict-item]
        ({"bounce": {**bounce_event()["bounce"], "message_id": ""}}, "bounce.message_id"),  # type: ignore[dict-item]
        ({"bounce": {**bounce_event()["bounce"], "type": 5}}, "bounce.type"),  # type: ignore[dict-item]
    ],
)
def test_malformed_feedback_is_400_with_the_field(change: dict[str, object], reason: str) -> None:
    with pytest.raises(RejectedDelivery) as refused:
        parse_delivery("msg_1", body({**bounce_event(), **change}))
    assert refused.value.status == 400
    assert reason in refused.value.reason


def test_other_types_carry_nothing() -> None:
    sent = {"type": "event", "event_type": "message.sent", "event_id": "evt_s", "send": {}}
    delivery = parse_delivery("msg_1", body(sent))
    assert delivery.message is None
    assert delivery.feedback is None
    assert delivery.event_type == "message.sent"


# -- draft mode: message.sent --------------------------------------------------------


def sent_event(**send: object) -> dict[str, object]:
    """A ``message.sent`` event as AgentMail sends it (checked against the SDK below)."""
    return {
        "type": "event",
        "event_type": "message.sent",
        "event_id": "evt_sent_1",
        "send": {
            "inbox_id": "bot@agentmail.to",
            "thread_id": "thd_1",
            "message_id": "<sent@agentmail.to>",
            "timestamp": "2026-01-01T10:00:00Z",
            "recipients": ["jane@example.com"],
            **send,
        },
    }


def test_draft_mode_anywhere_subscribes_to_sent_events(tmp_path: Path) -> None:
    """``message.sent`` when AUTOREPLY_MODE=draft, or when any rule sets draft mode."""
    folder = tmp_path
    assert "message.sent" not in registration.event_types(settings())
    assert "message.sent" in registration.event_types(settings(AUTOREPLY_MODE="draft"))
    (folder / "rules.toml").write_text(
        '[[rule]]\nname = "vip"\ntemplate = "default"\nsender = "vip.example"\nmode = "draft"\n'
    )
    with_rule = settings(AUTOREPLY_TEMPLATES_DIR=str(folder))
    assert registration.event_types(with_rule)[-1] == "message.sent"
    (folder / "rules.toml").write_text(
        '[[rule]]\nname = "vip"\ntemplate = "default"\nmode = "send"\n'
    )
    assert "message.sent" not in registration.event_types(with_rule)


def test_sent_events_carry_the_sent_message_and_its_thread() -> None:
    event = sent_event()
    MessageSentEvent.model_validate(event)
    delivery = parse_delivery("msg_1", body(event), acted_on=("message.sent",))
    assert delivery.sent is not None
    assert (delivery.sent.inbox_id, delivery.sent.thread_id, delivery.sent.message_id) == (
        "bot@agentmail.to",
        "thd_1",
        "<sent@agentmail.to>",
    )
    assert delivery.message is None
    # Not acted on (no draft mode): recorded and ignored, whatever it holds.
    assert parse_delivery("msg_1", body({**event, "send": 7}), acted_on=()).sent is None


def test_a_sent_event_without_its_ids_is_400() -> None:
    with pytest.raises(RejectedDelivery, match="send object"):
        parse_delivery("m", body({**sent_event(), "send": None}), acted_on=("message.sent",))
    with pytest.raises(RejectedDelivery, match=r"send\.thread_id"):
        parse_delivery("m", body(sent_event(thread_id="")), acted_on=("message.sent",))
