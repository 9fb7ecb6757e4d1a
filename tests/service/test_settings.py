"""Configuration: defaults that work, and one clear line naming the variable otherwise."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from service.runtime import policy_config
from service.settings import Secret, Settings, SettingsError, redact_url
from tests.support.service_process import run_autoreply

BASE = {"AGENTMAIL_API_KEY": "am_test", "AUTOREPLY_WEBHOOK_SECRET": "whsec_" + "c2VjcmV0" * 4}


def test_defaults() -> None:
    """Only the API key and a way to verify are required; the rest has defaults."""
    settings = Settings.from_environ(BASE, dotenv=None)
    assert settings.base_url == "https://api.agentmail.to"
    assert settings.database_url == "sqlite:///autoreply.db"
    assert settings.webhook_client_id == "autoreply"
    assert settings.unreplied_label == "unreplied"
    assert settings.replied_label == "replied"
    assert settings.sender_cooldown == timedelta(days=1)
    assert settings.max_age == timedelta(days=3)
    assert settings.sweep_interval == timedelta(minutes=10)
    assert settings.sweep_lease_seconds == 120.0
    assert settings.webhook_url is None
    assert not settings.dry_run
    assert settings.suppression
    assert settings.transient_bounce_limit == 3


def test_public_url_gives_the_webhook_url_and_makes_secret_optional() -> None:
    """With a public URL the service registers itself, so no secret is needed."""
    settings = Settings.from_environ(
        {"AGENTMAIL_API_KEY": "k", "AUTOREPLY_PUBLIC_URL": "https://bot.example.com/"}, dotenv=None
    )
    assert settings.webhook_url == "https://bot.example.com/webhooks/agentmail"
    assert settings.webhook_secrets == ()


def test_secrets_never_show_in_repr() -> None:
    """The API key and webhook secrets cannot leak through a logged settings object."""
    settings = Settings.from_environ(BASE, dotenv=None)
    assert isinstance(settings.api_key, Secret)
    assert "am_test" not in repr(settings)
    assert "whsec_" not in repr(settings)


def test_dotenv_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    """A .env file supplies settings; the real environment overrides it."""
    dotenv = tmp_path / ".env"
    dotenv.write_text("AGENTMAIL_API_KEY=from_file\nAUTOREPLY_WORKER_CONCURRENCY=3\n")
    settings = Settings.from_environ(
        {"AUTOREPLY_WEBHOOK_SECRET": "whsec_" + "eHh4" * 8, "AUTOREPLY_WORKER_CONCURRENCY": "5"},
        dotenv=dotenv,
    )
    assert settings.api_key == "from_file"
    assert settings.worker_concurrency == 5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AGENTMAIL_API_KEY", ""),
        ("AGENTMAIL_BASE_URL", "api.agentmail.to"),
        ("AGENTMAIL_BASE_URL", "https://api.agentmail.to/v0"),
        ("AUTOREPLY_PUBLIC_URL", "ftp://x"),
        ("AUTOREPLY_WEBHOOK_SECRET", "not-a-secret"),
        ("AUTOREPLY_WEBHOOK_CLIENT_ID", "has@at"),
        ("AUTOREPLY_DATABASE_URL", "mysql://x"),
        ("AUTOREPLY_DATABASE_URL", "sqlite:///autoreply.db?mode=memory"),
        ("AUTOREPLY_DATABASE_URL", "sqlite:///autoreply.db#x"),
        ("AUTOREPLY_DATABASE_URL", "sqlite:///auto\x00reply.db"),
        ("AUTOREPLY_DATABASE_URL", "sqlite:///:memory:"),
        ("AUTOREPLY_DATABASE_URL", "sqlite:////tmp"),
        ("AUTOREPLY_TEMPLATES_DIR", "/tmp\x00/x"),
        ("AUTOREPLY_WORKER_CONCURRENCY", "0"),
        ("AUTOREPLY_WORKER_CONCURRENCY", "many"),
        ("AUTOREPLY_DRY_RUN", "maybe"),
        ("AUTOREPLY_LOG_FORMAT", "xml"),
        ("AUTOREPLY_LOG_LEVEL", "LOUD"),
        ("AUTOREPLY_SENDER_COOLDOWN", "a while"),
        ("AUTOREPLY_MAX_AGE", "3"),
        ("AUTOREPLY_MAX_AGE", "-1d"),
        ("AUTOREPLY_REPLY_DELAY", "5"),
        ("AUTOREPLY_REPLY_DELAY", "five minutes"),
        ("AUTOREPLY_REPLY_DELAY", "-1m"),
        ("AUTOREPLY_REPLY_DELAY", "3d"),
        ("AUTOREPLY_SWEEP_INTERVAL", "soon"),
        ("AUTOREPLY_SWEEP_INTERVAL", "9s"),
        ("AUTOREPLY_SWEEP_LEASE_SECONDS", "9"),
        ("AUTOREPLY_SWEEP_LEASE_SECONDS", "a minute"),
        ("AUTOREPLY_TIMEZONE", "Mars/Olympus"),
        ("AUTOREPLY_TIMEZONE", "Europe"),  # a folder of the zone data, not a zone
        ("AUTOREPLY_TIMEZONE", "../../etc/passwd"),
        ("AUTOREPLY_TIMEZONE", "x" * 300),
        ("AUTOREPLY_TEMPLATES_DIR", "/nonexistent/templates"),
        ("AUTOREPLY_OWN_ADDRESSES", "not-an-address"),
        ("AUTOREPLY_SUPPRESSION", "sometimes"),
        ("AUTOREPLY_TRANSIENT_BOUNCE_LIMIT", "-1"),
        ("AUTOREPLY_TRANSIENT_BOUNCE_LIMIT", "101"),
        ("AUTOREPLY_TRANSIENT_BOUNCE_LIMIT", "three"),
        ("AUTOREPLY_MODE", "later"),
        ("AUTOREPLY_DRAFT_LABEL", "awaits review"),
        ("AUTOREPLY_DRAFT_CHECK_INTERVAL", "0"),
        ("AUTOREPLY_DRAFT_CHECK_INTERVAL", "soon"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    """Every invalid setting is reported with its variable's name."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({**BASE, name: value}, dotenv=None)
    assert caught.value.name == name


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("AUTOREPLY_MAX_AGE", "12h", "max_age", timedelta(hours=12)),
        ("AUTOREPLY_MAX_AGE", "0", "max_age", timedelta(0)),
        ("AUTOREPLY_REPLY_DELAY", "0", "reply_delay", timedelta(0)),
        ("AUTOREPLY_REPLY_DELAY", "90s", "reply_delay", timedelta(seconds=90)),
        ("AUTOREPLY_REPLY_DELAY", "10m", "reply_delay", timedelta(minutes=10)),
        ("AUTOREPLY_SWEEP_INTERVAL", "1m", "sweep_interval", timedelta(minutes=1)),
        ("AUTOREPLY_SWEEP_INTERVAL", "2h", "sweep_interval", timedelta(hours=2)),
        ("AUTOREPLY_SWEEP_INTERVAL", "0", "sweep_interval", timedelta(0)),
        ("AUTOREPLY_SWEEP_INTERVAL", "10s", "sweep_interval", timedelta(seconds=10)),
        ("AUTOREPLY_SWEEP_LEASE_SECONDS", "10", "sweep_lease_seconds", 10.0),
        ("AUTOREPLY_SWEEP_LEASE_SECONDS", "300", "sweep_lease_seconds", 300.0),
        ("AUTOREPLY_MODE", "DRAFT", "mode", "draft"),
        ("AUTOREPLY_MODE", "send", "mode", "send"),
        ("AUTOREPLY_DRAFT_LABEL", "to-review", "draft_label", "to-review"),
        ("AUTOREPLY_DRAFT_CHECK_INTERVAL", "90s", "draft_check_interval", timedelta(seconds=90)),
    ],
)
def test_durations_of_the_sweep_and_the_max_age(
    name: str, value: str, field: str, expected: timedelta | float
) -> None:
    """Durations are read like the cooldown's; 0 turns the check or the sweep off."""
    settings = Settings.from_environ({**BASE, name: value}, dotenv=None)
    assert getattr(settings, field) == expected


