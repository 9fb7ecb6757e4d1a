"""Every setting of the service, read once from the environment (and ``.env``).

One frozen ``Settings`` is built at startup; nothing else reads ``os.environ``. A bad
or missing value raises ``SettingsError`` naming the variable, which the CLI prints as
one line before exiting, so a misconfigured container fails fast and says why.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from dotenv import dotenv_values

from handlers import schedule
from handlers.modes import ReplyMode, parse_mode
from handlers.policy import parse_duration, parse_patterns
from handlers.secrets import secret_key
from handlers.suppression import DEFAULT_TRANSIENT_LIMIT

T = TypeVar("T")

PRODUCTION_API = "https://api.agentmail.to"
WEBHOOK_PATH = "/webhooks/agentmail"


class SettingsError(Exception):
    """A setting is missing or invalid; ``str()`` names the variable and the problem."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


class Secret(str):
    """A string that never shows itself in ``repr``, so it cannot leak into logs."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('**********')"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The service's configuration. See the README's settings table for each one."""

    api_key: Secret
    base_url: str = PRODUCTION_API
    public_url: str | None = None
    webhook_client_id: str = "autoreply"
    webhook_secrets: tuple[Secret, ...] = ()
    inbox_ids: tuple[str, ...] = ()
    database_url: str = "sqlite:///autoreply.db"
    worker_concurrency: int = 32
    dry_run: bool = False
    log_format: str = "console"
    log_level: str = "INFO"
    unreplied_label: str = "unreplied"
    replied_label: str = "replied"
    job_lease_seconds: float = 120.0
    api_timeout_seconds: float = 20.0
    shutdown_grace_seconds: float = 20.0
    own_addresses: tuple[str, ...] = field(default=())
    templates_dir: Path | None = None
    timezone: str = "UTC"
    require_recipient: bool = True
    thread_cap: int = 1
    sender_cooldown: timedelta = timedelta(days=1)
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    retention: timedelta = timedelta(days=7)
    #: ``AUTOREPLY_MAX_AGE``: older messages are skipped ``too_old`` (0: no limit).
    max_age: timedelta = timedelta(days=3)
    #: ``AUTOREPLY_SWEEP_INTERVAL``: how often the catch-up sweep runs (0: never); see
    #: ``service.sweep``.
    sweep_interval: timedelta = timedelta(minutes=10)
    #: ``AUTOREPLY_SWEEP_LEASE_SECONDS``: how long a replica that died mid-sweep keeps the
    #: sweep before another takes it over; see ``service.sweep``.
    sweep_lease_seconds: float = 120.0
    #: ``AUTOREPLY_SUPPRESSION``: subscribe to bounces and complaints and let those about
    #: our replies add the recipient to the suppression list (the list itself, with its
    #: manual entries, applies either way).
    suppression: bool = True
    #: ``AUTOREPLY_REPLY_DELAY``: the grace period before a message's reply is decided
    #: (0: answer at once); a rule's ``delay`` wins over it. See ``handlers.grace``.
    reply_delay: timedelta = timedelta(0)
    #: ``AUTOREPLY_TRANSIENT_BOUNCE_LIMIT``: transient bounces of distinct replies to one
    #: address (within ``handlers.suppression.TRANSIENT_WINDOW``) that suppress it; 0: a
    #: transient bounce never does.
    transient_bounce_limit: int = DEFAULT_TRANSIENT_LIMIT
    #: ``AUTOREPLY_MODE``: how replies go out unless a rule says otherwise (``send`` at
    #: once, or ``draft`` for review); see ``handlers.modes``.
    mode: ReplyMode = ReplyMode.SEND
    #: ``AUTOREPLY_DRAFT_LABEL``: the label on a message whose reply draft awaits review.
    draft_label: str = "autoreply-draft"
    #: ``AUTOREPLY_DRAFT_CHECK_INTERVAL``: how often a waiting draft is looked at, to
    #: notice one deleted without sending (or a ``message.sent`` event that was lost).
    draft_check_interval: timedelta = timedelta(minutes=10)

    @property
    def webhook_url(self) -> str | None:
        """Where AgentMail should deliver: the public URL plus the webhook path."""
        if self.public_url is None:
            return None
        return self.public_url.rstrip("/") + WEBHOOK_PATH

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, dotenv: Path | None = Path(".env")
    ) -> Settings:
        """Build from ``environ`` (default ``os.environ``) over an optional ``.env`` file."""
        return _parse(_Reader(_environment(environ, dotenv)))


