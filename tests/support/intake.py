"""A service that takes deliveries and nothing else, and deliveries signed for it.

For tests of intake over real HTTP: ``intake_service`` starts ``autoreply serve`` with
the known ``SECRET`` and an AgentMail that cannot be reached (no job gets far, and none
needs to); ``message_event`` builds a ``message.received`` event; ``signed_headers``
signs a body with svix, as AgentMail's sender does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from svix.webhooks import Webhook

from tests.support.service_process import ServiceProcess, free_port

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WEBHOOK_PATH = "/webhooks/agentmail"


def intake_service(folder: Path, **env: str) -> ServiceProcess:
    """``autoreply serve`` on a SQLite file in ``folder``, verifying with ``SECRET``;
    ``env`` adds or overrides settings. Started and ready; the caller stops it."""
    settings = {
        "AGENTMAIL_API_KEY": "am_test",
        "AGENTMAIL_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "AUTOREPLY_WEBHOOK_SECRET": SECRET,
        "AUTOREPLY_DATABASE_URL": f"sqlite:///{folder / 'autoreply.db'}",
        **env,
    }
    return ServiceProcess(settings, folder / "service.log").start()


def message_event(n: int = 1, **overrides: object) -> dict[str, object]:
    """A ``message.received`` event whose ids end in ``n``; ``overrides`` replace
    top-level fields."""
    message = {
        "inbox_id": "bot@agentmail.to",
        "thread_id": f"thd_{n}",
        "message_id": f"<m{n}@example.com>",
        "labels": ["received", "unread"],
        "timestamp": "2026-01-01T10:00:00Z",
        "from": "Jane <jane@example.com>",
        "to": ["bot@agentmail.to"],
        "subject": "Hi",
        "text": "Hello",
        "size": 10,
        "updated_at": "2026-01-01T10:00:00Z",
        "created_at": "2026-01-01T10:00:00Z",
    }
    event: dict[str, object] = {
        "type": "event",
        "event_type": "message.received",
        "event_id": f"evt_{n}",
        "message": message,
        "thread": {},
    }
    event.update(overrides)
    return event


def signed_headers(
    body: bytes, *, secret: str = SECRET, msg_id: str = "msg_1", at: datetime | None = None
) -> dict[str, str]:
    """The Svix headers of ``body`` signed with ``secret`` at ``at`` (default now)."""
    when = at or datetime.now(UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(when.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, when, body.decode("utf-8")),
        "content-type": "application/json",
    }


def bounce_event(
    n: int = 1,
    *,
    message_id: str = "<reply1@agentmail.to>",
    inbox_id: str = "bot@agentmail.to",
    type_: str = "Permanent",
    sub_type: str = "General",
    recipients: tuple[str, ...] = ("jane@example.com",),
) -> dict[str, object]:
    """A ``message.bounced`` event (the SDK's ``MessageBouncedEvent``) whose event id
    ends in ``n``, about the sent message ``message_id``."""
    return {
        "type": "event",
        "event_type": "message.bounced",
        "event_id": f"evt_bounce_{n}",
        "bounce": {
            "inbox_id": inbox_id,
            "thread_id": "thd_1",
            "message_id": message_id,
            "timestamp": "2026-01-01T10:05:00Z",
            "type": type_,
            "sub_type": sub_type,
            "recipients": [{"address": a, "status": "bounced"} for a in recipients],
        },
    }


def complaint_event(
    n: int = 1,
    *,
    message_id: str = "<reply1@agentmail.to>",
    inbox_id: str = "bot@agentmail.to",
    type_: str = "abuse",
    recipients: tuple[str, ...] = ("jane@example.com",),
) -> dict[str, object]:
    """A ``message.complained`` event (the SDK's ``MessageComplainedEvent``)."""
    return {
        "type": "event",
        "event_type": "message.complained",
        "event_id": f"evt_complaint_{n}",
        "complaint": {
            "inbox_id": inbox_id,
            "thread_id": "thd_1",
            "message_id": message_id,
            "timestamp": "2026-01-01T10:05:00Z",
            "type": type_,
            "sub_type": "spam",
            "recipients": list(recipients),
        },
    }
