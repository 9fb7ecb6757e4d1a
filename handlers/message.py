"""The inbound message as the decisions see it, parsed once from AgentMail's JSON.

AgentMail's webhook payload (and ``GET .../messages/{id}``) carries the message in the
SDK's ``Message`` shape. Parsing it here, at the boundary, means every decision below
works on typed, frozen values and never on raw dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import getaddresses, parseaddr
from typing import Any

#: The event type of ordinary inbound mail. Its ``.spam``, ``.blocked`` and
#: ``.unauthenticated`` variants are never answered.
MESSAGE_RECEIVED = "message.received"

#: The longest ``From`` accepted, in characters: far above any real one (RFC 5321 caps
#: an address at 256), low enough that parsing it costs nothing.
MAX_SENDER_LENGTH = 2048
#: Parentheses (RFC 5322 comments) nest at most this deep in an address field. The
#: standard library's parser recurses once per level and fails near 500 levels.
MAX_COMMENT_NESTING = 32
#: Characters of address fields parsed at once at most (``addresses_of``): parsing
#: costs about a second a megabyte on the event loop. The policy skips recipient lists
#: longer than this as mass mail before it parses them.
MAX_ADDRESS_CHARS = 16 * 1024
#: Colons in one address field at most: the parser also recurses once per ``:`` (group
#: syntax, ``Team: a@x, b@y;``) and fails near 1,000 of them. Real fields hold a few.
MAX_COLONS = 64
#: The span of believable ``timestamp`` values. Outside it a timestamp is hostile or
#: broken, and the date arithmetic of rules and delays (a window searched 400 days
#: either way; year 1 or 9999 with an offset) would run off the end of the calendar.
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIMESTAMP = datetime(3000, 1, 1, tzinfo=UTC)


class PayloadError(ValueError):
    """The payload is not a usable AgentMail message; ``str()`` says what is wrong."""


@dataclass(frozen=True, slots=True)
class Headers:
    """Case-insensitive, possibly repeated message headers.

    AgentMail sends headers as a JSON object, which cannot repeat a name; a list of
    ``[name, value]`` pairs is accepted too, so repeated headers are not lost when a
    source does keep them.
    """

    items: tuple[tuple[str, str], ...] = ()
    #: Lower-cased name -> values, built once: the policy asks for a dozen names, and a
    #: payload of 1 MB can hold a hundred thousand headers.
    _by_name: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, list[str]] = {}
        for key, value in self.items:
            by_name.setdefault(key.lower(), []).append(value)
        object.__setattr__(self, "_by_name", {k: tuple(v) for k, v in by_name.items()})

    @classmethod
    def parse(cls, raw: object) -> Headers:
        """Build from a JSON object or a list of ``[name, value]`` pairs."""
        if raw is None:
            return cls()
        pairs: Iterable[Any]
        if isinstance(raw, Mapping):
            pairs = raw.items()
        elif isinstance(raw, list):
            pairs = raw
        else:
            raise PayloadError("message.headers must be an object")
        items: list[tuple[str, str]] = []
        for pair in pairs:
            if not (isinstance(pair, list | tuple) and len(pair) == 2):
                raise PayloadError("message.headers entries must be [name, value] pairs")
            name, value = pair
            if not isinstance(name, str):
                raise PayloadError("message.headers names must be strings")
            values = value if isinstance(value, list) else [value]
            items.extend((name, str(v)) for v in values if v is not None)
        return cls(tuple(items))

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` (any case), in order."""
        return list(self._by_name.get(name.lower(), ()))

    def get(self, name: str) -> str | None:
        """The first value of ``name`` (any case), or None."""
        values = self.get_all(name)
        return values[0] if values else None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_all(name))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def addresses_of(values: Iterable[str]) -> tuple[str, ...]:
    """Bare, lower-cased addresses of every entry; entries may list several.

    ``PayloadError`` for entries longer than ``MAX_ADDRESS_CHARS`` together, or nested
    too deeply to parse (see ``check_nesting``).
    """
    entries = list(values)
    if sum(map(len, entries)) > MAX_ADDRESS_CHARS:
        raise PayloadError(f"address: over {MAX_ADDRESS_CHARS} characters")
    for entry in entries:
        check_nesting(entry)
    try:
        parsed = getaddresses(entries)
    except RecursionError:  # a shape the checks above do not foresee
        raise PayloadError("address: nested too deep to parse") from None
    return tuple(addr.lower() for _, addr in parsed if addr)


