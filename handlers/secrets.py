"""Webhook signing secrets: what a ``whsec_`` secret must be to be used at all.

Svix decodes a secret's base64 leniently: it silently drops a character outside the
alphabet (a mistyped copy, a URL-safe ``-``) and accepts a key of a single byte. The
service refuses such a secret instead, at startup (``AUTOREPLY_WEBHOOK_SECRET``) or
when a registered webhook's secret is fetched. Pure, so reading the settings does not
load the Svix client (``service.webhooks`` verifies with the key this returns).
"""

from __future__ import annotations

import base64
import re

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not a secret
#: The fewest bytes of HMAC key a secret may carry. Svix issues 24; a shorter key is a
#: mistake (a truncated copy, a placeholder such as ``whsec_AA``), never a real secret.
MIN_KEY_BYTES = 16
_BASE64 = re.compile(r"[A-Za-z0-9+/]*")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret (``whsec_`` and base64; the prefix is optional here, as
    in svix), or ``ValueError`` saying what is wrong without showing the secret.

    Stricter than svix, which drops any character outside the base64 alphabet and takes
    a key of any length: a secret must be the exact, canonical standard base64 (``A-Z
    a-z 0-9 + /``) of its key, with its ``=`` padding either complete or left off
    entirely, and the key must have at least ``MIN_KEY_BYTES`` bytes. Whatever passes
    decodes to the very key svix derives from it, so the shortcut and svix agree.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    data = encoded.rstrip("=")
    padding = len(encoded) - len(data)
    if not _BASE64.fullmatch(data):
        raise ValueError(
            "is not base64 after whsec_: only A-Z a-z 0-9 + / and = padding are allowed "
            "(a - or _ is a URL-safe or mistyped copy, a space a broken one)"
        )
    if len(data) % 4 == 1 or (padding and (padding != -len(data) % 4)):
        raise ValueError("is not base64 after whsec_: its length or = padding is wrong")
    key = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    if base64.b64encode(key).decode("ascii").rstrip("=") != data:
        raise ValueError("is not base64 after whsec_: its last character is not canonical")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"is too short: it decodes to a {len(key)}-byte key, at least {MIN_KEY_BYTES} "
            "bytes are needed (Svix issues 24)"
        )
    return key
