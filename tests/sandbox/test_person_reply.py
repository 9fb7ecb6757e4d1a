"""Answering a message "as a person": the admin API, its clients and the CLI verb.

The answer must be indistinguishable, at the API, from a reply through
``POST .../messages/{id}/reply``: a message labelled ``sent`` in the thread after the
inbound one (read back with the real SDK), in the sent log, and a ``message.sent`` event
exactly as the SDK types it.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from agentmail.events.types.message_sent_event import MessageSentEvent
from agentmail.threads.types.thread import Thread

from service.cli import main
from service.sandbox import SandboxError
from tests.sandbox.conftest import create_webhook, strict
from tests.support.receiver import verify


def test_a_person_reply_is_a_sent_message_in_the_thread_with_its_event(
    sandbox: Any, receiver: Any, raw: httpx.Client
) -> None:
    webhook = create_webhook(raw, receiver.url, ["message.sent"])
    inbound = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="Help", text="Please"
    )
    answer = sandbox.admin.reply(message_id=inbound["message_id"], text="On it - Sam")
    assert answer["in_reply_to"] == inbound["message_id"]
    assert answer["thread_id"] == inbound["thread_id"]
    assert answer["inbox_id"] == sandbox.inbox

    thread = strict(Thread, raw.get(f"/v0/threads/{inbound['thread_id']}").json())
    assert [m.message_id for m in thread.messages] == [
        inbound["message_id"],
        answer["message_id"],
    ]
    person = thread.messages[-1]
    assert "sent" in person.labels
    assert person.to == ["Jane <jane@example.com>"]
    assert person.subject == "Re: Help"
    assert person.text == "On it - Sam"

    [sent] = sandbox.admin.sent()
    assert (sent["operation"], sent["idempotency_key"]) == ("messages.reply", None)
    assert sent["in_reply_to"] == inbound["message_id"]

    [request] = receiver.wait_for(1)
    event = strict(MessageSentEvent, verify(request, webhook["secret"]))
    assert event.send.message_id == answer["message_id"]
    assert event.send.thread_id == inbound["thread_id"]
    assert event.send.recipients == ["Jane <jane@example.com>"]


def test_a_thread_id_answers_its_newest_received_message(sandbox: Any) -> None:
    first = sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox, subject="Q")
    second = sandbox.admin.inject(
        from_="b@example.com", to=sandbox.inbox, subject="Re: Q", in_reply_to=first["message_id"]
    )
    answer = sandbox.admin.reply(thread_id=first["thread_id"])
    assert answer["in_reply_to"] == second["message_id"]
    again = sandbox.admin.reply(thread_id=first["thread_id"], text="and more")
    assert again["in_reply_to"] == second["message_id"]
    assert [s["text"] for s in sandbox.admin.sent()] == ["Thanks, I'm on it.", "and more"]


def test_bad_person_replies_are_clear_4xx(sandbox: Any) -> None:
    inbound = sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox)
    cases = [
        ({}, 400, "exactly one of message_id and thread_id"),
        ({"message_id": inbound["message_id"], "thread_id": inbound["thread_id"]}, 400, ""),
        ({"message_id": "<nope@example.com>"}, 404, ""),
        ({"thread_id": "thd_nope"}, 404, ""),
        ({"message_id": inbound["message_id"], "inbox_id": "nobody@agentmail.to"}, 404, ""),
    ]
    for fields, status, text in cases:
        with pytest.raises(SandboxError) as caught:
            sandbox.admin.reply(**fields)
        assert caught.value.status == status, fields
        assert text in str(caught.value)
    assert sandbox.admin.sent() == []


def test_reply_verb(sandbox: Any, capsys: pytest.CaptureFixture[str]) -> None:
    inbound = sandbox.admin.inject(from_="a@example.com", to=sandbox.inbox, subject="Q")
    code = main(
        ["sandbox", "reply", "--url", sandbox.url, "--message-id", inbound["message_id"],
         "--text", "Answered by hand"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert re.fullmatch(
        rf"replied <\S+> from {re.escape(sandbox.inbox)} to {re.escape(inbound['message_id'])} "
        rf"\(thread {inbound['thread_id']}\)\n",
        out,
    )
    [sent] = sandbox.admin.sent()
    assert sent["text"] == "Answered by hand"
    assert main(["sandbox", "reply", "--url", sandbox.url, "--thread-id", "thd_nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: HTTP 404")
    assert len(err.strip().splitlines()) == 1