def check_nesting(value: str, *, field_name: str = "address") -> None:
    """Raise ``PayloadError`` when ``value`` nests deeper than the parser can go: comments
    nested over ``MAX_COMMENT_NESTING`` deep, or more than ``MAX_COLONS`` colons.

    Counting is enough: quoted strings and escapes can only make the real nesting
    shallower than this count says, and no real address comes near the limit.
    """
    if value.count(":") > MAX_COLONS:
        raise PayloadError(f"{field_name}: over {MAX_COLONS} colons")
    if value.count("(") <= MAX_COMMENT_NESTING:
        return
    depth = 0
    for char in value:
        if char == "(":
            depth += 1
            if depth > MAX_COMMENT_NESTING:
                raise PayloadError(f"{field_name}: comments nested over {MAX_COMMENT_NESTING} deep")
        elif char == ")" and depth:
            depth -= 1


@dataclass(frozen=True, kw_only=True, slots=True)
class InboundMessage:
    """One inbound message, with just what the decisions and the reply need."""

    #: ``message.received`` or one of its variants.
    event_type: str
    inbox_id: str
    message_id: str
    thread_id: str
    #: The raw ``From`` value, e.g. ``Jane <jane@example.com>``.
    sender: str
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    preview: str | None = None
    labels: frozenset[str] = field(default_factory=frozenset)
    headers: Headers = field(default_factory=Headers)
    timestamp: datetime | None = None
    #: True when the payload had no ``text`` and no ``html``: AgentMail omits both
    #: above its 1 MB payload cap, so the message must be fetched before deciding.
    body_omitted: bool = False
    #: True when the payload had no ``headers`` at all (not even an empty object):
    #: the loop-protection rules cannot be applied without them.
    headers_omitted: bool = False

    @property
    def incomplete(self) -> bool:
        """The payload lacks what the decision needs; fetch the full message first."""
        return self.body_omitted or self.headers_omitted

    #: The sender's bare, lower-cased address (derived from ``sender``).
    sender_address: str = field(init=False)
    #: The sender's display name, or the address when there is none.
    sender_name: str = field(init=False)

    def __post_init__(self) -> None:
        # Parsed once here: the policy, the rules and the templates all ask for it.
        if len(self.sender) > MAX_SENDER_LENGTH:
            raise PayloadError(f"message.from is over {MAX_SENDER_LENGTH} characters")
        check_nesting(self.sender, field_name="message.from")
        try:
            name, addr = parseaddr(self.sender)
        except RecursionError:  # a shape check_nesting does not foresee
            raise PayloadError("message.from: nested too deep to parse") from None
        object.__setattr__(self, "sender_address", addr.strip().lower())
        object.__setattr__(self, "sender_name", name.strip() or addr)

    @classmethod
    def from_payload(
        cls, message: Mapping[str, Any], *, event_type: str = MESSAGE_RECEIVED
    ) -> InboundMessage:
        """Parse the ``message`` object of a webhook event or a GET message response."""
        if not isinstance(message, Mapping):
            raise PayloadError("message must be an object")
        text = _optional_str(message, "text")
        html = _optional_str(message, "html")
        return cls(
            event_type=event_type,
            inbox_id=_required_str(message, "inbox_id"),
            message_id=_required_str(message, "message_id"),
            thread_id=_required_str(message, "thread_id"),
            sender=_required_str(message, "from"),
            to=_str_list(message, "to"),
            cc=_str_list(message, "cc"),
            reply_to=_str_list(message, "reply_to"),
            subject=_optional_str(message, "subject"),
            text=text,
            html=html,
            preview=_optional_str(message, "preview"),
            labels=frozenset(_str_list(message, "labels")),
            headers=Headers.parse(message.get("headers")),
            timestamp=_optional_datetime(message, "timestamp"),
            body_omitted=text is None and html is None,
            headers_omitted=message.get("headers") is None,
        )


def _required_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"message.{key} must be a non-empty string")
    return value


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PayloadError(f"message.{key} must be a string")
    return value


def _str_list(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PayloadError(f"message.{key} must be a list of strings")
    return tuple(value)


def _optional_datetime(data: Mapping[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PayloadError(f"message.{key} must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise PayloadError(f"message.{key} is not an ISO-8601 time") from exc
    if parsed.tzinfo is None:
        raise PayloadError(f"message.{key} has no time zone")
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError:  # year 1 at +05:00, year 9999 at -05:00: before or after Python's
        utc = None
    if utc is None or not EARLIEST_TIMESTAMP <= utc < LATEST_TIMESTAMP:
        raise PayloadError(
            f"message.{key} is out of range (years {EARLIEST_TIMESTAMP.year} to "
            f"{LATEST_TIMESTAMP.year - 1})"
        )
    return parsed
