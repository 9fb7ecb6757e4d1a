"""The AgentMail event types the service subscribes to and acts on, named once.

``subscribed_event_types`` is the one place that says which event types a configuration
needs: webhook registration subscribes to exactly those (and converges the webhook when
the set changes), ``autoreply status`` compares AgentMail's webhook against them, and
intake acts on them (anything else that arrives is recorded and answered ``ignored``).
``service.registration.event_types`` feeds it from the settings.
"""

from __future__ import annotations

from handlers.message import MESSAGE_RECEIVED

#: A bounce of a message an inbox sent (``bounce``: ids, ``type``, ``sub_type``,
#: ``recipients`` as ``{address, status}``).
MESSAGE_BOUNCED = "message.bounced"
#: A recipient reported a message an inbox sent as spam or abuse (``complaint``: ids,
#: ``type``, ``sub_type``, ``recipients`` as addresses).
MESSAGE_COMPLAINED = "message.complained"
#: A message an inbox sent left AgentMail (``send``: ids, ``recipients``).
MESSAGE_SENT = "message.sent"

#: The events about our own sent mail that feed the suppression list.
FEEDBACK_EVENT_TYPES: tuple[str, ...] = (MESSAGE_BOUNCED, MESSAGE_COMPLAINED)


def subscribed_event_types(*, suppression: bool, sent: bool = False) -> tuple[str, ...]:
    """The event types a configuration needs, in a stable order.

    * ``message.received`` always: the mail to answer (its ``.spam``, ``.blocked`` and
      ``.unauthenticated`` variants are separate types the service does not subscribe to).
    * ``message.bounced`` and ``message.complained`` when ``suppression`` is on
      (``AUTOREPLY_SUPPRESSION``): bounces and complaints about our replies feed the
      suppression list.
    * ``message.sent`` when ``sent``: for a configuration that must learn when a reply
      it did not send itself went out (a draft sent later, a delayed send). The settings
      that need it pass ``sent=True`` from ``service.registration.event_types``.
    """
    types = [MESSAGE_RECEIVED]
    if suppression:
        types += FEEDBACK_EVENT_TYPES
    if sent:
        types.append(MESSAGE_SENT)
    return tuple(types)


def is_received(event_type: str) -> bool:
    """True for ``message.received`` and its ``.spam``/``.blocked``/``.unauthenticated``
    variants: the events that carry a message and become a job.

    Any type that starts with ``message.received`` counts, as it always has: such an
    event without a message object is refused (400, the reason quoting its type), and
    one with a message is enqueued and skipped by the policy (``not_plain_received``)."""
    return event_type.startswith(MESSAGE_RECEIVED)
