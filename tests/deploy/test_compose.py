"""deploy/compose.yaml and deploy/.env.example.

The compose file is validated against the Compose Specification's JSON schema (bundled
with ``check-jsonschema``, offline); the rest checks what users rely on: the database
stays in a volume, the service restarts and is health-checked on a path that answers,
SIGKILL waits for the drain, the ``postgres`` profile waits for a healthy database,
and ``.env.example`` lists every setting with the value the service would use anyway.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values

from service.server import uvicorn_config
from service.settings import Settings
from tests.deploy.conftest import DEPLOY, known_settings, load_yaml
from tests.support.service_process import ServiceProcess

COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
#: Variables of .env.example that only compose reads (interpolated into compose.yaml).
COMPOSE_ONLY = {"POSTGRES_PASSWORD"}


def compose() -> dict[str, Any]:
    [doc] = load_yaml(COMPOSE)
    return doc


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return float(match[1]) * (60 if match[2] == "m" else 1)


@pytest.mark.slow
def test_compose_file_follows_the_compose_specification() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sqlite_service_keeps_its_database_in_a_volume() -> None:
    autoreply = service("autoreply")
    assert "profiles" not in autoreply, "the SQLite service is the default one"
    url = autoreply["environment"]["AUTOREPLY_DATABASE_URL"]
    assert url.startswith("sqlite:////data/")
    volume, _, target = autoreply["volumes"][0].partition(":")
    assert target == "/data"
    assert volume in compose()["volumes"]


@pytest.mark.parametrize("name", ["autoreply", "autoreply-postgres"])
def test_services_restart_and_wait_for_the_drain(name: str) -> None:
    spec = service(name)
    assert spec["restart"] in ("unless-stopped", "always")
    drain = Settings.shutdown_grace_seconds
    close = uvicorn_config(None, host="0.0.0.0", port=0).timeout_graceful_shutdown or 0
    assert seconds(spec["stop_grace_period"]) > drain + close
    assert spec["env_file"] == ".env"
    assert set(spec["environment"]) <= known_settings()


def test_healthcheck_answers_on_a_real_service(running_service: ServiceProcess) -> None:
    """The compose healthcheck's command, run against a live service, succeeds."""
    test = service("autoreply")["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert test[1] == "python3"
    argv = [sys.executable, *test[2:]]
    published = service("autoreply")["ports"][0].rsplit(":", 1)[1]
    live = [arg.replace(f":{published}/", f":{running_service.port}/") for arg in argv]
    assert live != argv, "the healthcheck does not probe the container port"
    assert "/healthz" in " ".join(live)
    subprocess.run(live, check=True, timeout=30)


def test_postgres_profile_waits_for_a_healthy_database() -> None:
    postgres = service("postgres")
    assert postgres["profiles"] == ["postgres"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    volume, _, target = postgres["volumes"][0].partition(":")
    assert target == "/var/lib/postgresql/data"
    assert volume in compose()["volumes"]
    autoreply = service("autoreply-postgres")
    assert autoreply["profiles"] == ["postgres"]
    assert autoreply["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    url = autoreply["environment"]["AUTOREPLY_DATABASE_URL"]
    assert url.startswith("postgresql://autoreply:")
    assert url.endswith("@postgres:5432/autoreply")


def test_env_example_lists_every_setting() -> None:
    listed = set(dotenv_values(ENV_EXAMPLE))
    assert listed - COMPOSE_ONLY == known_settings()


def test_env_example_values_are_the_defaults() -> None:
    """Copying .env.example changes nothing but the documented few."""
    required = {"AGENTMAIL_API_KEY": "am_test", "AUTOREPLY_PUBLIC_URL": "https://a.example"}
    example = {k: v or "" for k, v in dotenv_values(ENV_EXAMPLE).items()}
    from_example = Settings.from_environ({**example, **required}, dotenv=None)
    defaults = Settings.from_environ(required, dotenv=None)
    differ = {
        field.name
        for field in dataclasses.fields(Settings)
        if getattr(from_example, field.name) != getattr(defaults, field.name)
    }
    # The image's database path, and JSON logs (the service picks JSON off a terminal).
    assert differ <= {"database_url", "log_format"}
    assert from_example.database_url == "sqlite:////data/autoreply.db"
    assert from_example.log_format == "json"


def test_env_example_holds_no_secret() -> None:
    values = dotenv_values(ENV_EXAMPLE)
    assert values["AGENTMAIL_API_KEY"] == "am_REPLACE_ME"
    assert not values["AUTOREPLY_WEBHOOK_SECRET"]
    assert values["POSTGRES_PASSWORD"] == "REPLACE_ME"
