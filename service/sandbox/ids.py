"""Identifier and secret generation in the formats AgentMail and Svix use.

Ids come from a ``random.Random`` so a seeded sandbox hands out the same ids on every
run; webhook secrets always come from :mod:`secrets`.
"""

from __future__ import annotations

import base64
import random
import secrets
import string

_ALPHABET = string.ascii_lowercase + string.digits
_SVIX_ALPHABET = string.ascii_letters + string.digits


class IdFactory:
    """Makes ``thd_…``, ``ep_…``, ``evt_…``, ``msg_…``, ``dlv_…``, ``drf_…`` ids and Message-IDs."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def _token(self, length: int, alphabet: str = _ALPHABET) -> str:
        return "".join(self._rng.choice(alphabet) for _ in range(length))

    def thread_id(self) -> str:
        """A thread id such as ``thd_k3j9…``."""
        return "thd_" + self._token(20)

    def webhook_id(self) -> str:
        """A webhook (Svix endpoint) id such as ``ep_2Xk…``."""
        return "ep_" + self._token(24, _SVIX_ALPHABET)

    def event_id(self) -> str:
        """An event id such as ``evt_…``."""
        return "evt_" + self._token(24, _SVIX_ALPHABET)

    def svix_id(self) -> str:
        """A Svix message id such as ``msg_…``; stable across the retries of a delivery."""
        return "msg_" + self._token(27, _SVIX_ALPHABET)

    def delivery_id(self) -> str:
        """The sandbox's own handle on one delivery (not visible to receivers)."""
        return "dlv_" + self._token(16)

    def draft_id(self) -> str:
        """A draft id such as ``drf_k3j9…`` (the real format is undocumented)."""
        return "drf_" + self._token(24)

    def attachment_id(self) -> str:
        """An attachment id."""
        return "att_" + self._token(16)

    def message_id(self, domain: str = "agentmail.to") -> str:
        """An RFC 5322 Message-ID with angle brackets, e.g. ``<0a1b…@agentmail.to>``."""
        return f"<{self._token(24)}@{domain}>"

    def username(self) -> str:
        """A random inbox username, for creates that give none."""
        return self._token(12)


def webhook_secret() -> str:
    """A fresh ``whsec_`` secret: 24 random bytes, base64, as Svix issues them."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")
