"""The running service's parts, wired together, started and stopped in order.

``Runtime`` is the composition root: it owns the store, the AgentMail client, the
templates, the worker and the registration task, and it knows what ``/readyz`` must
report. The Starlette app only holds one. Its background tasks (registration, template
watching, wake-ups, purging, the catch-up sweep) start after the store opens and are
cancelled first on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time

import structlog

from handlers.grace import format_delay
from handlers.policy import PolicyConfig
from service import registration
from service.agentmail_api import AgentMailApi, WebhookInfo
from service.burst import WebhookBurst
from service.models import RegistrationState
from service.settings import Settings, SettingsError, redact_url
from service.store import Store, StoreUnavailable, open_store
from service.sweep import Sweeper, SweepLoop
from service.templates import RULES_FILE, SHIPPED_DIR, LiveTemplates, TemplateError
from service.webhooks import Verifier
from service.worker import Worker, WorkerConfig

log = structlog.get_logger("autoreply.runtime")

#: How often old delivery and event dedupe rows are purged (``AUTOREPLY_RETENTION``).
PURGE_INTERVAL = 600.0


class Runtime:
    """Everything the app needs while it runs; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        api: AgentMailApi | None = None,
        templates: LiveTemplates | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or open_store(settings.database_url)
        self.api = api or AgentMailApi(
            api_key=settings.api_key,
            base_url=settings.base_url,
            timeout=settings.api_timeout_seconds,
        )
        self.templates = templates or LiveTemplates(
            settings.templates_dir, timezone=settings.timezone
        )
        _check_rule_delays(self.templates, settings)
        self.inbox_ids = frozenset(settings.inbox_ids)
        #: The event types this configuration subscribes to and intake acts on; other
        #: types are recorded and answered ``ignored``.
        self.event_types = frozenset(registration.event_types(settings))
        self.webhook: WebhookInfo | None = None
        self.verifier: Verifier | None = None
        self.registration_problem: str | None = None
        #: Reported by ``autoreply_webhook_registration``; ``registration_problem`` says
        #: why it is not ``registered`` (for ``/readyz``).
        self.registration = (
            RegistrationState.MANUAL if settings.webhook_url is None else RegistrationState.PENDING
        )
        #: Webhook requests in progress and the loop's load: the worker steps back in a burst.
        self.burst = WebhookBurst(on_end=self.wake_worker)
        self.worker = Worker(
            store=self.store,
            api=self.api,
            templates=self.templates,
            config=WorkerConfig(
                concurrency=settings.worker_concurrency,
                lease_seconds=settings.job_lease_seconds,
                unreplied_label=settings.unreplied_label,
                replied_label=settings.replied_label,
                dry_run=settings.dry_run,
                policy=policy_config(settings),
                reply_delay=settings.reply_delay,
                mode=settings.mode,
                draft_label=settings.draft_label,
                draft_check_seconds=settings.draft_check_interval.total_seconds(),
            ),
            claim_limit=self.burst.claim_limit,
        )
        #: The catch-up sweep (``AUTOREPLY_SWEEP_INTERVAL``; None when it is 0).
        self.sweep_loop: SweepLoop | None = None
        if settings.sweep_interval:
            sweeper = Sweeper(
                store=self.store,
                api=self.api,
                inbox_ids=tuple(settings.inbox_ids),
                replied_label=settings.replied_label,
                wake=self.wake_worker,
                busy=self.burst.intake_busy,
                # The worker's token: ``leases.owner`` names the replica sweeping, as
                # ``jobs.lease_owner`` names the one working a job.
                owner=self.worker.owner,
                lease_seconds=settings.sweep_lease_seconds,
            )
            self.sweep_loop = SweepLoop(sweeper, interval=settings.sweep_interval.total_seconds())
        self._background: list[asyncio.Task[None]] = []
        if settings.webhook_secrets:
            self.verifier = _verifier(settings.webhook_secrets)

    def wake_worker(self) -> None:
        """Tell the worker a job was just enqueued."""
        self.worker.wake()

    async def start(self) -> None:
        """Open the store, start registration (if configured) and the worker."""
        await self.store.open()
        url = self.settings.webhook_url
        desired = registration.webhook_spec(self.settings)
        if desired is not None:
            self._background.append(asyncio.create_task(self._register(desired)))
        self._background.append(asyncio.create_task(self.templates.watch(2.0)))
        # Other replicas' enqueues wake this worker (PostgreSQL); a no-op on SQLite.
        self._background.append(asyncio.create_task(self.store.listen(self.worker.wake)))
        if self.settings.retention:
            self._background.append(asyncio.create_task(self._purge_periodically()))
        self._background.append(asyncio.create_task(self.burst.measure()))
        if self.sweep_loop is not None:
            # A pass at once (catching up on what arrived while the service was down),
            # then one every interval; one replica at a time, under the sweep lease.
            self._background.append(asyncio.create_task(self.sweep_loop.run()))
        self._watch_sighup()
        await self.worker.start()
        _tune_gc()
        log.info(
            "service_started",
            database=redact_url(self.settings.database_url),
            webhook_url=url,
            dry_run=self.settings.dry_run,
            concurrency=self.settings.worker_concurrency,
            # The token in ``jobs.lease_owner``: which replica holds which job.
            worker=self.worker.owner,
        )

    async def stop(self) -> None:
        """Drain the worker within the grace period, then close everything."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        try:
            await self.worker.stop(self.settings.shutdown_grace_seconds)
        finally:
            try:
                await self.api.aclose()
            finally:
                await self.store.close()

    async def _purge_periodically(self) -> None:
        """Delete dedupe rows older than the retention now and every ``PURGE_INTERVAL``."""
        retention = self.settings.retention.total_seconds()
        while True:
            try:
                deleted = await self.store.purge(before=time.time() - retention)
            except StoreUnavailable as exc:
                log.warning("purge_failed", error=str(exc))
            except Exception:  # a bug must not end purging for good: log it, go on
                log.exception("purge_crashed")
            else:
                if deleted:
                    log.info("purged", rows=deleted, retention_s=retention)
            await asyncio.sleep(PURGE_INTERVAL)

    async def _register(self, desired: registration.WebhookSpec) -> None:
        self.registration_problem = "webhook registration pending"
        webhook = await registration.register_with_retry(
            self.api, desired, report=self._registration_reported
        )
        self.webhook = webhook
        if not self.settings.webhook_secrets:
            try:
                self.verifier = Verifier((webhook.secret,))
            except ValueError as exc:
                # A weak or malformed secret from AgentMail is refused like a configured
                # one: no verifier, so intake answers 503 and /readyz says why.
                self.registration_problem = (
                    f"webhook {webhook.webhook_id}: its {exc}; set AUTOREPLY_WEBHOOK_SECRET "
                    "to a valid secret, or rotate it at AgentMail, and restart"
                )
                log.error("webhook_secret_refused", problem=self.registration_problem)
                return
        log.info("webhook_ready", **registration.describe(webhook))

    def _registration_reported(self, state: RegistrationState, problem: str | None) -> None:
        self.registration, self.registration_problem = state, problem

    def _watch_sighup(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._reload_templates)

    def _reload_templates(self) -> None:
        error = self.templates.reload()
        if error is None:
            log.info("templates_reloaded")
        else:
            log.error("templates_reload_failed", error=str(error))

    async def problems(self) -> list[str]:
        """Why the service is not ready; empty when it is."""
        problems = []
        try:
            async with asyncio.timeout(2.0):
                await self.store.ping()
        except (StoreUnavailable, TimeoutError) as exc:
            problems.append(f"store unavailable: {exc or 'timed out'}")
        if self.verifier is None:
            problems.append(self.registration_problem or "webhook secret unknown")
        if not self.worker.running:
            problems.append("worker not running")
        return problems


def _check_rule_delays(templates: LiveTemplates, settings: Settings) -> None:
    """Refuse a rule whose ``delay`` is not shorter than ``AUTOREPLY_MAX_AGE``, with the
    file and line, as ``AUTOREPLY_REPLY_DELAY`` is refused: a message is judged for its
    age when its delay is over, so every message of that rule would be skipped too_old."""
    if not settings.max_age:
        return
    current = templates.current
    for rule in current.rules.rules:
        if rule.delay is not None and rule.delay >= settings.max_age:
            where = str((current.directory or SHIPPED_DIR) / RULES_FILE)
            raise TemplateError(
                where,
                rule.line,
                f"rule {rule.name!r}: delay {format_delay(rule.delay)} is not shorter than "
                f"AUTOREPLY_MAX_AGE ({format_delay(settings.max_age)}): every message it "
                "matches would be skipped too_old",
            )


def policy_config(settings: Settings) -> PolicyConfig:
    """The reply policy's settings."""
    own = {address.lower() for address in settings.own_addresses}
    own.update(inbox.lower() for inbox in settings.inbox_ids)
    return PolicyConfig(
        own_addresses=frozenset(own),
        require_recipient=settings.require_recipient,
        thread_cap=settings.thread_cap,
        sender_cooldown=settings.sender_cooldown,
        allow=settings.allow,
        deny=settings.deny,
        max_age=settings.max_age,
    )


def _verifier(secrets: tuple[str, ...]) -> Verifier:
    try:
        return Verifier(secrets)
    except Exception as exc:
        raise SettingsError("AUTOREPLY_WEBHOOK_SECRET", f"not a valid Svix secret ({exc})") from exc


#: Allocations between young-generation collections (CPython's default is 700).
GC_THRESHOLD = (10_000, 20, 20)


def _tune_gc() -> None:
    """Make the cyclic garbage collector cheap on the request path.

    What exists at the end of startup (modules, the SDK's models, templates) lives as
    long as the process: ``gc.freeze`` takes it out of every later collection, which
    otherwise walked all of it on each full collection (the p99 spikes of the intake
    benchmark). A larger first threshold then collects the short-lived request objects
    a tenth as often; their cycles are rare, so little waits longer to be freed.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
