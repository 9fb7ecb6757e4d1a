"""Differential fuzzing: the verifier's verdict is svix's verdict, for any input.

``Verifier.verify`` answers most deliveries itself (the one-HMAC shortcut) and asks
``svix.webhooks.Webhook.verify`` about the rest. Its contract is to accept exactly what
svix accepts: never a delivery svix refuses (a forgery, or one the shortcut reads
differently), never refuse one svix accepts, and never raise anything but
``RejectedDelivery`` (an exception there is a 500 on the webhook path).

Hypothesis generates plans for deliveries: secrets (with and without ``whsec_``, padded
and unpadded, one to three while rotating), svix-ids, bodies (non-UTF-8 too), timestamps
in a dozen spellings (leading zeros, signs, spaces, fractions, exponents, underscores,
non-ASCII digits, hundreds and thousands of digits) and signature headers made of valid,
mutated, foreign and malformed entries, signed with a right or a wrong key over the
header as written, over what svix signs (``str(int(float(ts)))``) or over the plain
timestamp. ``_verdicts`` builds the headers from a plan at the current time, so every
timestamp is at least 99 s away from both sides' tolerance edges, and asks both. A
case counts as accepted by svix when svix returns for any one secret; whatever svix
raises counts as its refusal.

The run is derandomized (the same cases everywhere, CI included) and bounded; set
``VERIFIER_FUZZ_EXAMPLES`` to run more cases, randomly, on a workstation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import string
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from svix.webhooks import Webhook

from handlers.secrets import MIN_KEY_BYTES, secret_key
from service.webhooks import RejectedDelivery, Verifier, _signed_plainly

_EXTRA = int(os.environ.get("VERIFIER_FUZZ_EXAMPLES", "0"))
#: Deterministic unless more examples are asked for; no example database is kept.
FUZZ = settings(
    derandomize=not _EXTRA,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
DELIVERY_EXAMPLES = _EXTRA or 2000
SECRET_EXAMPLES = _EXTRA or 1000

#: A key that no plan's secrets hold (``KEYS`` filters it out): the wrong key.
FOREIGN_KEY = b"\x00" * 15 + b"\x01" * 17

# Offsets from now, in seconds: well inside svix's five minutes, or well outside.
INSIDE = (0, -1, 1, -30, 30, -200, 200)
OUTSIDE = (-400, 400, -3600, 3600, -(10**9), 10**9, -(10**10))

ARABIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))
DEVANAGARI = str.maketrans("0123456789", "०१२३४५६७८९")


def _underscored(digits: str) -> str:
    return "_".join(digits[i : i + 3] for i in range(0, len(digits), 3))


#: How a plan spells its timestamp ``n``: ``(name, spelling)``; canonical is repeated so
#: that a fair share of cases can be accepted at all.
SPELLINGS: dict[str, Callable[[int], str]] = {
    "canonical": str,
    "leading zero": lambda n: "0" + str(n),
    "leading zeros": lambda n: "000" + str(n),
    "plus sign": lambda n: f"+{n}",
    "minus sign": lambda n: f"-{n}",
    "spaces": lambda n: f" {n} ",
    "tab and newline": lambda n: f"\t{n}\n",
    "em space": lambda n: f"\u2003{n}",
    "fraction .0": lambda n: f"{n}.0",
    "fraction .5": lambda n: f"{n}.5",
    "fraction .9999999": lambda n: f"{n}.9999999",
    "exponent": lambda n: f"{n}e0",
    "scientific": lambda n: f"{n / 1e9!r}e9",
    "underscores": lambda n: _underscored(str(n)),
    "arabic-indic digits": lambda n: str(n).translate(ARABIC),
    "fullwidth digits": lambda n: str(n).translate(FULLWIDTH),
    "devanagari digits": lambda n: str(n).translate(DEVANAGARI),
    "mixed digits": lambda n: str(n)[:3].translate(ARABIC) + str(n)[3:],
    "12 digits": lambda n: "9" * 12,
    "400 digits": lambda n: "9" * 400,
    "400 digits, leading zeros": lambda n: "0" * 390 + str(n),
    "4301 digits": lambda n: "1" * 4301,
    "minus 400 digits": lambda n: "-" + "9" * 400,
    "empty": lambda n: "",
    "zero": lambda n: "0",
    "nan": lambda n: "nan",
    "inf": lambda n: "inf",
    "words": lambda n: "soon",
}
SPELLING_NAMES = ["canonical"] * 24 + [name for name in SPELLINGS if name != "canonical"]

#: The kinds of entry a signature header is built from; ``good`` repeated for the same
#: reason as ``canonical``.
ENTRY_KINDS = [
    *["good"] * 20,
    "good unpadded",
    "good with junk",
    "good url-safe",
    "good labelled v2",
    "good labelled V1",
    "good in three fields",
    "good without comma",
    "foreign",
    "foreign v2",
    "empty",
    "v1 empty",
    "bad base64",
    "non-ASCII base64",
    "bare word",
    "text",
]


@dataclass(frozen=True)
class Plan:
    """One generated delivery, relative to the time it is checked."""

    secrets: tuple[str, ...]
    keys: tuple[bytes, ...]
    svix_id: str
    body: bytes
    offset: int
    spelling: str
    #: What the signatures are computed over: the header as written, what svix signs,
    #: or the plain ``str(now + offset)``.
    signed_over: str
    #: Which key signs the ``good`` entries: an index into ``keys``, or -1 for a key of
    #: no secret.
    signer: int
    entries: tuple[str, ...]
    #: Where a mutated entry is changed, and the entry of kind ``text``.
    position: int
    text: str
    separator: str
    dropped: str | None


def _secret_text(key: bytes, prefixed: bool, padded: bool) -> str:
    encoded = base64.b64encode(key).decode()
    return ("whsec_" if prefixed else "") + (encoded if padded else encoded.rstrip("="))


#: How a secret is spelled: svix accepts all four; the service's settings want whsec_.
SECRET_SPELLINGS = ("whsec_ padded", "whsec_ unpadded", "padded", "unpadded")
KEYS = st.lists(
    st.tuples(st.binary(min_size=MIN_KEY_BYTES, max_size=64), st.sampled_from(SECRET_SPELLINGS)),
    min_size=1,
    max_size=3,
    unique_by=lambda pair: pair[0],
).filter(lambda pairs: all(key != FOREIGN_KEY for key, _ in pairs))


#: Any code point, lone surrogates included (an explicit range also spares Hypothesis
#: from computing, and caching in .hypothesis/, the code points of a codec).
ANY_TEXT = st.characters(min_codepoint=0, max_codepoint=0x10FFFF)
#: Any code point but a lone surrogate: text that encodes to UTF-8.
UTF8_TEXT = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=["Cs"])
JSON_BODY = b'{"event_type":"message.received","event_id":"evt_1","note":"caf\xc3\xa9"}'
SVIX_IDS = st.one_of(
    st.just("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
    st.text(string.ascii_letters + string.digits, min_size=1, max_size=27).map("msg_".__add__),
    st.text(UTF8_TEXT, min_size=1, max_size=12),
    st.text(ANY_TEXT, min_size=1, max_size=12),
    st.sampled_from(["a.b.c", "msg 1", "msg_é", "msg_\U0001f600", "msg_\ud800", "", "."]),
)
#: Mostly UTF-8 (svix decodes the body first, so others are all refused alike).
BODIES = st.one_of(
    st.just(JSON_BODY),
    st.text(UTF8_TEXT, max_size=40).map(str.encode),
    st.text(UTF8_TEXT, max_size=40).map(str.encode),
    st.text(ANY_TEXT, max_size=40).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.sampled_from([b"", b"\xff\xfe{}", b"\xed\xa0\x80", b"{}\n", b"caf\xe9"]),
)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """A delivery to check: see the module docstring. Few draws, for speed; weighted so
    that about a third of the plans are deliveries svix accepts."""
    pairs = draw(KEYS)
    signer = draw(st.integers(-1, 3 * len(pairs)))
    return Plan(
        secrets=tuple(
            _secret_text(key, "whsec_" in how, "unpadded" not in how) for key, how in pairs
        ),
        keys=tuple(key for key, _ in pairs),
        svix_id=draw(SVIX_IDS),
        body=draw(BODIES),
        offset=draw(st.sampled_from(INSIDE * 3 + OUTSIDE)),
        spelling=draw(st.sampled_from(SPELLING_NAMES)),
        signed_over=draw(st.sampled_from(["as written", "as svix signs", "plain"])),
        signer=signer % len(pairs) if signer >= 0 else -1,
        entries=tuple(draw(st.lists(st.sampled_from(ENTRY_KINDS), min_size=1, max_size=4))),
        position=draw(st.integers(0, 60)),
        text=draw(st.text(ANY_TEXT, max_size=8)),
        separator=draw(st.sampled_from([" "] * 6 + ["  ", ", "])),
        dropped=draw(
            st.sampled_from([None] * 30 + ["svix-id", "svix-timestamp", "svix-signature"])
        ),
    )


def svix_signs(timestamp: str) -> str | None:
    """The timestamp string svix's ``sign`` uses for a header, if it can read it."""
    try:
        when = datetime.fromtimestamp(float(timestamp), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return str(math.floor(when.timestamp()))


def hmac_b64(key: bytes, svix_id: str, timestamp: str, body: bytes) -> str:
    """The base64 HMAC-SHA256 of ``{svix_id}.{timestamp}.{body}`` (lone surrogates kept)."""
    signed = f"{svix_id}.{timestamp}.".encode("utf-8", "surrogatepass") + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _entry(kind: str, position: int, text: str, good: str, foreign: str) -> str:
    cut = position % (len(good) + 1)
    return {
        "good": f"v1,{good}",
        "good unpadded": f"v1,{good.rstrip('=')}",
        "good with junk": f"v1,{good[:cut]}!{good[cut:]}",
        "good url-safe": "v1," + good.translate(str.maketrans("+/", "-_")),
        "good labelled v2": f"v2,{good}",
        "good labelled V1": f"V1,{good}",
        "good in three fields": f"v1,{good},{good}",
        "good without comma": f"v1{good}",
        "foreign": f"v1,{foreign}",
        "foreign v2": f"v2,{foreign}",
        "empty": "",
        "v1 empty": "v1,",
        "bad base64": "v1,abc",
        "non-ASCII base64": f"v1,{good[:cut]}é{good[cut:]}",
        "bare word": "garbage",
        "text": text,
    }[kind]


def headers_for(plan: Plan, now: int) -> dict[str, str]:
    """The plan's three headers, with its timestamp ``now + offset``."""
    plain = now + plan.offset
    timestamp = SPELLINGS[plan.spelling](plain)
    over = {
        "as written": timestamp,
        "as svix signs": svix_signs(timestamp) or timestamp,
        "plain": str(plain),
    }[plan.signed_over]
    key = plan.keys[plan.signer] if plan.signer >= 0 else FOREIGN_KEY
    good = hmac_b64(key, plan.svix_id, over, plan.body)
    foreign = hmac_b64(FOREIGN_KEY, plan.svix_id, over, plan.body)
    signature = plan.separator.join(
        _entry(kind, plan.position, plan.text, good, foreign) for kind in plan.entries
    )
    headers = {"svix-id": plan.svix_id, "svix-timestamp": timestamp, "svix-signature": signature}
    if plan.dropped is not None:
        del headers[plan.dropped]
    return headers


def svix_accepts(plan: Plan, headers: dict[str, str]) -> bool:
    """svix's verdict: accepted when any secret's ``Webhook.verify`` returns."""
    return any(_svix_accepts_with(secret, plan.body, headers) for secret in plan.secrets)


def _svix_accepts_with(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, dict(headers))
    except Exception:  # whatever svix raises, it did not accept
        return False
    return True


def verifier_accepts(plan: Plan, headers: dict[str, str]) -> bool:
    """Our verdict; anything but ``RejectedDelivery`` propagates and fails the test."""
    refusal: RejectedDelivery | None = None
    try:
        accepted = Verifier(plan.secrets).verify(plan.body, headers)
    except RejectedDelivery as refused:
        refusal = refused
    if refusal is not None:
        assert refusal.status in (400, 401), refusal.status
        assert refusal.reason
        return False
    assert accepted == headers["svix-id"]
    return True


def _verdicts(plan: Plan, tally: Counter[str]) -> None:
    headers = headers_for(plan, int(time.time()))
    ours = verifier_accepts(plan, headers)
    theirs = svix_accepts(plan, headers)
    assert ours == theirs, f"verifier {'accepts' if ours else 'refuses'}, svix does not"
    if not ours:
        tally["refused"] += 1
        event("refused")
        return
    macs = Verifier(plan.secrets)._macs
    shortcut = _signed_plainly(
        macs, plan.body, headers["svix-id"], headers["svix-timestamp"], headers["svix-signature"]
    )
    verdict = "accepted by the shortcut" if shortcut else "accepted by svix"
    tally[verdict] += 1
    event(verdict)  # pytest --hypothesis-show-statistics shows the shares


NOW = int(time.time())
SECRET = _secret_text(bytes(range(24)), prefixed=True, padded=True)
LEADING_ZERO_AS_WRITTEN = Plan(
    secrets=(SECRET,),
    keys=(bytes(range(24)),),
    svix_id="msg_1",
    body=b"{}",
    offset=0,
    spelling="leading zero",
    signed_over="as written",
    signer=0,
    entries=("good",),
    position=0,
    text="",
    separator=" ",
    dropped=None,
)


@pytest.mark.slow
def test_generated_deliveries_get_svix_verdict() -> None:
    """Our verdict equals svix's on generated deliveries, and both verdicts occur often.

    Without a fair share of acceptances, by the shortcut and by svix alone, agreement
    would say little: refusing everything agrees with svix on garbage.
    """
    tally: Counter[str] = Counter()

    @settings(FUZZ, max_examples=DELIVERY_EXAMPLES)
    @given(plan=plans())
    @example(plan=LEADING_ZERO_AS_WRITTEN)
    @example(plan=replace(LEADING_ZERO_AS_WRITTEN, spelling="400 digits"))
    def check(plan: Plan) -> None:
        _verdicts(plan, tally)

    check()
    total = sum(tally.values())
    accepted = total - tally["refused"]
    # About 20 % accepted (10 % by the shortcut, 10 % by svix alone) at the time of writing.
    assert total >= min(DELIVERY_EXAMPLES, 1000), tally
    assert accepted >= total // 10, tally
    assert tally["accepted by the shortcut"] >= total // 20, tally
    assert tally["accepted by svix"] >= total // 50, tally
    assert tally["refused"] >= total // 4, tally


def test_generated_secrets_are_read_as_svix_reads_them_or_refused() -> None:
    """Any secret is either refused by ``secret_key`` (and the verifier) or decodes to
    the very key svix uses, of at least ``MIN_KEY_BYTES``; mistyped copies of good
    secrets are refused, never silently decoded to another key."""
    tally: Counter[str] = Counter()

    @settings(FUZZ, max_examples=SECRET_EXAMPLES)
    @given(secret=secret_candidates())
    def check(secret: str) -> None:
        try:
            key = secret_key(secret)
        except ValueError:
            with pytest.raises(ValueError, match="secret"):
                Verifier([secret])
            tally["refused"] += 1
            return
        tally["read"] += 1
        assert len(key) >= MIN_KEY_BYTES
        assert base64.b64encode(key).decode().rstrip("=") == secret.removeprefix("whsec_").rstrip(
            "="
        )
        stamp = datetime.fromtimestamp(NOW, UTC)
        expected = "v1," + hmac_b64(key, "msg_1", str(NOW), b"{}")
        assert Webhook(secret).sign("msg_1", stamp, "{}") == expected

    check()
    assert tally["read"] >= SECRET_EXAMPLES // 10, tally
    assert tally["refused"] >= SECRET_EXAMPLES // 4, tally


#: What ``secret_candidates`` makes of a good secret (``good`` weighted up).
SECRET_MUTATIONS = [
    *["good"] * 8,
    "character replaced",
    "character inserted",
    "character dropped",
    "one = more",
    "two = more",
    "cut in half",
    "whsec_ twice",
    "upper case",
    "any text",
    "base64-ish text",
]


@st.composite
def secret_candidates(draw: st.DrawFn) -> str:
    """Good secrets (keys of 15 to 48 bytes, or of a few), the same mistyped (a
    character replaced, inserted or dropped, padding changed, cut short), and text."""
    key = draw(st.binary(min_size=MIN_KEY_BYTES - 1, max_size=48) | st.binary(max_size=8))
    good = _secret_text(key, draw(st.booleans()), draw(st.booleans()))
    position = draw(st.integers(0, len(good)))
    char = draw(st.sampled_from(["-", "_", " ", ".", "=", "!", "é", "\n", "A", "+", "/"]))
    mutation = draw(st.sampled_from(SECRET_MUTATIONS))
    event(mutation)
    if mutation == "any text":
        return draw(st.text(ANY_TEXT, max_size=40))
    if mutation == "base64-ish text":
        return "whsec_" + draw(st.text(alphabet="ABCDabcd0123+/=-_ ", max_size=60))
    return {
        "good": good,
        "character replaced": good[:position] + char + good[position + 1 :],
        "character inserted": good[:position] + char + good[position:],
        "character dropped": good[:position] + good[position + 1 :],
        "one = more": good + "=",
        "two = more": good + "==",
        "cut in half": good[: len(good) // 2],
        "whsec_ twice": "whsec_" + good,
        "upper case": good.upper(),
    }[mutation]
