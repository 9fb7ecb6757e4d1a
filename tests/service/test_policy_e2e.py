"""The reply policy and the templates inside the running service.

Reply loops between two services, limits that survive restarts, and templates that
are checked at startup and reloaded safely, all against real processes and the sandbox.
"""

from __future__ import annotations

import signal
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentmail import AsyncAgentMail

from tests.support import mail
from tests.support.deployment import Deployment, replies_to


async def send_between(sandbox: Any, sender: str, to: str, subject: str) -> str:
    """An agent's ordinary email from one sandbox inbox to another."""
    async with httpx.AsyncClient() as http:
        api: AsyncAgentMail = sandbox.sdk(httpx_client=http)
        sent = await api.inboxes.messages.send(sender, to=[to], subject=subject, text="Hello there")
    return sent.message_id


async def test_two_services_writing_to_each_other_stop_after_one_reply_each(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    """A and B each answer the other's first email once; the auto-replies end the exchange."""
    sandbox = sandbox_factory(inboxes=["a@agentmail.to", "b@agentmail.to"])
    with ExitStack() as stack:
        services = {}
        for inbox in ("a@agentmail.to", "b@agentmail.to"):
            name = inbox[0]
            deployment = Deployment(sandbox, tmp_path / name)
            deployment.folder.mkdir()
            stack.callback(deployment.stop)
            deployment.start(
                AUTOREPLY_INBOX_IDS=inbox,
                AUTOREPLY_WEBHOOK_CLIENT_ID=f"autoreply-{name}",
                AUTOREPLY_SENDER_COOLDOWN="1d",
            )
            services[inbox] = deployment
        await send_between(sandbox, "a@agentmail.to", "b@agentmail.to", "From A")
        await send_between(sandbox, "b@agentmail.to", "a@agentmail.to", "From B")
        # Each service sees the other's email, then the other's auto-reply.
        for deployment in services.values():
            jobs = deployment.wait_final(2)
            assert sorted(jobs.values()) == [("done", "replied"), ("skipped", "auto_submitted")]
        sandbox.admin.wait_for_deliveries(timeout=30)
        auto_replies = [e for e in sandbox.admin.sent() if e["operation"] == "messages.reply"]
        assert len(auto_replies) == 2
        assert {e["inbox_id"] for e in auto_replies} == {"a@agentmail.to", "b@agentmail.to"}


def test_a_reply_quoting_our_auto_reply_is_not_answered(
    sandbox: Any, deployment: Deployment
) -> None:
    """A follow-up in the same thread (e.g. a naive responder quoting us) hits the thread cap."""
    deployment.start(AUTOREPLY_SENDER_COOLDOWN="0")
    first = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="Help", text="Please help"
    )
    deployment.wait_final(1)
    [our_reply] = replies_to(sandbox.admin.sent(), first["message_id"])
    quoted = "\n".join(f"> {line}" for line in our_reply["text"].splitlines())
    follow_up = sandbox.admin.inject(
        from_="Jane <jane@example.com>",
        to=sandbox.inbox,
        subject="Re: Help",
        text=f"Thanks!\n\n{quoted}",
        in_reply_to=our_reply["message_id"],
    )
    jobs = deployment.wait_final(2)
    assert jobs[follow_up["message_id"]] == ("skipped", "thread_cap")
    assert len(sandbox.admin.sent()) == 1


def test_cooldown_and_thread_cap_survive_a_restart(sandbox: Any, deployment: Deployment) -> None:
    """The limits live in the store: a restarted service still remembers whom it answered."""
    service = deployment.start(AUTOREPLY_SENDER_COOLDOWN="1d")
    first = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="One", text="First"
    )
    deployment.wait_final(1)
    service.terminate()
    deployment.start(AUTOREPLY_SENDER_COOLDOWN="1d")
    new_thread = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="Two", text="Second"
    )
    same_thread = sandbox.admin.inject(
        from_="Other <other@example.com>",
        to=sandbox.inbox,
        subject="Re: One",
        text="Third",
        in_reply_to=first["message_id"],
    )
    jobs = deployment.wait_final(3)
    assert jobs[first["message_id"]] == ("done", "replied")
    assert jobs[new_thread["message_id"]] == ("skipped", "sender_cooldown")
    assert jobs[same_thread["message_id"]] == ("skipped", "thread_cap")


#: Slows every reply down, so each message of a burst is decided while the first reply
#: is still on its way: the window in which checking only sent replies let each through.
SLOW_REPLY_MS = 2000


@pytest.mark.slow
def test_a_burst_from_one_sender_gets_one_reply(sandbox: Any, deployment: Deployment) -> None:
    """Five messages from one sender, each in its own thread, arriving together with the
    default cooldown (1d): one reply, the other four skipped as ``sender_cooldown``."""
    deployment.start(AUTOREPLY_SENDER_COOLDOWN="1d")
    sandbox.admin.add_fault("messages.reply", latency_ms=SLOW_REPLY_MS)
    burst = mail.from_one_sender(sandbox)
    jobs = deployment.wait_final(5)
    assert (
        sorted(jobs[m["message_id"]] for m in burst)
        == [("done", "replied")] + [("skipped", "sender_cooldown")] * 4
    )
    [sent] = sandbox.admin.sent()
    assert sent["to"] == ["jane@example.com"]


