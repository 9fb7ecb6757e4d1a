"""The suppression list's decisions: which bounce or complaint suppresses an address.

An auto-responder that keeps answering an address whose replies bounce, or whose owner
reported a reply as spam, hurts the sending domain's reputation and annoys a person who
asked to be left alone. So a bounce or complaint about one of **our** replies puts the
recipient on the inbox's suppression list, and the policy skips mail from a suppressed
address (``suppressed``) until an operator removes it:

* a **permanent** bounce (``bounce.type`` ``Permanent``: the address does not exist, the
  domain does not accept mail) suppresses at once;
* a **transient** bounce (``Transient``: mailbox full, greylisting, a server down; and
  ``Undetermined``, or any other type, which may well be temporary) suppresses only
  once ``limit`` distinct replies to that address bounced so within
  ``TRANSIENT_WINDOW`` (``AUTOREPLY_TRANSIENT_BOUNCE_LIMIT``, default 3; with the
  default one-day sender cooldown that is three replies on three different days, a
  mailbox that stays unreachable rather than a bad afternoon);
* a **complaint** (a feedback report, RFC 5965) suppresses at once, whatever its type,
  except ``not-spam``, which is the recipient saying the opposite.

Everything here is pure: the store applies it inside the transaction that records the
event, so replicas receiving feedback at once agree.
"""

from __future__ import annotations

import enum
from datetime import timedelta

from handlers.events import MESSAGE_BOUNCED, MESSAGE_COMPLAINED
from handlers.policy import is_address

#: Transient bounces older than this no longer count towards the limit.
TRANSIENT_WINDOW = timedelta(days=30)

#: The default of ``AUTOREPLY_TRANSIENT_BOUNCE_LIMIT``.
DEFAULT_TRANSIENT_LIMIT = 3

#: The longest address the list accepts (RFC 5321: 254 usable characters in a path).
MAX_ADDRESS_LENGTH = 254

#: The ``inbox_id`` of an entry that holds for every inbox (``suppressions add`` without
#: ``--inbox``); no AgentMail inbox id can be ``*``.
ALL_INBOXES = "*"


class FeedbackKind(enum.StrEnum):
    """What a ``message.bounced`` or ``message.complained`` event says about a message."""

    PERMANENT_BOUNCE = "permanent_bounce"
    TRANSIENT_BOUNCE = "transient_bounce"
    COMPLAINT = "complaint"
    #: A feedback report of type ``not-spam``: nothing against the address.
    NOT_A_COMPLAINT = "not_a_complaint"


class Cause(enum.StrEnum):
    """Why an address is suppressed: the ``cause`` column and the metric's label."""

    BOUNCE = "bounce"
    TRANSIENT_BOUNCES = "transient_bounces"
    COMPLAINT = "complaint"
    MANUAL = "manual"


def feedback_kind(event_type: str, type_: str) -> FeedbackKind:
    """Classify a bounce or complaint by its event type and its ``type`` field."""
    kind = type_.strip().lower()
    if event_type == MESSAGE_COMPLAINED:
        return FeedbackKind.NOT_A_COMPLAINT if kind == "not-spam" else FeedbackKind.COMPLAINT
    if event_type != MESSAGE_BOUNCED:
        raise ValueError(f"{event_type} is not a bounce or a complaint")
    return FeedbackKind.PERMANENT_BOUNCE if kind == "permanent" else FeedbackKind.TRANSIENT_BOUNCE


def suppression_cause(kind: FeedbackKind, *, transient_bounces: int, limit: int) -> Cause | None:
    """Whether feedback of ``kind`` about one of our replies suppresses its recipient.

    ``transient_bounces`` counts the distinct replies to the address that bounced
    transiently within ``TRANSIENT_WINDOW``, this one included; ``limit`` is
    ``AUTOREPLY_TRANSIENT_BOUNCE_LIMIT`` (0: transient bounces never suppress).
    """
    if kind is FeedbackKind.PERMANENT_BOUNCE:
        return Cause.BOUNCE
    if kind is FeedbackKind.COMPLAINT:
        return Cause.COMPLAINT
    if kind is FeedbackKind.TRANSIENT_BOUNCE and limit and transient_bounces >= limit:
        return Cause.TRANSIENT_BOUNCES
    return None


def normalise_address(text: str) -> str:
    """A suppression list address: the bare address, lower-cased; ``ValueError`` saying
    why for anything else (a display name, spaces, no ``@``, no dot in the domain, a
    control or invisible character, over 254 characters)."""
    address = stored_address(text)
    if any(c in address for c in '<>,;"()') or address.count("@") != 1:
        raise ValueError(f"{text!r} is not an email address like jane@example.com")
    _local, _, domain = address.partition("@")
    if "." not in domain.strip(".") or domain.startswith(".") or domain.endswith("."):
        raise ValueError(f"{text!r} is not an email address like jane@example.com")
    return address


def stored_address(text: str) -> str:
    """An address as the list may hold it, checked no further than the policy checks a
    sender's: lower-cased ``local@domain``, no space, nothing unprintable.

    What ``suppressions remove`` accepts: a bounce suppresses the address a reply went
    to, which may be one ``normalise_address`` refuses to add by hand (``ops@intranet``),
    and an entry the list holds must be removable. A control, invisible or unencodable
    character (a lone surrogate from a mis-encoded command line) is refused: it would
    make an entry that prints like another address and never matches it.
    """
    address = text.strip().lower()
    if len(address) > MAX_ADDRESS_LENGTH:
        raise ValueError(f"address is over {MAX_ADDRESS_LENGTH} characters")
    if not address.isprintable():
        raise ValueError(f"{text!r} holds a control or invisible character")
    if not is_address(address):
        raise ValueError(f"{text!r} is not an email address like jane@example.com")
    return address


def bare_address(text: str) -> str:
    """The address in a bounce's or complaint's recipient, as a reply's recipient is
    written (``handlers.message``'s ``sender_address``): ``Jane <JANE@x.org>`` and
    `` jane@x.org`` both give ``jane@x.org``. Not validated: it is only compared with
    the address our reply went to."""
    text = text.strip()
    if text.endswith(">") and (start := text.rfind("<")) != -1:
        text = text[start + 1 : -1]
    return text.strip().lower()


def against_our_reply(recipients: tuple[str, ...], reply_to: str) -> tuple[str, ...]:
    """Whom a bounce or complaint about our reply suppresses: the reply's one recipient,
    when the event names it among its ``recipients`` (bare, see ``bare_address``) or
    names none; nobody when it names only others.

    Our reply went to one address, so the feedback can only be against that one: a
    complaint naming ten thousand recipients writes one row, not ten thousand, and never
    puts an address on the list that we did not write to.
    """
    ours = bare_address(reply_to)
    if not ours or (recipients and ours not in recipients):
        return ()
    return (ours,)
