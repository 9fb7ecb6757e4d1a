"""The suppression list in the running service: real ``autoreply serve`` processes, the
sandbox over HTTP bouncing and complaining about the replies they sent, SQLite and
PostgreSQL.

What a user relies on: an address whose reply bounced, or who reported a reply as spam,
is not answered again (``suppressed``) until an operator removes it; transient bounces
only count once they repeat; feedback about anything but our own replies, or the same
feedback twice, changes nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.store import open_store
from tests.conftest import SandboxHandle
from tests.support.deployment import STORES, Deployment, deployment_on, replies_to
from tests.support.service_process import ServiceProcess

JANE = "jane@example.com"


@pytest.fixture(name="deployed", params=STORES)
def _deployed(
    request: pytest.FixtureRequest, sandbox: SandboxHandle, tmp_path: Path
) -> Iterator[Deployment]:
    """A deployment on each database; started by the test."""
    with deployment_on(request.param, sandbox, tmp_path, prefix="suppress") as deployment:
        yield deployment


def mail_from(deployment: Deployment, sender: str, subject: str = "Hello") -> str:
    """Inject a message from ``sender``; wait until its job is final; its message id."""
    sandbox = deployment.sandbox
    finished = sum(state in ("done", "skipped", "dead") for state, _ in deployment.jobs().values())
    result = sandbox.admin.inject(from_=sender, to=sandbox.inbox, subject=subject, text="Hi")
    deployment.wait_final(finished + 1)
    message_id: str = result["message_id"]
    return message_id


def our_reply_to(deployment: Deployment, message_id: str) -> str:
    """The message id of the service's reply to ``message_id``."""
    [reply] = replies_to(deployment.sandbox.admin.sent(), message_id)
    reply_id: str = reply["message_id"]
    return reply_id


def answered(deployment: Deployment, message_id: str) -> tuple[str, str | None]:
    return deployment.jobs()[message_id]


def feedback_delivered(deployment: Deployment, event_id: str) -> list[int | None]:
    """Wait until every delivery of ``event_id`` is settled; their last statuses."""
    deployment.sandbox.admin.wait_for_deliveries(timeout=30)
    return [
        d["attempts"][-1]["status"]
        for d in deployment.sandbox.admin.deliveries()
        if d["event_id"] == event_id
    ]


def suppressions(deployment: Deployment) -> list[dict[str, Any]]:
    result = deployment.run("suppressions", "list", "--json")
    assert result.returncode == 0, result.stderr
    entries: list[dict[str, Any]] = json.loads(result.stdout)
    return entries