def mode_setting(
    environ: Mapping[str, str] | None = None, *, dotenv: Path | None = Path(".env")
) -> ReplyMode:
    """``AUTOREPLY_MODE`` alone, read and checked as ``Settings`` reads it: for
    ``autoreply templates preview``, which shows the mode of a reply."""
    return _Reader(_environment(environ, dotenv)).get("AUTOREPLY_MODE", parse_mode, ReplyMode.SEND)


def template_settings(
    environ: Mapping[str, str] | None = None, *, dotenv: Path | None = Path(".env")
) -> tuple[Path | None, str]:
    """``AUTOREPLY_TEMPLATES_DIR`` and ``AUTOREPLY_TIMEZONE`` alone, read and checked as
    ``Settings`` reads them: for ``autoreply templates``, which needs no API key."""
    r = _Reader(_environment(environ, dotenv))
    return r.get("AUTOREPLY_TEMPLATES_DIR", _directory, None), r.get(
        "AUTOREPLY_TIMEZONE", _timezone, "UTC"
    )


def reply_delay_setting(
    environ: Mapping[str, str] | None = None, *, dotenv: Path | None = Path(".env")
) -> timedelta:
    """``AUTOREPLY_REPLY_DELAY`` alone, read and checked as ``Settings`` reads it: for
    ``autoreply templates preview``, which shows a message's delay without an API key."""
    return _reply_delay(_Reader(_environment(environ, dotenv)))


def _reply_delay(r: _Reader) -> timedelta:
    """``AUTOREPLY_REPLY_DELAY``, shorter than ``AUTOREPLY_MAX_AGE`` (when that is set):
    a message is judged for its age when its delay is over, so a delay as long as the
    max age would skip every message ``too_old``."""
    delay = r.get("AUTOREPLY_REPLY_DELAY", parse_duration, timedelta(0))
    max_age = r.get("AUTOREPLY_MAX_AGE", parse_duration, timedelta(days=3))
    if delay and max_age and delay >= max_age:
        raise SettingsError(
            "AUTOREPLY_REPLY_DELAY",
            f"must be shorter than AUTOREPLY_MAX_AGE ({r.raw('AUTOREPLY_MAX_AGE') or '3d'}): "
            "a message is judged for its age when the delay is over, so every delayed "
            "message would be skipped too_old",
        )
    return delay


def _environment(environ: Mapping[str, str] | None, dotenv: Path | None) -> dict[str, str]:
    """The variables: ``environ`` (default ``os.environ``) over the ``.env`` file's."""
    env: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        env.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    return env