@pytest.mark.slow
def test_a_burst_in_one_thread_gets_one_reply(sandbox: Any, deployment: Deployment) -> None:
    """Five messages in one thread from five senders (no cooldown), arriving together:
    one reply, the other four skipped as ``thread_cap``."""
    deployment.start(AUTOREPLY_SENDER_COOLDOWN="0", AUTOREPLY_THREAD_CAP="1")
    sandbox.admin.add_fault("messages.reply", latency_ms=SLOW_REPLY_MS)
    burst = mail.in_one_thread(sandbox)
    jobs = deployment.wait_final(5)
    assert (
        sorted(jobs[m["message_id"]] for m in burst)
        == [("done", "replied")] + [("skipped", "thread_cap")] * 4
    )
    assert len(sandbox.admin.sent()) == 1


@pytest.mark.slow
def test_a_retried_job_keeps_its_own_reservation(sandbox: Any, deployment: Deployment) -> None:
    """The reply is reserved, then the first label change fails (503): the retry finds
    the reservation as its own, not as an earlier reply to the sender, and replies."""
    deployment.start(AUTOREPLY_SENDER_COOLDOWN="1d")
    sandbox.admin.add_fault("messages.update", status=503, times=1)
    message = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="Hi", text="Hello"
    )
    jobs = deployment.wait_final(1)
    assert jobs[message["message_id"]] == ("done", "replied")
    assert len(replies_to(sandbox.admin.sent(), message["message_id"])) == 1
    assert "retry" in deployment.processes[0].log()


@pytest.mark.slow
def test_a_reservation_outlives_a_killed_service(sandbox: Any, deployment: Deployment) -> None:
    """SIGKILL while the first reply is being sent, before its record was written;
    restart; the sender writes again. The reservation is on disk: the new message is
    skipped, and the first one's retry replays the same send (one email in all)."""
    service = deployment.start(AUTOREPLY_SENDER_COOLDOWN="1d")
    sandbox.admin.add_fault("messages.reply", latency_ms=5000, times=1)
    first = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="One", text="First"
    )
    deployment.wait_until(
        lambda: sandbox.admin.requests()["in_flight"].get("messages.reply", 0) == 1,
        what="the first reply in flight",
    )
    service.kill()  # the sandbox still sends it; the service never learns
    deployment.start(AUTOREPLY_SENDER_COOLDOWN="1d")
    second = sandbox.admin.inject(
        from_="Jane <jane@example.com>", to=sandbox.inbox, subject="Two", text="Second"
    )
    jobs = deployment.wait_final(2)
    assert jobs[first["message_id"]] == ("done", "replied")
    assert jobs[second["message_id"]] == ("skipped", "sender_cooldown")
    assert len(replies_to(sandbox.admin.sent(), first["message_id"])) == 1
    assert len(sandbox.admin.sent()) == 1


def write_template(folder: Path, body: str) -> None:
    (folder / "default").mkdir(parents=True, exist_ok=True)
    (folder / "default" / "body.txt").write_text(body)


def test_broken_template_stops_startup_with_file_and_line(
    deployment: Deployment, tmp_path: Path
) -> None:
    """A template error is found before the service listens, reported as file:line."""
    templates = tmp_path / "templates"
    write_template(templates, "Hello {{ sender.name }\n")
    result = deployment.run("serve", "--port", "1", AUTOREPLY_TEMPLATES_DIR=str(templates))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert f"{templates / 'default' / 'body.txt'}:1:" in line


def test_sighup_reloads_templates_and_a_broken_edit_keeps_the_last_good_set(
    sandbox: Any, deployment: Deployment, tmp_path: Path
) -> None:
    """Edit, SIGHUP, reply with the new text; break it, SIGHUP, still reply with the good one."""
    templates = tmp_path / "templates"
    write_template(templates, "First version for {{ sender.name }}.\n")
    service = deployment.start(AUTOREPLY_TEMPLATES_DIR=str(templates))
    assert service.process is not None

    def reply_text(sender: str) -> str:
        result = sandbox.admin.inject(from_=sender, to=sandbox.inbox, subject="Hi", text="Hi")
        deployment.wait_until(
            lambda: len(replies_to(sandbox.admin.sent(), result["message_id"])) == 1,
            what="the reply",
        )
        [reply] = replies_to(sandbox.admin.sent(), result["message_id"])
        return str(reply["text"])

    assert reply_text("Ann <ann@example.com>") == "First version for Ann.\n"
    write_template(templates, "Second version for {{ sender.name }}.\n")
    service.process.send_signal(signal.SIGHUP)
    deployment.wait_until(lambda: "templates_reloaded" in service.log(), what="reload")
    assert reply_text("Ben <ben@example.com>") == "Second version for Ben.\n"
    write_template(templates, "Broken {{ sender.name\n")
    service.process.send_signal(signal.SIGHUP)
    deployment.wait_until(lambda: "templates_reload_failed" in service.log(), what="failure")
    assert "body.txt:1" in service.log()
    assert reply_text("Cy <cy@example.com>") == "Second version for Cy.\n"
