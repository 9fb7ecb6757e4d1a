"""Reply modes: how the reply to a message goes out once it is decided and rendered.

``send`` (the default) sends it at once; ``draft`` prepares it as a reply draft in the
message's inbox for a person (or an agent) to review and send from AgentMail. The global
default is ``AUTOREPLY_MODE``; a rule of ``rules.toml`` may set ``mode`` for what it
matches. Plain values only: the settings, the rules parser and the worker share them.
"""

from __future__ import annotations

import enum


class ReplyMode(enum.StrEnum):
    """One reply mode (the value of ``AUTOREPLY_MODE`` and of a rule's ``mode``)."""

    #: Send the reply at once (the default).
    SEND = "send"
    #: Prepare a reply draft and wait for a person to send (or delete) it.
    DRAFT = "draft"


MODES = tuple(mode.value for mode in ReplyMode)


def parse_mode(value: str) -> ReplyMode:
    """A mode from its name (case-insensitive); ValueError naming the choices."""
    try:
        return ReplyMode(value.strip().lower())
    except ValueError:
        raise ValueError(f"must be one of {', '.join(MODES)}, got {value!r}") from None