class _Reader:
    """Reads and casts variables, raising ``SettingsError`` with the variable's name."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def get(self, name: str, cast: Callable[[str], T], default: T) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return cast(value)
        except ValueError as exc:
            raise SettingsError(name, str(exc)) from None

    def required(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            raise SettingsError(name, "is required")
        return value


def _parse(r: _Reader) -> Settings:
    public_url = r.get("AUTOREPLY_PUBLIC_URL", _http_url, None)
    secrets: tuple[Secret, ...] = r.get("AUTOREPLY_WEBHOOK_SECRET", _secrets, ())
    if public_url is None and not secrets:
        raise SettingsError(
            "AUTOREPLY_WEBHOOK_SECRET",
            "is required when AUTOREPLY_PUBLIC_URL is unset (nothing registers the webhook)",
        )
    return Settings(
        api_key=Secret(r.required("AGENTMAIL_API_KEY")),
        base_url=r.get("AGENTMAIL_BASE_URL", _origin, PRODUCTION_API),
        public_url=public_url,
        webhook_client_id=r.get("AUTOREPLY_WEBHOOK_CLIENT_ID", _client_id, "autoreply"),
        webhook_secrets=secrets,
        inbox_ids=r.get("AUTOREPLY_INBOX_IDS", _comma_list, ()),
        database_url=r.get("AUTOREPLY_DATABASE_URL", _database_url, "sqlite:///autoreply.db"),
        worker_concurrency=r.get("AUTOREPLY_WORKER_CONCURRENCY", _int_between(1, 1000), 32),
        dry_run=r.get("AUTOREPLY_DRY_RUN", _bool, False),
        log_format=r.get("AUTOREPLY_LOG_FORMAT", _choice("json", "console"), _default_format()),
        log_level=r.get(
            "AUTOREPLY_LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True), "INFO"
        ),
        unreplied_label=r.get("AUTOREPLY_UNREPLIED_LABEL", _label, "unreplied"),
        replied_label=r.get("AUTOREPLY_REPLIED_LABEL", _label, "replied"),
        job_lease_seconds=r.get("AUTOREPLY_JOB_LEASE_SECONDS", _seconds(5, 3600), 120.0),
        api_timeout_seconds=r.get("AUTOREPLY_API_TIMEOUT_SECONDS", _seconds(1, 300), 20.0),
        shutdown_grace_seconds=r.get("AUTOREPLY_SHUTDOWN_GRACE_SECONDS", _seconds(0, 600), 20.0),
        own_addresses=r.get("AUTOREPLY_OWN_ADDRESSES", _addresses, ()),
        templates_dir=r.get("AUTOREPLY_TEMPLATES_DIR", _directory, None),
        timezone=r.get("AUTOREPLY_TIMEZONE", _timezone, "UTC"),
        require_recipient=r.get("AUTOREPLY_REQUIRE_RECIPIENT", _bool, True),
        thread_cap=r.get("AUTOREPLY_THREAD_CAP", _int_between(0, 1000), 1),
        sender_cooldown=r.get("AUTOREPLY_SENDER_COOLDOWN", parse_duration, timedelta(days=1)),
        allow=r.get("AUTOREPLY_ALLOW", parse_patterns, ()),
        deny=r.get("AUTOREPLY_DENY", parse_patterns, ()),
        retention=r.get("AUTOREPLY_RETENTION", parse_duration, timedelta(days=7)),
        max_age=r.get("AUTOREPLY_MAX_AGE", parse_duration, timedelta(days=3)),
        sweep_interval=r.get("AUTOREPLY_SWEEP_INTERVAL", _sweep_interval, timedelta(minutes=10)),
        sweep_lease_seconds=r.get("AUTOREPLY_SWEEP_LEASE_SECONDS", _seconds(10, 3600), 120.0),
        suppression=r.get("AUTOREPLY_SUPPRESSION", _bool, True),
        reply_delay=_reply_delay(r),
        transient_bounce_limit=r.get(
            "AUTOREPLY_TRANSIENT_BOUNCE_LIMIT", _int_between(0, 100), DEFAULT_TRANSIENT_LIMIT
        ),
        mode=r.get("AUTOREPLY_MODE", parse_mode, ReplyMode.SEND),
        draft_label=r.get("AUTOREPLY_DRAFT_LABEL", _label, "autoreply-draft"),
        draft_check_interval=r.get(
            "AUTOREPLY_DRAFT_CHECK_INTERVAL", _draft_check_interval, timedelta(minutes=10)
        ),
    )


#: The shortest sweep interval. Each sweep lists every inbox in scope at AgentMail (from
#: its mark minus ten minutes), so a short interval spends API calls, and the rate limit,
#: mostly on finding nothing; ten seconds is the floor (tests, a demo), not a suggestion.
MIN_SWEEP_INTERVAL = timedelta(seconds=10)


def _sweep_interval(value: str) -> timedelta:
    """A duration as ``parse_duration`` reads it: 0 (no sweep) or at least 10 seconds."""
    interval = parse_duration(value)
    if interval and interval < MIN_SWEEP_INTERVAL:
        raise ValueError(f"must be 0 (no sweep) or at least 10s, got {value!r}")
    return interval


#: The shortest draft check interval: each check of a waiting draft is one API call.
MIN_DRAFT_CHECK_INTERVAL = timedelta(seconds=1)


def _draft_check_interval(value: str) -> timedelta:
    """A duration of at least one second (each check is an API call per waiting draft)."""
    interval = parse_duration(value)
    if interval < MIN_DRAFT_CHECK_INTERVAL:
        raise ValueError(f"must be at least 1s, got {value!r}")
    return interval


def _default_format() -> str:
    return "console" if os.isatty(2) else "json"


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _origin(value: str) -> str:
    url = _http_url(value)
    if urlsplit(url).path not in ("", "/"):
        raise ValueError("must be an origin such as https://api.agentmail.to (the SDK adds /v0)")
    return url


_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _client_id(value: str) -> str:
    if len(value) > 200 or not set(value) <= _KEY_CHARS:
        raise ValueError("must be 1-200 characters of A-Z a-z 0-9 - . _ ~")
    return value


def _secrets(value: str) -> tuple[Secret, ...]:
    """Comma-separated ``whsec_`` secrets, each decoded strictly (``secret_key``): a
    mistyped, truncated or placeholder secret stops the service at startup instead of
    verifying deliveries with whatever lenient base64 made of it."""
    secrets = tuple(Secret(s.strip()) for s in value.split(",") if s.strip())
    for number, secret in enumerate(secrets, 1):
        which = f"secret {number} of {len(secrets)}" if len(secrets) > 1 else "the secret"
        if not secret.startswith("whsec_"):
            raise ValueError(f"{which} does not start with whsec_ (comma-separate several)")
        try:
            secret_key(secret)
        except ValueError as exc:
            raise ValueError(f"{which} {exc}") from None
    return secrets


def _comma_list(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


def _addresses(value: str) -> tuple[str, ...]:
    items = _comma_list(value.lower())
    for item in items:
        if "@" not in item:
            raise ValueError(f"{item!r} is not an email address")
    return items


#: Query parameters of a PostgreSQL URL that libpq reads as secrets.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def redact_url(url: str) -> str:
    """The URL as logs and ``autoreply status`` may show it: any password hidden, whether
    in the user part (``postgresql://app:***@db/autoreply``) or, as libpq also accepts
    it, in the query (``?password=***``). Everything else is shown as written."""
    head, mark, query = url.partition("?")
    parts = urlsplit(head)
    if parts.password is not None:
        after = head[len(parts.scheme) + 3 + len(parts.netloc) :]
        host = parts.netloc.rsplit("@", 1)[1]
        head = f"{parts.scheme}://{parts.username or ''}:***@{host}{after}"
    pairs = (pair.partition("=") for pair in query.split("&"))
    query = "&".join(
        f"{name}=***" if name.lower() in _SECRET_PARAMETERS else f"{name}{sep}{value}"
        for name, sep, value in pairs
    )
    return head + mark + query


def _database_url(value: str) -> str:
    if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        path = value.removeprefix("sqlite:///")
        if any(c in path for c in "?#\x00"):
            raise ValueError("a sqlite:/// URL takes a file path only, without ?, # or NUL")
        if path == ":memory:":
            raise ValueError("an in-memory database would lose acknowledged deliveries")
        if Path(path).is_dir():
            raise ValueError(f"{path} is a directory; name the database file in it")
        return value
    if value.startswith(("postgresql://", "postgres://")):
        return value
    raise ValueError("must be sqlite:///PATH or postgresql://...")


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {value!r}")


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def cast(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"must be a whole number, got {value!r}") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number

    return cast


def _seconds(low: float, high: float) -> Callable[[str], float]:
    def cast(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"must be a number of seconds, got {value!r}") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low:g} and {high:g} seconds, got {value}")
        return number

    return cast


def _choice(*choices: str, upper: bool = False) -> Callable[[str], str]:
    def cast(value: str) -> str:
        normal = value.upper() if upper else value.lower()
        if normal not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return normal

    return cast


def _directory(value: str) -> Path:
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    path = Path(value)
    if not path.is_dir():
        raise ValueError(f"{value} is not a directory")
    return path


def _timezone(value: str) -> str:
    schedule.zone(value)  # ValueError: unknown time zone ...
    return value


def _label(value: str) -> str:
    if any(c.isspace() for c in value) or len(value) > 100:
        raise ValueError(f"must be a label without spaces, got {value!r}")
    return value
