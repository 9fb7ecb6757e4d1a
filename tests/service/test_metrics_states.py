"""The states and outcomes that metrics report, as enums, without a running service.

Dashboards and alerts select on these label values, so the values are pinned here; the
registration state is reported by registration itself, not read from its wording.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service import metrics, registration
from service.agentmail_api import ApiFailure, WebhookInfo
from service.models import AttemptOutcome, QueueStats, RegistrationState

WEBHOOK = WebhookInfo(
    webhook_id="wh_1",
    url="https://autoreply.example.com/webhooks/agentmail",
    event_types=registration.EVENT_TYPES,
    inbox_ids=(),
    enabled=True,
    secret="whsec_unused",
    client_id="autoreply",
)


def test_label_values_are_the_documented_ones() -> None:
    """Renaming a member must not change what Prometheus sees."""
    assert [state.value for state in RegistrationState] == [
        "registered",
        "pending",
        "failing",
        "manual",
    ]
    assert {outcome.value for outcome in AttemptOutcome} == {
        "replied",
        "skipped",
        "deferred",
        "dry_run",
        "dead",
        "retry",
        "lease_lost",
        "store_unavailable",
        "drafted",
        "waiting",
        "discarded",
        "error",
    }


@pytest.mark.parametrize("state", list(RegistrationState))
def test_registration_gauge_is_one_for_the_current_state_only(state: RegistrationState) -> None:
    """``autoreply_webhook_registration``: exactly the current state is 1."""
    body, content_type = metrics.exposition(
        accept="text/plain",
        stats=QueueStats(by_state={}, oldest_pending_created_at=None),
        registration=state,
        now=0.0,
    )
    assert content_type.startswith("text/plain")
    [family] = [
        family
        for family in text_string_to_metric_families(body.decode())
        if family.name == "autoreply_webhook_registration"
    ]
    values = {sample.labels["state"]: sample.value for sample in family.samples}
    assert values == {other.value: float(other is state) for other in RegistrationState}


class _FlakyWebhooks:
    """Creates the webhook on the second try; the only call registration makes here."""

    def __init__(self) -> None:
        self.tries = 0

    async def create_webhook(self, **_: Any) -> WebhookInfo:
        self.tries += 1
        if self.tries == 1:
            raise ApiFailure("create webhook: HTTP 503", transient=True, status=503)
        return WEBHOOK


async def test_registration_reports_failing_then_registered() -> None:
    """Each failure is reported as ``failing`` with its reason, the success as
    ``registered``: the runtime keeps the state instead of parsing the message."""
    reports: list[tuple[RegistrationState, str | None]] = []
    desired = registration.WebhookSpec(url=WEBHOOK.url, client_id="autoreply")

    webhook = await registration.register_with_retry(
        _FlakyWebhooks(),  # type: ignore[arg-type]
        desired,
        report=lambda state, problem: reports.append((state, problem)),
        max_delay=0.001,
    )

    assert webhook == WEBHOOK
    assert reports == [
        (RegistrationState.FAILING, "webhook registration failed: create webhook: HTTP 503"),
        (RegistrationState.REGISTERED, None),
    ]