def test_the_max_age_reaches_the_policy() -> None:
    """The worker's policy skips by the configured age (0: no limit)."""
    settings = Settings.from_environ({**BASE, "AUTOREPLY_MAX_AGE": "0"}, dotenv=None)
    assert policy_config(settings).max_age == timedelta(0)
    assert policy_config(Settings.from_environ(BASE, dotenv=None)).max_age == timedelta(days=3)


def test_the_reply_delay_must_be_shorter_than_the_max_age() -> None:
    """A delay as long as the max age would skip every message too_old: refused, with
    both settings named; without a max age any delay goes."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ(
            {**BASE, "AUTOREPLY_REPLY_DELAY": "2h", "AUTOREPLY_MAX_AGE": "2h"}, dotenv=None
        )
    assert caught.value.name == "AUTOREPLY_REPLY_DELAY"
    assert "AUTOREPLY_MAX_AGE (2h)" in str(caught.value)
    settings = Settings.from_environ(
        {**BASE, "AUTOREPLY_REPLY_DELAY": "1w", "AUTOREPLY_MAX_AGE": "0"}, dotenv=None
    )
    assert settings.reply_delay == timedelta(weeks=1)
    assert Settings.from_environ(BASE, dotenv=None).reply_delay == timedelta(0)


def test_secret_required_without_public_url() -> None:
    """Without registration there is no secret to verify with: refuse to start."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({"AGENTMAIL_API_KEY": "k"}, dotenv=None)
    assert caught.value.name == "AUTOREPLY_WEBHOOK_SECRET"


