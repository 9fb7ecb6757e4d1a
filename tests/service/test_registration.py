"""Webhook registration at startup: idempotent, repairs drift, one webhook for many replicas."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from agentmail import AgentMail
from agentmail.environment import AgentMailEnvironment
from agentmail.inboxes.types.create_inbox_request import CreateInboxRequest

from service.registration import fallback_client_id
from tests.support.deployment import Deployment
from tests.support.service_process import free_port


@contextmanager
def client(sandbox: Any) -> Iterator[AgentMail]:
    """A real SDK client on the sandbox, closed afterwards."""
    with httpx.Client() as http:
        yield AgentMail(
            api_key=sandbox.api_key,
            environment=AgentMailEnvironment(http=sandbox.url, websockets="ws://unused"),
            httpx_client=http,
        )


def ours(sandbox: Any) -> list[Any]:
    """Every webhook the sandbox holds."""
    with client(sandbox) as api:
        return list(api.webhooks.list().webhooks)


#: What the default configuration subscribes to: received mail, and the bounces and
#: complaints that feed the suppression list.
DEFAULT_EVENT_TYPES = ["message.received", "message.bounced", "message.complained"]


def assert_one_correct_webhook(
    sandbox: Any, url: str, event_types: list[str] = DEFAULT_EVENT_TYPES
) -> Any:
    webhooks = ours(sandbox)
    assert len(webhooks) == 1, [w.url for w in webhooks]
    [webhook] = webhooks
    assert webhook.url == url
    assert sorted(webhook.event_types or []) == sorted(event_types)
    assert webhook.enabled
    return webhook


def register(deployment: Deployment, **env: str) -> subprocess.CompletedProcess[str]:
    return deployment.run("register", **env)


def test_startup_registers_and_deliveries_verify(sandbox: Any, deployment: Deployment) -> None:
    """With only the public URL set, the service registers itself and accepts deliveries."""
    service = deployment.start()
    webhook = assert_one_correct_webhook(sandbox, service.url + "/webhooks/agentmail")
    assert webhook.client_id == "autoreply"
    result = sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox, subject="x", text="y")
    deployment.wait_final(1)
    [delivery] = sandbox.admin.wait_for_deliveries(timeout=30)
    assert delivery["attempts"][-1]["status"] == 202
    assert result["message_id"] in deployment.jobs()
    service.terminate()
    log = service.log()
    assert "webhook_ready" in log
    assert webhook.secret not in log
    assert sandbox.api_key not in log


def test_register_command_prints_webhook_never_secret(sandbox: Any, deployment: Deployment) -> None:
    """``autoreply register`` converges once and prints the id and URL, not the secret."""
    result = register(deployment)
    assert result.returncode == 0, result.stderr
    webhook = assert_one_correct_webhook(
        sandbox, f"http://127.0.0.1:{deployment.port}/webhooks/agentmail"
    )
    assert webhook.webhook_id in result.stdout
    assert webhook.secret not in result.stdout + result.stderr
    again = register(deployment)
    assert again.returncode == 0
    assert len(ours(sandbox)) == 1


def test_url_change_moves_the_webhook(sandbox: Any, deployment: Deployment) -> None:
    """A webhook left at an old URL under our client_id is replaced, not kept."""
    with client(sandbox) as api:
        api.webhooks.create(
            url="http://old.example.com/hook",
            event_types=["message.received"],
            client_id="autoreply",
        )
    result = register(deployment)
    assert result.returncode == 0, result.stderr
    assert_one_correct_webhook(sandbox, f"http://127.0.0.1:{deployment.port}/webhooks/agentmail")


def test_event_types_and_disabled_are_repaired(sandbox: Any, deployment: Deployment) -> None:
    """Other event types and a disabled webhook are updated in place (same id)."""
    url = f"http://127.0.0.1:{deployment.port}/webhooks/agentmail"
    with client(sandbox) as api:
        created = api.webhooks.create(url=url, event_types=["message.sent"], client_id="autoreply")
        api.webhooks.update(created.webhook_id, enabled=False)
    result = register(deployment)
    assert result.returncode == 0, result.stderr
    webhook = assert_one_correct_webhook(sandbox, url)
    assert webhook.webhook_id == created.webhook_id


def test_event_types_follow_the_configuration(sandbox: Any, deployment: Deployment) -> None:
    """Turning suppression off unsubscribes from bounces and complaints, turning it on
    again subscribes back: the same webhook, updated in place each time."""
    url = f"http://127.0.0.1:{deployment.port}/webhooks/agentmail"
    assert register(deployment).returncode == 0
    first = assert_one_correct_webhook(sandbox, url)
    result = register(deployment, AUTOREPLY_SUPPRESSION="false")
    assert result.returncode == 0, result.stderr
    plain = assert_one_correct_webhook(sandbox, url, ["message.received"])
    assert register(deployment).returncode == 0
    again = assert_one_correct_webhook(sandbox, url)
    assert first.webhook_id == plain.webhook_id == again.webhook_id


def test_status_reports_event_type_drift(sandbox: Any, deployment: Deployment) -> None:
    """``autoreply status`` compares AgentMail's event types with the configuration's."""
    assert deployment.run("migrate").returncode == 0
    assert register(deployment, AUTOREPLY_SUPPRESSION="false").returncode == 0
    drifted = deployment.run("status", "--json")
    assert drifted.returncode == 0, drifted.stderr
    report = json.loads(drifted.stdout)["webhook"]
    assert report["check"] == "drift", report
    assert "event types are message.received" in report["detail"]
    assert report["event_types"] == DEFAULT_EVENT_TYPES
    assert register(deployment).returncode == 0
    matching = json.loads(deployment.run("status", "--json").stdout)["webhook"]
    assert matching["check"] == "ok", matching


def test_inbox_scope_is_repaired(sandbox: Any, deployment: Deployment) -> None:
    """AUTOREPLY_INBOX_IDS scopes the webhook; a changed list is converged."""
    url = f"http://127.0.0.1:{deployment.port}/webhooks/agentmail"
    with client(sandbox) as api:
        other = api.inboxes.create(
            request=CreateInboxRequest(username="other", client_id="other-inbox")
        )
        api.webhooks.create(
            url=url,
            event_types=["message.received"],
            client_id="autoreply",
            inbox_ids=[other.inbox_id],
        )
    result = register(deployment, AUTOREPLY_INBOX_IDS=sandbox.inbox)
    assert result.returncode == 0, result.stderr
    webhook = assert_one_correct_webhook(sandbox, url)
    assert list(webhook.inbox_ids or []) == [sandbox.inbox]


def test_three_replicas_starting_at_once_end_with_one_webhook(
    sandbox: Any, deployment: Deployment
) -> None:
    """Concurrent starts behind one public URL converge on a single webhook."""
    errors: list[BaseException] = []

    def start(port: int) -> None:
        try:
            deployment.start(
                port=port, AUTOREPLY_DATABASE_URL=f"sqlite:///{deployment.folder}/{port}.db"
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(free_port(),)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert_one_correct_webhook(sandbox, f"http://127.0.0.1:{deployment.port}/webhooks/agentmail")


def test_unreachable_agentmail_is_not_ready_and_says_why(deployment: Deployment) -> None:
    """AgentMail down at start: alive, not ready, and /readyz names the reason."""
    service = deployment.start(
        wait_ready=False, AGENTMAIL_BASE_URL=f"http://127.0.0.1:{free_port()}"
    )
    assert httpx.get(service.url + "/healthz").status_code == 200
    deployment.wait_until(
        lambda: "registration" in httpx.get(service.url + "/readyz").text,
        timeout=30,
        what="readyz to explain",
    )
    ready = httpx.get(service.url + "/readyz")
    assert ready.status_code == 503
    assert any("webhook registration failed" in r for r in ready.json()["reasons"])


def test_fallback_client_id_is_stable_and_distinct() -> None:
    """The fallback id depends on the URL only, so every replica picks the same one."""
    a = fallback_client_id("autoreply", "https://a.example.com/webhooks/agentmail")
    assert a == fallback_client_id("autoreply", "https://a.example.com/webhooks/agentmail")
    assert a != fallback_client_id("autoreply", "https://b.example.com/webhooks/agentmail")
    assert a.startswith("autoreply-")
