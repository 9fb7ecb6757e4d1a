"""The verifier accepts exactly what the svix library accepts.

Plainly valid deliveries take a shortcut (one HMAC over the raw bytes) before svix is
asked. These tests hold the verifier against ``svix.webhooks.Webhook.verify`` itself, over
ordinary and odd headers alike: wherever svix refuses, the verifier must refuse, and
wherever svix accepts, so must the verifier. The shortcut must also really be taken for
what AgentMail sends, or it would be dead code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import time
from datetime import UTC, datetime

import pytest
from svix.webhooks import Webhook

from service.webhooks import RejectedDelivery, Verifier, _signed_plainly

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER = "whsec_" + "dGhpcyBpcyBhbm90aGVyIHNlY3JldCEh"
BODY = b'{"event_type":"message.received","event_id":"evt_1","note":"caf\xc3\xa9"}'


def sign(secret: str, svix_id: str, stamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature svix itself produces."""
    return Webhook(secret).sign(svix_id, datetime.fromtimestamp(stamp, UTC), body.decode())


def sign_as_written(secret: str, svix_id: str, stamp: str, body: bytes) -> str:
    """A ``v1`` signature over the timestamp exactly as written (svix signs its int)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{svix_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def svix_accepts(secrets: list[str], body: bytes, headers: dict[str, str]) -> bool:
    refusals = 0
    for secret in secrets:
        try:
            Webhook(secret).verify(body.decode(), dict(headers))
        except Exception:  # any refusal by svix counts as a refusal
            refusals += 1
    return refusals < len(secrets)


def verifier_accepts(secrets: list[str], body: bytes, headers: dict[str, str]) -> bool:
    try:
        Verifier(secrets).verify(body, headers)
    except RejectedDelivery:
        return False
    return True


def cases() -> list[tuple[str, bytes, dict[str, str]]]:
    now = int(time.time())
    good = sign(SECRET, "msg_1", now, BODY)
    other = sign(OTHER, "msg_1", now, BODY)
    raw = good.split(",", 1)[1]
    found: list[tuple[str, bytes, dict[str, str]]] = []

    def add(name: str, signature: str, *, stamp: str = str(now), body: bytes = BODY) -> None:
        headers = {"svix-id": "msg_1", "svix-timestamp": stamp, "svix-signature": signature}
        found.append((name, body, headers))

    add("valid", good)
    add("wrong secret", other)
    add("valid among several", f"{other} {good}")
    add("valid after a v2 entry", f"v2,{raw} {good}")
    add("valid but labelled v2", f"v2,{raw}")
    add("entry with two commas before a valid one", f"v1,{raw},x {good}")
    add("entry without a comma before a valid one", f"junk {good}")
    add("valid signature in a three-field entry", f"v1,{raw},{raw}")
    add("unpadded base64", good.rstrip("="))
    add("base64 with a stray character", good[:10] + "!" + good[10:])
    add("invalid base64 before a valid one", f"v1,@@@ {good}")
    add("double space", f"{other}  {good}")
    add("tampered body", good, body=BODY.replace(b"evt_1", b"evt_2"))
    add("fractional timestamp", sign(SECRET, "msg_1", now, BODY), stamp=f"{now}.0")
    add("timestamp with a plus sign", good, stamp=f"+{now}")
    add("timestamp with spaces", good, stamp=f" {now} ")
    arabic = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
    add("non-ASCII digits", good, stamp=str(now).translate(arabic))
    add("not a number", good, stamp="soon")
    zero = f"0{now}"
    add("leading zero, signed as written", sign_as_written(SECRET, "msg_1", zero, BODY), stamp=zero)
    add("leading zero, signed as svix signs", good, stamp=zero)
    for digits in ("9" * 400, "1" * 4301, "0" * 400 + str(now)):
        signature = sign_as_written(SECRET, "msg_1", digits, BODY)
        add(f"{len(digits)}-digit timestamp, signed as written", signature, stamp=digits)
    for offset in (-3600, -301, -299, -60, 0, 60, 299, 301, 3600):
        stamp = now + offset
        add(f"timestamp {offset:+d}s", sign(SECRET, "msg_1", stamp, BODY), stamp=str(stamp))
    add("signed for another svix-id", sign(SECRET, "msg_2", now, BODY))
    return found


CASES = cases()


@pytest.mark.parametrize(("name", "body", "headers"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("secrets", [[SECRET], [OTHER, SECRET]], ids=["one", "rotating"])
def test_verifier_agrees_with_svix(
    name: str, body: bytes, headers: dict[str, str], secrets: list[str]
) -> None:
    assert verifier_accepts(secrets, body, headers) == svix_accepts(secrets, body, headers)


def test_the_cases_cover_both_verdicts() -> None:
    verdicts = {svix_accepts([SECRET], body, headers) for _, body, headers in CASES}
    assert verdicts == {True, False}


def test_ordinary_deliveries_take_the_shortcut() -> None:
    now = int(time.time())
    for secrets, svix_id in itertools.product([[SECRET], [OTHER, SECRET]], ["msg_1", "msg_é"]):
        macs = Verifier(secrets)._macs
        signature = sign(SECRET, svix_id, now, BODY)
        assert _signed_plainly(macs, BODY, svix_id, str(now), signature)


def test_the_shortcut_never_accepts_a_wrong_signature() -> None:
    now = int(time.time())
    macs = Verifier([SECRET])._macs
    signature = sign(SECRET, "msg_1", now, BODY)
    digest = bytearray(base64.b64decode(signature.split(",", 1)[1]))
    for position in range(len(digest)):
        flipped = bytearray(digest)
        flipped[position] ^= 0x01
        forged = "v1," + base64.b64encode(bytes(flipped)).decode()
        assert not _signed_plainly(macs, BODY, "msg_1", str(now), forged)


def test_refusals_keep_svix_reasons() -> None:
    now = int(time.time())
    old = now - 3600
    headers = {
        "svix-id": "msg_1",
        "svix-timestamp": str(old),
        "svix-signature": sign(SECRET, "msg_1", old, BODY),
    }
    with pytest.raises(RejectedDelivery) as refused:
        Verifier([SECRET]).verify(BODY, headers)
    assert (refused.value.status, refused.value.reason) == (401, "timestamp too old")


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        ("9" * 400, "invalid svix-timestamp"),
        ("1" * 4301, "invalid svix-timestamp"),
        ("soon", "invalid svix-timestamp"),
    ],
)
def test_unreadable_timestamps_are_401_never_an_exception(stamp: str, reason: str) -> None:
    headers = {
        "svix-id": "msg_1",
        "svix-timestamp": stamp,
        "svix-signature": sign_as_written(SECRET, "msg_1", stamp, BODY),
    }
    with pytest.raises(RejectedDelivery) as refused:
        Verifier([SECRET]).verify(BODY, headers)
    assert (refused.value.status, refused.value.reason) == (401, reason)


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("whsec_AA", "too short: it decodes to a 1-byte key"),
        ("whsec_" + base64.b64encode(b"k" * 15).decode(), "15-byte key"),
        (SECRET[:12] + "-" + SECRET[13:], "not base64"),
        (SECRET[:12] + "_" + SECRET[13:], "not base64"),
        (SECRET + "=", "padding"),
        ("whsec_a2tra2tra2tra2tra2trax==", "not canonical"),  # the key of ...aw==, b"k" * 16
        ("whsec_", "0-byte key"),
    ],
)
def test_weak_or_mistyped_secrets_are_refused(secret: str, problem: str) -> None:
    """svix would take each of these (decoding leniently); the verifier will not."""
    with pytest.raises(ValueError, match="secret") as refused:
        Verifier([SECRET, secret])
    assert "secret 2 of 2" in str(refused.value)
    assert problem in str(refused.value)
    assert secret.removeprefix("whsec_") not in str(refused.value) or secret == "whsec_"