@pytest.mark.slow
def test_serve_stops_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    """``autoreply serve`` with a bad setting exits 2 with one line, no traceback."""
    result = run_autoreply(
        "serve", env={**BASE, "AUTOREPLY_WORKER_CONCURRENCY": "-1"}, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "AUTOREPLY_WORKER_CONCURRENCY" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_serve_refuses_a_rule_delay_as_long_as_the_max_age(tmp_path: Path) -> None:
    """A rule's delay must be shorter than AUTOREPLY_MAX_AGE too: one line, file and line."""
    (tmp_path / "rules.toml").write_text(
        '[[rule]]\nname = "slow"\ntemplate = "default"\ndelay = "1d"\n'
    )
    env = {**BASE, "AUTOREPLY_TEMPLATES_DIR": str(tmp_path), "AUTOREPLY_MAX_AGE": "1d"}
    result = run_autoreply("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{tmp_path}/rules.toml:1: rule 'slow': delay 1d is not shorter than" in lines[0]
    assert "AUTOREPLY_MAX_AGE (1d)" in lines[0]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///data/autoreply.db", "sqlite:///data/autoreply.db"),
        ("postgresql://db.internal/autoreply", "postgresql://db.internal/autoreply"),
        ("postgresql://app@db/autoreply", "postgresql://app@db/autoreply"),
        ("postgresql://app:s3cret@db:5432/autoreply", "postgresql://app:***@db:5432/autoreply"),
        ("postgres://:s3cret@db/autoreply", "postgres://:***@db/autoreply"),
        ("postgresql://app:p@ss@db/x", "postgresql://app:***@db/x"),
        (
            "postgresql://db/autoreply?sslmode=require&password=s3cret",
            "postgresql://db/autoreply?sslmode=require&password=***",
        ),
        (
            "postgresql://db/x?PASSWORD=s3cret&sslpassword=k3y",
            "postgresql://db/x?PASSWORD=***&sslpassword=***",
        ),
    ],
)
def test_database_urls_are_shown_without_their_passwords(url: str, shown: str) -> None:
    """Logs and ``autoreply status`` show the URL through this one redactor."""
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)
