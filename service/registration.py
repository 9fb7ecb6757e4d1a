"""Registering the service's own webhook with AgentMail, idempotently, repairing drift.

``webhooks.create`` with a fixed ``client_id`` returns the existing webhook unchanged
when the id was used before, so creation alone cannot move a webhook to a new URL or
scope. ``ensure_webhook`` therefore compares what came back with what is wanted and
converges: update what the API can update, and delete and re-create for a new URL.

What is wanted comes from the settings in one place, ``webhook_spec``; the event types
in ``event_types`` (see ``handlers.events.subscribed_event_types``), so a configuration
that needs another event type changes the subscription of a running deployment at its
next start, as a changed inbox scope does.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from handlers.events import subscribed_event_types
from handlers.modes import ReplyMode
from handlers.rules import Rules, configured_delay
from service.agentmail_api import AgentMailApi, ApiFailure, WebhookInfo
from service.models import RegistrationState
from service.settings import Settings
from service.templates import TemplateError, rules_of

log = structlog.get_logger("autoreply.registration")

#: The event types of the plainest configuration (suppression off): ``message.received``.
EVENT_TYPES = subscribed_event_types(suppression=False)


def event_types(settings: Settings) -> tuple[str, ...]:
    """The event types ``settings`` need, subscribed by registration and acted on by intake.

    ``message.received`` always; ``message.bounced`` and ``message.complained`` with
    ``AUTOREPLY_SUPPRESSION`` (the default). ``message.sent`` is for a configuration
    that must learn of sends it did not make itself (draft mode, a reply delay): pass
    ``sent=`` the setting that needs it here, and nowhere else. A grace period
    configured anywhere needs it (``grace_period_configured``), and so does draft mode
    configured anywhere (``draft_mode_configured``).
    """
    rules = _startup_rules(settings)
    sent = grace_period_configured(settings, rules) or draft_mode_configured(settings, rules)
    return subscribed_event_types(suppression=settings.suppression, sent=sent)


def _startup_rules(settings: Settings) -> Rules:
    """The rules of the templates folder as they are now. A broken ``rules.toml`` counts
    as no rule here: ``serve`` refuses to start on it, and ``register`` and ``status``
    still show the rest."""
    try:
        return rules_of(settings.templates_dir)
    except TemplateError:
        return Rules()


def grace_period_configured(settings: Settings, rules: Rules | None = None) -> bool:
    """Whether any message can have a grace period: ``AUTOREPLY_REPLY_DELAY``, or a
    ``delay`` in any rule of the templates folder's ``rules.toml`` (as it is at startup).

    A person's answer in a delayed message's thread is what ``message.sent`` tells; the
    worker reads the thread before replying anyway, so a missed or late event changes
    nothing.
    """
    return configured_delay(
        _startup_rules(settings) if rules is None else rules, settings.reply_delay
    )


def draft_mode_configured(settings: Settings, rules: Rules | None = None) -> bool:
    """Whether any reply can be a draft: ``AUTOREPLY_MODE=draft``, or a rule of
    ``rules.toml`` with ``mode = "draft"`` (as it is at startup).

    The sending of a draft is what ``message.sent`` tells. A rule given draft mode while
    the service runs applies to new replies at once, but the subscription follows at the
    next start; until then each waiting job's periodic draft check finds its draft sent.
    """
    if settings.mode is ReplyMode.DRAFT:
        return True
    return ReplyMode.DRAFT in (_startup_rules(settings) if rules is None else rules).modes


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookSpec:
    """The webhook this service wants registered: where, under which client_id, for what."""

    url: str
    client_id: str
    inbox_ids: tuple[str, ...] = ()
    event_types: tuple[str, ...] = EVENT_TYPES


def webhook_spec(settings: Settings) -> WebhookSpec | None:
    """The webhook ``settings`` want registered; None without ``AUTOREPLY_PUBLIC_URL``.

    The one place that turns settings into a ``WebhookSpec``: ``serve``, ``register``
    and ``status`` all compare against the same thing.
    """
    url = settings.webhook_url
    if url is None:
        return None
    return WebhookSpec(
        url=url,
        client_id=settings.webhook_client_id,
        inbox_ids=tuple(sorted(settings.inbox_ids)),
        event_types=event_types(settings),
    )


def fallback_client_id(client_id: str, url: str) -> str:
    """A client_id for ``url`` when AgentMail keeps the fixed one reserved after delete."""
    return f"{client_id}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"


async def ensure_webhook(api: AgentMailApi, desired: WebhookSpec) -> WebhookInfo:
    """Create or repair the webhook until it matches ``desired``; return it."""
    webhook = await _create(api, desired, desired.client_id)
    if webhook.url != desired.url:
        log.info(
            "webhook_url_changed", webhook_id=webhook.webhook_id, old=webhook.url, new=desired.url
        )
        await api.delete_webhook(webhook.webhook_id)
        webhook = await _create(api, desired, desired.client_id)
        if webhook.url != desired.url:
            fallback = fallback_client_id(desired.client_id, desired.url)
            log.info("webhook_client_id_reserved", client_id=desired.client_id, fallback=fallback)
            webhook = await _create(api, desired, fallback)
            if webhook.url != desired.url:
                raise ApiFailure(
                    f"webhook {webhook.webhook_id} keeps URL {webhook.url}", transient=False
                )
    return await _repair(api, webhook, desired)


async def _create(api: AgentMailApi, desired: WebhookSpec, client_id: str) -> WebhookInfo:
    webhook = await api.create_webhook(
        url=desired.url,
        event_types=desired.event_types,
        inbox_ids=desired.inbox_ids,
        client_id=client_id,
    )
    log.info("webhook_registered", webhook_id=webhook.webhook_id, client_id=client_id)
    return webhook


async def _repair(api: AgentMailApi, webhook: WebhookInfo, desired: WebhookSpec) -> WebhookInfo:
    changes: dict[str, object] = {}
    if set(webhook.event_types) != set(desired.event_types):
        changes["event_types"] = list(desired.event_types)
    if not webhook.enabled:
        changes["enabled"] = True
    have, want = set(webhook.inbox_ids), set(desired.inbox_ids)
    add, remove = sorted(want - have), sorted(have - want)
    if add:
        changes["add_inbox_ids"] = add
    if remove:
        changes["remove_inbox_ids"] = remove
    if not changes:
        return webhook
    log.info("webhook_drift_repaired", webhook_id=webhook.webhook_id, **changes)
    return await api.update_webhook(
        webhook.webhook_id,
        event_types=desired.event_types if "event_types" in changes else None,
        enabled=True if "enabled" in changes else None,
        add_inbox_ids=add,
        remove_inbox_ids=remove,
    )


async def register_with_retry(
    api: AgentMailApi,
    desired: WebhookSpec,
    *,
    report: Callable[[RegistrationState, str | None], None],
    max_delay: float = 60.0,
) -> WebhookInfo:
    """``ensure_webhook`` until it succeeds, backing off; ``report`` each outcome.

    Each failure is reported as ``FAILING`` with its reason, the success as
    ``REGISTERED`` with None. Permanent failures (a rejected key, a refused URL) are
    retried too, more slowly: the operator fixes them outside the service, and
    ``/readyz`` says what is wrong.
    """
    attempt = 0
    while True:
        try:
            webhook = await ensure_webhook(api, desired)
        except ApiFailure as failure:
            attempt += 1
            delay = min(max_delay, 0.5 * 2**attempt) * (0.5 + random.random() / 2)
            report(RegistrationState.FAILING, f"webhook registration failed: {failure.reason}")
            log.warning(
                "webhook_registration_failed",
                error=failure.reason,
                attempt=attempt,
                retry_in_s=round(delay, 1),
            )
            await asyncio.sleep(delay)
        else:
            report(RegistrationState.REGISTERED, None)
            return webhook


def describe(webhook: WebhookInfo) -> dict[str, object]:
    """The loggable/printable view of a webhook: never its secret."""
    return {
        "webhook_id": webhook.webhook_id,
        "url": webhook.url,
        "event_types": list(webhook.event_types),
        "inbox_ids": list(webhook.inbox_ids),
        "enabled": webhook.enabled,
        "client_id": webhook.client_id,
    }


def secrets_for(webhook: WebhookInfo | None, configured: Sequence[str]) -> tuple[str, ...]:
    """Configured secrets win; otherwise the registered webhook's own."""
    if configured:
        return tuple(configured)
    return (webhook.secret,) if webhook is not None else ()
