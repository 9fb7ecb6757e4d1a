"""Findings of the webhook review, each tested where a user meets it.

* A huge ``svix-timestamp`` is a 401 with a reason, never a 500, from the real service
  over HTTP (it raised OverflowError, or ValueError past 4,300 digits, in the shortcut).
* A timestamp with a leading zero, signed over the header as written, is refused as svix
  refuses it (svix signs ``str(int(ts))``); signed as svix signs, it is accepted.
* ``autoreply serve`` with a weak or mistyped ``AUTOREPLY_WEBHOOK_SECRET`` stops with
  exit code 2 and one line naming the variable (it started with ``whsec_AA``).
* A weak or mistyped secret on the registered webhook leaves the service unready:
  ``/readyz`` and the webhook's 503 say why, and no delivery is verified with it.

The lower-level contract (the verifier accepts exactly what svix accepts) is fuzzed in
tests/service/test_verifier_differential.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from svix.webhooks import Webhook

from service.sandbox import webhooks as sandbox_webhooks
from service.sandbox.ids import webhook_secret
from service.settings import Settings
from tests.support.deployment import Deployment
from tests.support.intake import SECRET, WEBHOOK_PATH, intake_service
from tests.support.service_process import ServiceProcess, free_port, run_autoreply

pytestmark = pytest.mark.slow

PATH = WEBHOOK_PATH
BODY = json.dumps({"event_type": "domain.verified", "event_id": "evt_hardening"}).encode()


def hmac_signature(secret: str, svix_id: str, timestamp: str, body: bytes) -> str:
    """``v1,<base64>`` over ``{svix_id}.{timestamp}.{body}`` with the timestamp exactly as
    given (``Webhook.sign`` always writes the canonical one)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{svix_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@pytest.fixture(name="service", scope="module")
def _service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = intake_service(tmp_path_factory.mktemp("hardening"))
    yield service
    service.stop()


def signed_as_written(svix_id: str, timestamp: str) -> dict[str, str]:
    """Headers of ``BODY`` signed with ``SECRET`` over ``timestamp`` exactly as given."""
    return {
        "svix-id": svix_id,
        "svix-timestamp": timestamp,
        "svix-signature": hmac_signature(SECRET, svix_id, timestamp, BODY),
    }


def post(service: ServiceProcess, headers: dict[str, str], body: bytes = BODY) -> httpx.Response:
    return httpx.post(service.url + PATH, content=body, headers=headers, timeout=10)


HUGE = [
    ("400 digits", "9" * 400, "invalid svix-timestamp"),
    ("4301 digits", "1" * 4301, "invalid svix-timestamp"),
    ("minus 400 digits", "-" + "9" * 400, "invalid svix-timestamp"),
    ("400 zeros, then 1", "0" * 400 + "1", "timestamp too old"),
    # "{now}" is filled in when the test runs: a time taken at collection could be more
    # than svix's five minutes old by then, in a long suite.
    ("400 zeros, then now", "0" * 400 + "{now}", "signature does not match"),
]


@pytest.mark.parametrize(("name", "timestamp", "reason"), HUGE, ids=[h[0] for h in HUGE])
def test_huge_timestamp_is_401_with_a_reason(
    service: ServiceProcess, name: str, timestamp: str, reason: str
) -> None:
    """Signed correctly over the timestamp as written, so that the shortcut reads it."""
    timestamp = timestamp.replace("{now}", str(int(time.time())))
    response = post(service, signed_as_written("msg_huge", timestamp))
    assert response.status_code == 401, response.text
    assert response.json() == {"status": "rejected", "reason": reason}


def test_leading_zero_timestamp_signed_as_written_is_refused(service: ServiceProcess) -> None:
    """svix signs ``str(int(ts))``, so a signature over ``0<ts>`` is not svix's: 401."""
    timestamp = "0" + str(int(time.time()))
    response = post(service, signed_as_written("msg_zero", timestamp))
    assert response.status_code == 401, response.text
    assert response.json() == {"status": "rejected", "reason": "signature does not match"}


def test_leading_zero_timestamp_signed_as_svix_signs_is_accepted(service: ServiceProcess) -> None:
    """The same header with svix's own signature: svix accepts it, and so does the service."""
    now = datetime.now(UTC)
    headers = {
        "svix-id": "msg_zero_svix",
        "svix-timestamp": "0" + str(int(now.timestamp())),
        "svix-signature": Webhook(SECRET).sign("msg_zero_svix", now, BODY.decode()),
    }
    response = post(service, headers)
    assert response.status_code == 200, response.text
    assert response.headers["autoreply-outcome"] == "ignored"


def _mistyped(secret: str, char: str) -> str:
    """``secret`` with one base64 character replaced by ``char``."""
    return secret[:12] + char + secret[13:]


BAD_SECRETS = [
    ("one byte", "whsec_AA", "too short"),
    ("15 bytes", "whsec_" + base64.b64encode(b"x" * 15).decode(), "too short"),
    ("truncated copy", SECRET[:26], "too short"),
    ("mistyped -", _mistyped(SECRET, "-"), "not base64"),
    ("url-safe _", _mistyped(SECRET, "_"), "not base64"),
    ("space inside", _mistyped(SECRET, " "), "not base64"),
    ("padding wrong", SECRET + "=", "padding"),
    ("second of two", f"{SECRET},whsec_eHh4", "secret 2 of 2 is too short"),
]


@pytest.mark.parametrize(
    ("name", "secret", "problem"), BAD_SECRETS, ids=[name for name, _, _ in BAD_SECRETS]
)
def test_serve_refuses_a_weak_or_mistyped_secret(
    tmp_path: Path, name: str, secret: str, problem: str
) -> None:
    """Exit code 2 and one line naming AUTOREPLY_WEBHOOK_SECRET, never the secret."""
    env = {
        "AGENTMAIL_API_KEY": "am_test",
        "AUTOREPLY_WEBHOOK_SECRET": secret,
        "AUTOREPLY_DATABASE_URL": f"sqlite:///{tmp_path / 'autoreply.db'}",
    }
    command = ("serve", "--host", "127.0.0.1", "--port", str(free_port()))
    try:
        result = run_autoreply(*command, env=env, cwd=tmp_path, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"autoreply serve started with the secret ({name})")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "AUTOREPLY_WEBHOOK_SECRET: " in lines[0], lines[0]
    assert problem in lines[0]
    assert "Traceback" not in result.stderr
    for part in secret.split(","):
        assert part.removeprefix("whsec_") not in result.stderr


def test_secrets_as_issued_are_accepted() -> None:
    """What the sandbox issues (as Svix does: 24 bytes) and 32-byte keys, padded or not."""
    for secret in (
        webhook_secret(),
        SECRET,
        "whsec_" + base64.b64encode(b"k" * 32).decode(),
        "whsec_" + base64.b64encode(b"k" * 32).decode().rstrip("="),
        "whsec_" + base64.b64encode(b"k" * 16).decode(),
    ):
        settings = Settings.from_environ(
            {"AGENTMAIL_API_KEY": "k", "AUTOREPLY_WEBHOOK_SECRET": f" {secret} ,{SECRET}"},
            dotenv=None,
        )
        assert settings.webhook_secrets == (secret, SECRET)


REGISTERED = [
    ("one byte", "whsec_AA", "too short"),
    ("mistyped", _mistyped(SECRET, "-"), "not base64"),
]


@pytest.mark.parametrize(
    ("name", "weak", "problem"), REGISTERED, ids=[name for name, _, _ in REGISTERED]
)
def test_registered_webhook_with_a_refused_secret_is_never_served(
    sandbox: Any,
    deployment: Deployment,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    weak: str,
    problem: str,
) -> None:
    """AgentMail hands back a weak secret: unready, and deliveries get a 503 saying why."""
    monkeypatch.setattr(sandbox_webhooks, "webhook_secret", lambda: weak)
    service = deployment.start(wait_ready=False)

    def readyz_names_the_secret() -> bool:
        return "AUTOREPLY_WEBHOOK_SECRET" in httpx.get(service.url + "/readyz").text

    deployment.wait_until(readyz_names_the_secret, timeout=30, what=f"/readyz to refuse {name}")
    ready = httpx.get(service.url + "/readyz")
    assert ready.status_code == 503
    [reason] = [r for r in ready.json()["reasons"] if "AUTOREPLY_WEBHOOK_SECRET" in r]
    assert problem in reason

    now = datetime.now(UTC)
    headers = {
        "svix-id": "msg_weak",
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": Webhook(weak).sign("msg_weak", now, BODY.decode()),
    }
    response = post(service, headers)
    assert response.status_code == 503, response.text
    assert response.json()["reason"] == reason
    assert httpx.get(service.url + "/healthz").status_code == 200

    log = service.log()
    assert "webhook_secret_refused" in log
    assert weak.removeprefix("whsec_") not in log
