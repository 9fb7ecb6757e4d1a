"""Draft mode end to end: real ``autoreply serve`` processes, the sandbox over HTTP, on
SQLite and on PostgreSQL. The sandbox's record (its drafts, what it sent, every label
PATCH) is the ground truth; a person's actions are the sandbox's console verbs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.sandbox import SandboxError
from tests.support.deployment import STORES, Deployment, deployment_on, replies_to

DRAFT = {"AUTOREPLY_MODE": "draft"}
#: Long enough that only the message.sent event can finish a job within the test.
NO_CHECK = {"AUTOREPLY_DRAFT_CHECK_INTERVAL": "1h"}


@pytest.fixture(name="dep", params=STORES)
def _dep(request: pytest.FixtureRequest, sandbox: Any, tmp_path: Path) -> Iterator[Deployment]:
    """Service processes on a fresh SQLite file or PostgreSQL schema, stopped afterwards."""
    with deployment_on(request.param, sandbox, tmp_path, prefix="drafts") as deployment:
        yield deployment


def inject(sandbox: Any, n: int, *, domain: str = "example.com", **fields: Any) -> list[str]:
    """``n`` inbound emails from distinct senders; their message ids."""
    return [
        sandbox.admin.inject(
            from_=f"Sender {i} <sender{i}@{domain}>",
            to=sandbox.inbox,
            subject=f"Order {i}",
            text=f"Where is order {i}?",
            **fields,
        )["message_id"]
        for i in range(n)
    ]


def drafts_for(sandbox: Any, message_id: str) -> list[dict[str, Any]]:
    return [d for d in sandbox.admin.drafts() if d.get("in_reply_to") == message_id]


def label_changes(sandbox: Any, message_id: str) -> list[tuple[list[str], list[str]]]:
    return [
        (c["added"], c["removed"])
        for c in sandbox.admin.label_changes()
        if c["message_id"] == message_id
    ]


def labels_of(sandbox: Any, message_id: str) -> list[str]:
    [last] = [c for c in sandbox.admin.label_changes() if c["message_id"] == message_id][-1:]
    return list(last["labels_after"])


def test_a_draft_awaits_review_then_its_send_relabels_once(sandbox: Any, dep: Deployment) -> None:
    """The reply becomes one reply draft (to the sender, in reply to the message), the
    message is labelled unreplied + autoreply-draft and nothing is sent. A person sends
    it from the console: the message.sent event alone relabels the original in one PATCH
    and finishes the job; sending it again sends nothing."""
    dep.start(**DRAFT, **NO_CHECK)
    [webhook] = sandbox.admin.webhooks()
    assert "message.sent" in webhook["event_types"]
    [message_id] = inject(sandbox, 1, cc=["other@example.net"])
    dep.wait_states([message_id], "drafted")

    [draft] = drafts_for(sandbox, message_id)
    assert draft["to"] == ["sender0@example.com"]
    assert draft["subject"] == "Re: Order 0"
    assert draft["client_id"].startswith("autoreply-draft-")
    assert "Order 0" in draft["text"]
    assert sandbox.admin.sent() == []
    assert label_changes(sandbox, message_id) == [
        (["unreplied"], []),
        (["autoreply-draft"], []),
    ]
    assert dict(dep.query("SELECT message_id, draft_id FROM jobs")) == {
        message_id: draft["draft_id"]
    }

    sent = sandbox.admin.send_draft(draft["draft_id"])
    dep.wait_states([message_id], "done")
    assert dep.jobs()[message_id] == ("done", "replied")
    assert label_changes(sandbox, message_id)[2:] == [
        (["replied"], ["unreplied", "autoreply-draft"])
    ]
    assert labels_of(sandbox, message_id) == ["received", "unread", "replied"]
    [reply] = replies_to(sandbox.admin.sent(), message_id)
    assert reply["message_id"] == sent["message_id"]
    assert reply["draft_id"] == draft["draft_id"]
    assert dep.query("SELECT sent_message_id FROM jobs") == [(sent["message_id"],)]
    sent_events = [d for d in sandbox.admin.deliveries() if d["event_type"] == "message.sent"]
    assert [a["status"] for d in sent_events for a in d["attempts"]] == [202]

    # Sending it again sends nothing: the draft is gone, and the CLI says so.
    with pytest.raises(SandboxError, match="404"):
        sandbox.admin.send_draft(draft["draft_id"])
    again = dep.run("drafts", "send", draft["draft_id"])
    assert again.returncode == 1
    assert "no draft" in again.stderr
    assert len(sandbox.admin.sent()) == 1
    assert len(label_changes(sandbox, message_id)) == 3


def test_drafts_cli_lists_and_sends_with_an_idempotency_key(sandbox: Any, dep: Deployment) -> None:
    """``autoreply drafts list`` shows what awaits review; ``drafts send --all`` sends each
    once under an Idempotency-Key, and the jobs finish as replied."""
    dep.start(**DRAFT, **NO_CHECK)
    message_ids = inject(sandbox, 3)
    dep.wait_states(message_ids, "drafted")
    listing = dep.run("drafts", "list")
    assert listing.returncode == 0, listing.stderr
    assert "3 draft(s) awaiting review" in listing.stdout
    for message_id in message_ids:
        [draft] = drafts_for(sandbox, message_id)
        assert draft["draft_id"] in listing.stdout
        assert f"in reply to {message_id}" in listing.stdout
    status = dep.run("status", "--no-api")
    assert "Drafts awaiting review: 3" in status.stdout

    sent = dep.run("drafts", "send", "--all")
    assert sent.returncode == 0, sent.stderr
    dep.wait_states(message_ids, "done")
    emails = sandbox.admin.sent()
    assert sorted(e["in_reply_to"] for e in emails) == sorted(message_ids)
    assert all(e["idempotency_key"].startswith("autoreply-draft-send-") for e in emails)
    for message_id in message_ids:
        assert labels_of(sandbox, message_id) == ["received", "unread", "replied"]
    assert dep.run("drafts", "list").stdout.strip() == "no drafts awaiting review"


def test_a_deleted_draft_leaves_the_message_unreplied_and_the_job_discarded(
    sandbox: Any, dep: Deployment
) -> None:
    """Nobody sends it: the periodic check finds the draft gone and no reply in the
    thread. The message keeps unreplied (the draft label goes), nothing is sent, and
    ``autoreply status`` shows the job as discarded."""
    dep.start(**DRAFT, AUTOREPLY_DRAFT_CHECK_INTERVAL="1s")
    [message_id] = inject(sandbox, 1)
    dep.wait_states([message_id], "drafted")
    [draft] = drafts_for(sandbox, message_id)
    sandbox.admin.delete_draft(draft["draft_id"])
    dep.wait_states([message_id], "discarded")
    assert dep.jobs()[message_id] == ("discarded", "discarded")
    assert sandbox.admin.sent() == []
    assert label_changes(sandbox, message_id)[-1] == ([], ["autoreply-draft"])
    assert labels_of(sandbox, message_id) == ["received", "unread", "unreplied"]
    status = dep.run("status", "--no-api")
    assert status.returncode == 0, status.stderr
    assert "Discarded drafts: 1" in status.stdout
    assert f"discarded  {message_id}" in status.stdout


def test_a_lost_sent_event_is_made_up_by_the_check(sandbox: Any, dep: Deployment) -> None:
    """The message.sent event never arrives (deliveries dropped): the periodic check sees
    the draft gone and finds its reply in the thread, and relabels all the same."""
    dep.start(**DRAFT, AUTOREPLY_DRAFT_CHECK_INTERVAL="1s")
    [message_id] = inject(sandbox, 1)
    dep.wait_states([message_id], "drafted")
    [webhook] = sandbox.admin.webhooks()
    sandbox.admin.drop_deliveries(webhook["webhook_id"])
    [draft] = drafts_for(sandbox, message_id)
    sandbox.admin.send_draft(draft["draft_id"])
    dep.wait_states([message_id], "done")
    assert labels_of(sandbox, message_id) == ["received", "unread", "replied"]
    assert len(sandbox.admin.sent()) == 1


def test_a_person_answering_in_their_own_words_is_not_the_draft_sent(
    sandbox: Any, dep: Deployment
) -> None:
    """While the draft awaits review a person answers the message directly: the job
    keeps waiting on its draft (still there, still sendable, still listed), and the
    person's message is not recorded as the auto-reply. When the reviewer then sends
    the draft, that is the reply the job records."""
    dep.start(**DRAFT, **NO_CHECK)
    [message_id] = inject(sandbox, 1)
    dep.wait_states([message_id], "drafted")
    [draft] = drafts_for(sandbox, message_id)
    person = sandbox.admin.reply(message_id=message_id, text="Sam here, on it.")

    def sent_event_acknowledged() -> bool:
        events = [d for d in sandbox.admin.deliveries() if d["event_type"] == "message.sent"]
        return any(a["status"] < 300 for d in events for a in d["attempts"])

    dep.wait_until(sent_event_acknowledged, what="the message.sent event acknowledged")

    def settled() -> bool:
        [(state, hint)] = dep.query("SELECT state, sent_hint FROM jobs")
        return state == "done" or (state == "drafted" and hint is None)

    dep.wait_until(settled, what="the job to look at the event")
    assert dep.jobs()[message_id][0] == "drafted"
    assert dep.query("SELECT sent_message_id FROM jobs") == [(None,)]
    assert [d["draft_id"] for d in drafts_for(sandbox, message_id)] == [draft["draft_id"]]
    assert "autoreply-draft" in labels_of(sandbox, message_id)

    sent = sandbox.admin.send_draft(draft["draft_id"])
    dep.wait_states([message_id], "done")
    assert dep.query("SELECT sent_message_id FROM jobs") == [(sent["message_id"],)]
    assert sent["message_id"] != person["message_id"]


def test_a_draft_is_recorded_as_soon_as_it_is_created(sandbox: Any, dep: Deployment) -> None:
    """Label writes fail (503) while the draft is being created: nothing between the
    create and the job recording its draft can fail, so the draft is not left unrecorded
    for a retry to create again. A reviewer deleting it then is final: the job ends
    discarded and no draft comes back."""
    sandbox.admin.add_fault("drafts.create", latency_ms=2000)
    dep.start(**DRAFT, AUTOREPLY_DRAFT_CHECK_INTERVAL="1s")
    [message_id] = inject(sandbox, 1)
    dep.wait_until(
        lambda: sandbox.admin.requests()["in_flight"].get("drafts.create", 0) == 1,
        what="the draft create in flight",
    )
    sandbox.admin.add_fault("messages.update", status=503)

    dep.wait_states([message_id], "drafted", timeout=30)
    [draft] = drafts_for(sandbox, message_id)
    assert dep.query("SELECT draft_id FROM jobs") == [(draft["draft_id"],)]

    sandbox.admin.clear_faults()
    sandbox.admin.delete_draft(draft["draft_id"])
    dep.wait_states([message_id], "discarded")
    assert drafts_for(sandbox, message_id) == []
    assert sandbox.admin.sent() == []


def test_a_draft_that_cannot_be_created_leaves_no_draft_label(
    sandbox: Any, dep: Deployment
) -> None:
    """AgentMail refuses the draft for good (400): the job is dead-lettered, and the
    message, labelled before the create, does not keep a label saying a draft awaits
    review; it stays unreplied for a person to see."""
    sandbox.admin.add_fault("drafts.create", status=400)
    dep.start(**DRAFT, **NO_CHECK)
    [message_id] = inject(sandbox, 1)
    dep.wait_states([message_id], "dead")
    assert sandbox.admin.drafts() == []
    assert label_changes(sandbox, message_id) == [
        (["unreplied"], []),
        (["autoreply-draft"], []),
        ([], ["autoreply-draft"]),
    ]
    assert labels_of(sandbox, message_id) == ["received", "unread", "unreplied"]


def test_a_storm_and_a_kill_between_creating_and_recording_give_one_draft(
    sandbox: Any, dep: Deployment
) -> None:
    """Five copies of every delivery at once, and SIGKILL while the drafts are being
    created (the sandbox finishes each create, its answer lost): after a restart each
    message has exactly one draft, the one its job records."""
    sandbox.admin.add_fault("drafts.create", latency_ms=2000)
    service = dep.start(**DRAFT, **NO_CHECK, AUTOREPLY_JOB_LEASE_SECONDS="5")
    message_ids = inject(sandbox, 4, copies=5)
    dep.wait_until(
        lambda: sandbox.admin.requests()["in_flight"].get("drafts.create", 0) == 4,
        timeout=30,
        what="every draft create in flight",
    )
    service.kill()
    dep.wait_until(lambda: len(sandbox.admin.drafts()) == 4, what="the creates to finish")
    sandbox.admin.clear_faults()
    dep.start(**DRAFT, **NO_CHECK, AUTOREPLY_JOB_LEASE_SECONDS="5")
    dep.wait_states(message_ids, "drafted", timeout=90)
    rows = dict(dep.query("SELECT message_id, draft_id FROM jobs"))
    for message_id in message_ids:
        [draft] = drafts_for(sandbox, message_id)
        assert rows[message_id] == draft["draft_id"]
    assert len(sandbox.admin.drafts()) == 4
    assert sandbox.admin.sent() == []
    creates = sandbox.admin.requests()["operations"]["drafts.create"]
    assert creates.get("200", 0) >= 8  # the lost answers were asked again, same drafts


def test_rules_choose_the_mode_per_message(sandbox: Any, dep: Deployment) -> None:
    """Key accounts get a draft for review; everyone else is answered at once. A rule
    with draft mode is enough for the webhook to subscribe to message.sent."""
    templates = dep.folder / "templates"
    templates.mkdir()
    (templates / "rules.toml").write_text(
        '[[rule]]\nname = "key accounts"\nsender = "@vip.example"\ntemplate = "default"\n'
        'mode = "draft"\n'
    )
    dep.start(AUTOREPLY_TEMPLATES_DIR=str(templates), **NO_CHECK)
    [webhook] = sandbox.admin.webhooks()
    assert "message.sent" in webhook["event_types"]
    [vip] = inject(sandbox, 1, domain="vip.example")
    [plain] = inject(sandbox, 1, domain="example.org")
    dep.wait_states([vip], "drafted")
    dep.wait_states([plain], "done")
    assert [e["in_reply_to"] for e in sandbox.admin.sent()] == [plain]
    assert [d["in_reply_to"] for d in sandbox.admin.drafts()] == [vip]
    # The plain reply's own message.sent event is recorded and ignored.
    statuses = {
        a["status"]
        for d in sandbox.admin.deliveries()
        if d["event_type"] == "message.sent"
        for a in d["attempts"]
    }
    assert statuses == {200}


def test_send_mode_alone_does_not_subscribe_to_sent_events(sandbox: Any, dep: Deployment) -> None:
    """Without draft mode anywhere the webhook stays without message.sent."""
    dep.start()
    [webhook] = sandbox.admin.webhooks()
    assert "message.sent" not in webhook["event_types"]


def test_a_bad_mode_stops_startup_naming_the_setting(sandbox: Any, dep: Deployment) -> None:
    result = dep.run("serve", AUTOREPLY_MODE="later")
    assert result.returncode == 2
    assert "AUTOREPLY_MODE" in result.stderr
    assert "send, draft" in result.stderr
