"""A recording, scriptable stand-in for AgentMail behind ``AgentMailPort``.

For unit tests of the worker's own logic: it records every call in order with its
arguments (the reply exactly as sent, Idempotency-Key included) and answers the way
AgentMail does where the worker depends on it:

* a reply under a key already sent, with the same content, returns the original sent
  id and sends nothing (the same key with other content: 409, as AgentMail answers);
* labels are a set per message, changed atomically, returned after the change;
* ``get_message`` returns the full message registered with ``add_message``;
* ``get_thread`` returns the messages registered with ``add_to_thread``, one page,
  oldest first (a thread nobody added to is an empty page);
* ``create_draft`` keeps a reply draft; a create repeating a ``client_id`` already used
  in the inbox returns that draft unchanged and creates nothing, while the draft exists
  (sending or deleting it frees the ``client_id``), as AgentMail (and the sandbox,
  ``service/sandbox/drafts.py``) does;
* ``draft_exists`` is True until a person sends the draft (``send_draft``: the sent
  message joins the thread, in reply to the message, labelled ``sent``) or deletes it
  (``delete_draft``).

Each method can be scripted call by call (``script``): raise an ``ApiFailure`` (see
``failure``, ``in_flight`` and ``timed_out`` for the kinds the adapter produces),
do the call and then raise (the answer was lost: ``FailAfterSend``), or hang until
cancelled (``Hang``). An unscripted call succeeds.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from service.agentmail_port import AgentMailPort, ApiFailure, ThreadPage, is_transient
from service.models import PreparedReply

Method = Literal[
    "get_message", "update_labels", "reply", "get_thread", "create_draft", "draft_exists"
]
T = TypeVar("T")

_ACTIONS: dict[Method, str] = {
    "get_message": "get message",
    "update_labels": "update labels",
    "reply": "reply",
    "get_thread": "get thread",
    "create_draft": "create draft",
    "draft_exists": "get draft",
}


def failure(method: Method, status: int, *, retry_after: float | None = None) -> ApiFailure:
    """The ``ApiFailure`` the adapter raises for an HTTP ``status`` answer to ``method``."""
    return ApiFailure(
        f"{_ACTIONS[method]}: HTTP {status}",
        transient=is_transient(status),
        status=status,
        retry_after=retry_after,
    )


def in_flight() -> ApiFailure:
    """A reply's 409: a request with the same Idempotency-Key is still in progress."""
    return ApiFailure(
        "reply: HTTP 409: conflict A request with this Idempotency-Key is still in progress",
        transient=True,
        status=409,
    )


def timed_out(method: Method) -> ApiFailure:
    """What the adapter raises when the HTTP client's own timeout expires."""
    return ApiFailure(f"{_ACTIONS[method]}: timed out", transient=True)


@dataclass(frozen=True, slots=True)
class Fail:
    """Raise ``error`` without doing anything (a reply sends nothing)."""

    error: ApiFailure


@dataclass(frozen=True, slots=True)
class FailAfterSend:
    """Do the call, then raise ``error``: it happened, but its answer was lost."""

    error: ApiFailure


@dataclass(frozen=True, slots=True)
class Hang:
    """Never answer (until cancelled), after doing the call if ``after_send``.

    ``skip`` moves the event loop's clock that many seconds ahead first, so the
    caller's own deadline (``asyncio.timeout``) falls due at once instead of after a
    real wait. The loop of a test is its own, so nothing else is affected.
    """

    skip: float = 0.0
    after_send: bool = False


Step = Fail | FailAfterSend | Hang


@dataclass(frozen=True, slots=True)
class Call:
    """One call as the caller made it.

    ``message_id`` is the id the call names: the message's, the thread's for
    ``get_thread``, the draft's for ``draft_exists``.
    """

    method: Method
    inbox_id: str
    message_id: str
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    reply: PreparedReply | None = None
    #: ``create_draft``'s ``client_id`` (None for other calls).
    client_id: str | None = None

    @property
    def idempotency_key(self) -> str | None:
        """The reply's Idempotency-Key (None for other calls)."""
        return None if self.reply is None else self.reply.idempotency_key

    @property
    def body(self) -> bytes | None:
        """The reply's every field as bytes: equal bytes mean an identical request."""
        return None if self.reply is None else self.reply.to_json().encode()


