"""Request parsing with AgentMail-style field errors.

:class:`Body` reads a JSON object field by field and collects every problem, so one 400
answer lists all of them (``errors: [{path, message}]``) and nothing is changed.
Query helpers accept the encodings clients really send: the SDK JSON-encodes list
parameters (``labels=["a","b"]``), other clients repeat them or join them with commas.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from service.sandbox.errors import FieldError, invalid, validation_error

# Idempotency-Key and client_id alphabet: unreserved URI characters, 1-256 of them.
TOKEN_RE = re.compile(r"^[A-Za-z0-9\-._~]{1,256}$")
_BARE_ADDRESS = re.compile(r"^[^\s<>@\",;]+@[^\s<>@\",;]+\.[^\s<>@\",;]+$")
_NAMED_ADDRESS = re.compile(r"^\s*(?P<name>.*?)\s*<(?P<addr>[^<>]+)>\s*$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def email_of(address: str) -> str | None:
    """The bare, lower-cased e-mail in ``user@d`` or ``Name <user@d>``; None if malformed."""
    candidate = address.strip()
    named = _NAMED_ADDRESS.match(candidate)
    if named:
        candidate = named.group("addr").strip()
    if _BARE_ADDRESS.match(candidate):
        return candidate.lower()
    return None


class Body:
    """A JSON request object read field by field; call :meth:`finish` to raise collected errors."""

    def __init__(self, data: Any, prefix: str = "") -> None:
        self.errors: list[FieldError] = []
        self._prefix = prefix
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.errors.append(FieldError(prefix or "body", "must be a JSON object"))
            data = {}
        self.data: dict[str, Any] = data

    def _path(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def error(self, key: str, message: str) -> None:
        """Record a problem with one field."""
        self.errors.append(FieldError(self._path(key), message))

    def present(self, key: str) -> bool:
        """Whether the field was sent with a non-null value (the SDK sends explicit nulls)."""
        return self.data.get(key) is not None

    def reject(self, *keys: str, reason: str = "is not accepted on this route") -> None:
        """Record an error for each of these fields that was sent."""
        for key in keys:
            if self.present(key):
                self.error(key, reason)

    def string(self, key: str, *, required: bool = False) -> str | None:
        """An optional (or required) string field."""
        value = self.data.get(key)
        if value is None:
            if required:
                self.error(key, "is required")
            return None
        if not isinstance(value, str):
            self.error(key, "must be a string")
            return None
        return value

    def boolean(self, key: str) -> bool | None:
        """An optional boolean field."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.error(key, "must be a boolean")
            return None
        return value

    def integer(self, key: str, *, minimum: int | None = None) -> int | None:
        """An optional integer field."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, "must be an integer")
            return None
        if minimum is not None and value < minimum:
            self.error(key, f"must be at least {minimum}")
            return None
        return value

    def number(self, key: str, *, minimum: float | None = None) -> float | None:
        """An optional number field."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, "must be a number")
            return None
        if minimum is not None and value < minimum:
            self.error(key, f"must be at least {minimum}")
            return None
        return float(value)

    def strings(self, key: str, *, max_items: int | None = None) -> list[str] | None:
        """An optional list of non-empty strings."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.error(key, "must be a list of non-empty strings")
            return None
        if max_items is not None and len(value) > max_items:
            self.error(key, f"must have at most {max_items} items")
            return None
        return list(value)

    def one_or_many(self, key: str) -> list[str] | None:
        """A field typed ``str | list[str]`` (labels to add/remove), as a list."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.error(key, "must be a non-empty string or a list of non-empty strings")
            return None
        return list(value)

    def addresses(self, key: str) -> list[str] | None:
        """An ``Addresses`` field (``str | list[str]``) of well-formed e-mail addresses."""
        values = self.one_or_many(key)
        if values is None:
            return None
        for index, value in enumerate(values):
            if email_of(value) is None:
                self.errors.append(
                    FieldError(f"{self._path(key)}[{index}]", f"invalid e-mail address {value!r}")
                )
        return values

    def string_map(self, key: str, *, header_names: bool = False) -> dict[str, str] | None:
        """An optional object of string values (message or webhook headers)."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.error(key, "must be an object of string values")
            return None
        if header_names:
            for name, header_value in value.items():
                if not HEADER_NAME_RE.match(name):
                    self.error(f"{key}.{name}", "is not a valid header name")
                elif "\r" in header_value or "\n" in header_value:
                    self.error(f"{key}.{name}", "header values may not contain line breaks")
        return dict(value)

    def token(self, key: str) -> str | None:
        """A ``client_id``: 1-256 of ``A-Za-z0-9-._~`` (so no ``@``)."""
        value = self.string(key)
        if value is not None and not TOKEN_RE.match(value):
            self.error(key, "must be 1-256 characters from A-Z a-z 0-9 - . _ ~")
            return None
        return value

    def finish(self) -> None:
        """Raise a 400 validation_error if any field was wrong."""
        if self.errors:
            raise validation_error(self.errors)


def parse_json_body(raw: bytes) -> Any:
    """Decode a request body; an empty body is an empty object, bad JSON a 400."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid("body", f"is not valid JSON: {exc}") from exc


def query_values(raw_values: Sequence[str], *, split_commas: bool) -> list[str]:
    """Flatten repeated, JSON-array (the SDK's form) and optionally comma-joined values."""
    result: list[str] = []
    for raw in raw_values:
        stripped = raw.strip()
        if stripped.startswith("["):
            try:
                decoded = json.loads(stripped)
            except json.JSONDecodeError:
                decoded = None
            if isinstance(decoded, list) and all(isinstance(v, str) for v in decoded):
                result.extend(decoded)
                continue
        if split_commas:
            result.extend(part.strip() for part in raw.split(",") if part.strip())
        elif raw:
            result.append(raw)
    return result


def query_bool(params: Mapping[str, str], name: str) -> bool | None:
    """``true``/``false`` (any case), also ``1``/``0``."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in {"true", "1"}:
        return True
    if lowered in {"false", "0"}:
        return False
    raise invalid(name, "must be true or false")


def query_int(params: Mapping[str, str], name: str, *, minimum: int = 1) -> int | None:
    """A positive integer query parameter."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise invalid(name, "must be an integer") from exc
    if value < minimum:
        raise invalid(name, f"must be at least {minimum}")
    return value


def parse_datetime(raw: str) -> datetime | None:
    """An ISO-8601 date-time (``Z`` allowed, naive means UTC); None if unparsable."""
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def query_datetime(params: Mapping[str, str], name: str) -> datetime | None:
    """An ISO-8601 date-time query parameter."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    moment = parse_datetime(raw)
    if moment is None:
        raise invalid(name, "must be an ISO-8601 date-time")
    return moment


def encode_page_token(offset: int) -> str:
    """An opaque page token for the item at ``offset``."""
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def decode_page_token(token: str | None) -> int:
    """The offset inside a page token; a token we did not issue is a 400."""
    if token is None or token == "":
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset = decoded["o"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise invalid("page_token", "is not a valid page token") from exc
    if not isinstance(offset, int) or offset < 0:
        raise invalid("page_token", "is not a valid page token")
    return offset