def metric(process: ServiceProcess, line_start: str) -> float | None:
    """The value of the first sample whose line starts with ``line_start``."""
    for line in httpx.get(f"{process.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return None


def test_a_bounced_reply_suppresses_the_address_until_removed(deployed: Deployment) -> None:
    """Bounce the reply to Jane: her next message is skipped, John's still answered;
    the bounce again (a retry, a second event) changes nothing; removing her entry
    restores replies."""
    service = deployed.start()
    sandbox = deployed.sandbox
    first = mail_from(deployed, JANE)
    assert answered(deployed, first) == ("done", "replied")
    reply_id = our_reply_to(deployed, first)

    bounced = sandbox.admin.bounce(sandbox.inbox, reply_id)
    assert feedback_delivered(deployed, bounced["event_id"]) == [202]
    [entry] = suppressions(deployed)
    assert entry["address"] == JANE
    assert (entry["inbox_id"], entry["cause"]) == (sandbox.inbox, "bounce")
    assert (entry["reason"], entry["message_id"]) == ("Permanent/General", reply_id)

    second = mail_from(deployed, JANE, "Again")
    assert answered(deployed, second) == ("skipped", "suppressed")
    john = mail_from(deployed, "john@example.com")
    assert answered(deployed, john) == ("done", "replied")
    assert replies_to(sandbox.admin.sent(), second) == []

    # A Svix retry of the bounce, and a second event about the same bounce.
    [delivery] = [d for d in sandbox.admin.deliveries() if d["event_id"] == bounced["event_id"]]
    retry = sandbox.admin.redeliver(delivery["delivery_id"], new_svix_id=True)
    assert feedback_delivered(deployed, retry["event_id"]) == [202, 200]
    second_event = sandbox.admin.redeliver(delivery["delivery_id"], new_event_id=True)
    assert feedback_delivered(deployed, second_event["event_id"]) == [202]
    assert suppressions(deployed) == [entry]

    assert metric(service, 'autoreply_suppressions{cause="bounce"}') == 1
    assert metric(service, 'autoreply_suppressions_added_total{cause="bounce"}') == 1
    assert metric(service, 'autoreply_replies_skipped_total{reason="suppressed"}') == 1
    status = deployed.run("status", "--no-api")
    assert "Suppression list: 1 (bounce 1)" in status.stdout, status.stdout

    removed = deployed.run("suppressions", "remove", JANE)
    assert removed.returncode == 0, removed.stderr
    assert suppressions(deployed) == []
    third = mail_from(deployed, JANE, "Third")
    assert answered(deployed, third) == ("done", "replied")
    assert metric(service, 'autoreply_suppressions{cause="bounce"}') == 0


def test_a_complaint_suppresses_the_address(deployed: Deployment) -> None:
    deployed.start()
    sandbox = deployed.sandbox
    first = mail_from(deployed, JANE)
    complaint = sandbox.admin.complain(sandbox.inbox, our_reply_to(deployed, first))
    assert feedback_delivered(deployed, complaint["event_id"]) == [202]
    [entry] = suppressions(deployed)
    assert (entry["cause"], entry["reason"]) == ("complaint", "abuse/spam")
    second = mail_from(deployed, JANE, "Again")
    assert answered(deployed, second) == ("skipped", "suppressed")


def test_transient_bounces_suppress_only_at_the_limit(deployment: Deployment) -> None:
    """With a limit of 2, the first transient bounce leaves Jane answered; the second,
    of another reply, suppresses her."""
    deployment.start(AUTOREPLY_TRANSIENT_BOUNCE_LIMIT="2")
    sandbox = deployment.sandbox

    def bounce_the_reply_to(message_id: str) -> None:
        reply_id = our_reply_to(deployment, message_id)
        bounced = sandbox.admin.bounce(
            sandbox.inbox, reply_id, type_="Transient", sub_type="MailboxFull"
        )
        assert feedback_delivered(deployment, bounced["event_id"]) == [202]

    first = mail_from(deployment, JANE, "One")
    bounce_the_reply_to(first)
    assert suppressions(deployment) == []
    second = mail_from(deployment, JANE, "Two")
    assert answered(deployment, second) == ("done", "replied")
    bounce_the_reply_to(second)
    [entry] = suppressions(deployment)
    assert (entry["cause"], entry["reason"]) == ("transient_bounces", "Transient/MailboxFull")
    third = mail_from(deployment, JANE, "Three")
    assert answered(deployment, third) == ("skipped", "suppressed")


async def test_a_bounce_of_a_message_that_is_not_our_reply_changes_nothing(
    deployment: Deployment, agentmail: Any
) -> None:
    """A message someone sent from the inbox by hand bounces: recorded, ignored."""
    deployment.start()
    sandbox = deployment.sandbox
    by_hand = await agentmail.inboxes.messages.send(sandbox.inbox, to=[JANE], text="Hi")
    bounced = sandbox.admin.bounce(sandbox.inbox, by_hand.message_id)
    assert feedback_delivered(deployment, bounced["event_id"]) == [200]
    assert suppressions(deployment) == []
    first = mail_from(deployment, JANE)
    assert answered(deployment, first) == ("done", "replied")


def test_the_suppressions_verbs(deployment: Deployment) -> None:
    """list, add and remove, with --json, --inbox and --reason; bad input is one line
    and exit 2; an address added by hand is skipped by the running service."""
    assert deployment.run("migrate").returncode == 0
    empty = deployment.run("suppressions", "list")
    assert (empty.returncode, empty.stdout.strip()) == (0, "no suppressed addresses")

    for bad in ("Jane <jane@example.com>", "jane", "a@b@example.com"):
        refused = deployment.run("suppressions", "add", bad)
        assert refused.returncode == 2
        assert refused.stderr.startswith("autoreply: ADDRESS: ")
        assert "not an email address" in refused.stderr
        assert "Traceback" not in refused.stderr
    refused = deployment.run("suppressions", "add", JANE, "--inbox", "not an inbox")
    assert (refused.returncode, refused.stderr.startswith("autoreply: --inbox: ")) == (2, True)

    added = deployment.run("suppressions", "add", "Jane@Example.com", "--reason", "asked us")
    assert (added.returncode, added.stdout.strip()) == (0, f"suppressed {JANE} for every inbox")
    again = deployment.run("suppressions", "add", JANE)
    assert again.returncode == 0
    assert "already suppressed" in again.stdout
    inbox = deployment.sandbox.inbox
    only = deployment.run("suppressions", "add", "john@example.com", "--inbox", inbox)
    assert only.returncode == 0, only.stderr
    listed = deployment.run("suppressions", "list")
    assert f"{JANE}  every inbox  manual: asked us" in listed.stdout
    assert f"john@example.com  {inbox}  manual" in listed.stdout
    assert listed.stdout.strip().endswith("2 suppressed")
    entries = {e["address"]: e for e in suppressions(deployment)}
    assert entries[JANE]["inbox_id"] == "*"
    assert entries[JANE]["reason"] == "asked us"
    assert entries["john@example.com"]["inbox_id"] == inbox

    deployment.start()
    skipped = mail_from(deployment, JANE)
    assert answered(deployment, skipped) == ("skipped", "suppressed")

    partial = deployment.run("suppressions", "remove", JANE, "--inbox", inbox)
    assert partial.returncode == 1
    # Her entry for every inbox still suppresses her there: the message says so.
    assert partial.stderr.strip() == (
        f"autoreply: {JANE} has no entry for {inbox}, but is suppressed for every inbox; "
        "remove it without --inbox"
    )
    removed = deployment.run("suppressions", "remove", "JANE@example.com")
    assert (removed.returncode, removed.stdout.strip()) == (0, f"removed 1 entry for {JANE}")
    gone = deployment.run("suppressions", "remove", JANE)
    assert gone.returncode == 1
    assert [e["address"] for e in suppressions(deployment)] == ["john@example.com"]


def test_the_verbs_refuse_what_no_one_could_match_and_remove_whatever_is_listed(
    deployment: Deployment,
) -> None:
    """An address or reason with a control character or a mis-encoded byte is one line
    and exit 2 (it was a traceback, or an entry printed as jane@example.com that never
    matched her). Any address the list holds can be removed, even one ``add`` refuses:
    a bounce suppresses whatever address our reply went to (here one without a dot in
    its domain, written through the store as a bounce writes it)."""
    assert deployment.run("migrate").returncode == 0
    for args in (
        ("add", "jane\x01@example.com"),
        ("add", "jane\udcff@example.com"),
        ("remove", "jane\udcff@example.com"),
        ("add", JANE, "--reason", "asked \udcff"),
    ):
        refused = deployment.run("suppressions", *args)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith("autoreply: ")
        assert "Traceback" not in refused.stderr
    assert suppressions(deployment) == []

    async def listed_by_a_bounce() -> None:
        store = open_store(deployment.database_url)
        await store.open()
        try:
            await store.add_suppression(inbox_id="*", address="ops@intranet", reason=None, now=0)
        finally:
            await store.close()

    asyncio.run(listed_by_a_bounce())
    removed = deployment.run("suppressions", "remove", "OPS@intranet")
    assert (removed.returncode, removed.stdout.strip()) == (0, "removed 1 entry for ops@intranet")
    assert suppressions(deployment) == []