@dataclass(frozen=True, slots=True)
class Draft:
    """A reply draft as ``create_draft`` made it."""

    draft_id: str
    inbox_id: str
    #: The message it answers.
    in_reply_to: str
    reply: PreparedReply
    client_id: str


class FakeAgentMail:
    """Satisfies ``AgentMailPort``; see the module docstring."""

    def __init__(self) -> None:
        #: Every call, in the order made (failed and replayed ones included).
        self.calls: list[Call] = []
        #: The replies that actually went out: one per Idempotency-Key.
        self.sent: list[Call] = []
        #: Labels per (inbox_id, message_id), as the last change left them.
        self.labels: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._messages: dict[tuple[str, str], dict[str, Any]] = {}
        self._threads: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        #: Reply drafts awaiting review, by draft id (sent or deleted ones are gone).
        self.drafts: dict[str, Draft] = {}
        #: Every draft ever created, in order: one per message unless a client_id was
        #: freed (the draft sent or deleted) and used again.
        self.created_drafts: list[Draft] = []
        self._sent_ids: dict[str, tuple[bytes | None, str]] = {}
        self._draft_ids: dict[tuple[str, str], str] = {}
        self._script: dict[Method, deque[Step]] = defaultdict(deque)

    def add_message(self, message: dict[str, Any]) -> None:
        """Make ``message`` (a full payload) available to ``get_message``."""
        self._messages[message["inbox_id"], message["message_id"]] = dict(message)

    def add_to_thread(self, message: dict[str, Any]) -> None:
        """Append ``message`` (its ``inbox_id``, ``thread_id``, ``message_id``,
        ``labels``) to its thread, as the newest message."""
        self._threads[message["inbox_id"], message["thread_id"]].append(dict(message))

    def send_draft(self, draft_id: str) -> str:
        """A person sends the draft from AgentMail: it becomes a sent message in the
        thread of the message it answers (which must have been added, with
        ``add_message`` or ``add_to_thread``), readable with ``get_message``, and the
        draft is gone. Returns the sent message's id."""
        draft = self._forget(draft_id)
        sent_id = f"<{draft_id}-sent@fake.agentmail.to>"
        message = {
            "inbox_id": draft.inbox_id,
            "thread_id": self._thread_of(draft.inbox_id, draft.in_reply_to),
            "message_id": sent_id,
            "labels": ["sent"],
            "in_reply_to": draft.in_reply_to,
            "to": [draft.reply.to],
            "text": draft.reply.text,
        }
        self.add_message(message)
        self.add_to_thread(message)
        return sent_id

    def delete_draft(self, draft_id: str) -> None:
        """A person deletes the draft unsent."""
        self._forget(draft_id)

    def script(self, method: Method, *steps: Step) -> None:
        """Queue what the next calls of ``method`` do, one step per call."""
        self._script[method].extend(steps)

    def scripted(self, method: Method) -> int:
        """How many steps of ``method`` are still queued."""
        return len(self._script[method])

    def called(self, method: Method) -> list[Call]:
        """The calls of ``method``, in order."""
        return [call for call in self.calls if call.method == method]

    # -- AgentMailPort ---------------------------------------------------------------

    async def get_message(self, inbox_id: str, message_id: str) -> dict[str, Any]:
        """The message added with ``add_message``; 404 for any other."""
        step = await self._before(Call("get_message", inbox_id, message_id))
        message = self._messages.get((inbox_id, message_id))
        if message is None:
            raise failure("get_message", 404)
        return await self._after(step, dict(message))

    async def update_labels(
        self,
        inbox_id: str,
        message_id: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
    ) -> list[str]:
        """Add, then remove, in one step; the labels after it, sorted."""
        call = Call("update_labels", inbox_id, message_id, tuple(add), tuple(remove))
        step = await self._before(call)
        labels = self.labels[inbox_id, message_id]
        labels.update(add)
        labels.difference_update(remove)
        return await self._after(step, sorted(labels))

    async def reply(self, inbox_id: str, message_id: str, reply: PreparedReply) -> str:
        """Send once per Idempotency-Key; the same request again returns the same id."""
        call = Call("reply", inbox_id, message_id, reply=reply)
        step = await self._before(call)
        known = self._sent_ids.get(reply.idempotency_key)
        if known is None:
            sent_id = f"<sent-{len(self.sent) + 1}@fake.agentmail.to>"
            self._sent_ids[reply.idempotency_key] = (call.body, sent_id)
            self.sent.append(call)
        elif known[0] != call.body:
            raise ApiFailure(
                "reply: HTTP 409: conflict This Idempotency-Key was already used for a "
                "different request",
                transient=True,
                status=409,
            )
        else:
            sent_id = known[1]
        return await self._after(step, sent_id)

    async def get_thread(
        self, inbox_id: str, thread_id: str, *, page_token: str | None = None
    ) -> ThreadPage:
        """The thread's messages added with ``add_to_thread``, in one page."""
        step = await self._before(Call("get_thread", inbox_id, thread_id))
        messages = [dict(m) for m in self._threads[inbox_id, thread_id]]
        return await self._after(step, ThreadPage(messages=messages, next_page_token=None))

    async def create_draft(
        self, inbox_id: str, message_id: str, reply: PreparedReply, *, client_id: str
    ) -> str:
        """A reply draft to ``message_id``; the existing one, unchanged, when the inbox
        has a draft under ``client_id``."""
        call = Call("create_draft", inbox_id, message_id, reply=reply, client_id=client_id)
        step = await self._before(call)
        draft_id = self._draft_ids.get((inbox_id, client_id))
        if draft_id is None:
            draft_id = f"draft-{len(self.created_drafts) + 1}"
            draft = Draft(draft_id, inbox_id, message_id, reply, client_id)
            self.drafts[draft_id] = draft
            self.created_drafts.append(draft)
            self._draft_ids[inbox_id, client_id] = draft_id
        return await self._after(step, draft_id)

    async def draft_exists(self, inbox_id: str, draft_id: str) -> bool:
        """Whether the draft is still there (not sent, not deleted)."""
        step = await self._before(Call("draft_exists", inbox_id, draft_id))
        draft = self.drafts.get(draft_id)
        return await self._after(step, draft is not None and draft.inbox_id == inbox_id)

    # -- drafts ----------------------------------------------------------------------

    def _forget(self, draft_id: str) -> Draft:
        """Remove the draft and free its client_id."""
        draft = self.drafts.pop(draft_id)
        del self._draft_ids[draft.inbox_id, draft.client_id]
        return draft

    def _thread_of(self, inbox_id: str, message_id: str) -> str:
        message = self._messages.get((inbox_id, message_id))
        if message is not None:
            return str(message["thread_id"])
        for (inbox, thread_id), messages in self._threads.items():
            if inbox == inbox_id and any(m["message_id"] == message_id for m in messages):
                return thread_id
        raise AssertionError(f"add {message_id} to the fake before sending a draft to it")

    # -- scripting -------------------------------------------------------------------

    async def _before(self, call: Call) -> Step | None:
        """Record ``call`` and take its step: fail or hang now if the step says so."""
        self.calls.append(call)
        queued = self._script[call.method]
        step = queued.popleft() if queued else None
        if isinstance(step, Fail):
            raise step.error
        if isinstance(step, Hang) and not step.after_send:
            await _hang(step.skip)
        return step

    async def _after(self, step: Step | None, result: T) -> T:
        """The call was done: answer ``result``, unless the step loses the answer."""
        if isinstance(step, FailAfterSend):
            raise step.error
        if isinstance(step, Hang):
            await _hang(step.skip)
        return result


if TYPE_CHECKING:
    # mypy --strict (``make lint``) checks this file: a port method the fake lacks, or
    # one whose signature drifted from ``AgentMailPort``'s, fails the lint here.
    _conforms: AgentMailPort = FakeAgentMail()


async def _hang(skip: float) -> None:
    """Wait until cancelled, first moving the running loop's clock ``skip`` seconds on."""
    if skip:
        loop = asyncio.get_running_loop()
        earlier = loop.time
        loop.time = lambda: earlier() + skip  # type: ignore[method-assign]
    await asyncio.Event().wait()
