"""``autoreply sandbox``: the server as a real process, and the verbs against a sandbox."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from queue import Empty, Queue
from typing import Any

import httpx
import pytest

from service.cli import main
from tests.sandbox.conftest import create_webhook

BANNER = re.compile(r"^AgentMail sandbox on (http://\S+) - API key (\S+) - inboxes (.+) \(Ctrl-C")


@dataclass
class Process:
    """A running ``autoreply sandbox`` and the URL from its banner."""

    popen: subprocess.Popen[str]
    url: str
    banner: str


def _first_line(popen: subprocess.Popen[str], timeout: float) -> str:
    lines: Queue[str] = Queue()
    assert popen.stdout is not None
    stdout = popen.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except Empty:
        return ""


@contextmanager
def sandbox_process(*args: str) -> Iterator[Process]:
    """Start ``python -m service sandbox ARGS``; stop it with SIGINT (Ctrl-C) at the end."""
    popen = subprocess.Popen(
        [sys.executable, "-m", "service", "sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AUTOREPLY_")},
    )
    try:
        line = _first_line(popen, timeout=20)
        match = BANNER.match(line)
        assert match, f"no banner line, got {line!r}"
        yield Process(popen, match.group(1), line)
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)
            try:
                popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        for stream in (popen.stdout, popen.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.slow
def test_server_process_serves_and_stops_on_ctrl_c() -> None:
    with sandbox_process(
        "--port", "0", "--inbox", "a@agentmail.to", "--inbox", "b@agentmail.to",
        "--api-key", "am_cli", "--time-scale", "0.001",
    ) as process:  # fmt: skip
        assert "am_cli" in process.banner
        assert "a@agentmail.to, b@agentmail.to" in process.banner
        headers = {"Authorization": "Bearer am_cli"}
        inboxes = httpx.get(f"{process.url}/v0/inboxes", headers=headers).json()
        assert sorted(i["inbox_id"] for i in inboxes["inboxes"]) == [
            "a@agentmail.to",
            "b@agentmail.to",
        ]
        second = subprocess.run(
            [sys.executable, "-m", "service", "sandbox", "--port", process.url.rsplit(":", 1)[1]],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 1
        assert second.stderr.strip().splitlines()[-1].startswith("error: cannot listen on")
        assert "Traceback" not in second.stderr
        process.popen.send_signal(signal.SIGINT)
        assert process.popen.wait(timeout=15) == 0


def test_bad_inbox_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "--inbox", "not an address", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1


def test_send_verb(
    sandbox: Any, receiver: Any, raw: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    create_webhook(raw, receiver.url)
    code = main(
        [
            "sandbox", "send", "--url", sandbox.url, "--from", "Jane <jane@example.com>",
            "--to", sandbox.inbox, "--subject", "Hi", "--text", "Hello",
            "--header", "Auto-Submitted: auto-replied", "--header", "List-Id: <l.example.com>",
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    message_id = re.search(r"^message (<\S+>) in ", out, re.MULTILINE)
    assert message_id
    assert re.search(r"^event evt_\S+, 1 deliveries$", out, re.MULTILINE)
    [request] = receiver.wait_for(1)
    message = request.json()["message"]
    assert message["message_id"] == message_id.group(1)
    assert message["headers"]["Auto-Submitted"] == "auto-replied"
    assert message["headers"]["List-Id"] == "<l.example.com>"


def test_read_back_verbs_and_env_url(
    sandbox: Any,
    raw: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AUTOREPLY_SANDBOX_URL", sandbox.url)
    assert main(["sandbox", "sent"]) == 0
    assert capsys.readouterr().out.strip() == "no emails sent"
    create_webhook(raw, "http://127.0.0.1:9/closed")
    assert (
        main(["sandbox", "send", "--from", "a@example.com", "--to", sandbox.inbox, "--json"]) == 0
    )
    injected = json.loads(capsys.readouterr().out)
    raw.post(
        f"/v0/inboxes/{sandbox.inbox}/messages/{injected['message_id']}/reply",
        json={"text": "ok"},
        headers={"Idempotency-Key": "cli-1"},
    )
    assert main(["sandbox", "sent"]) == 0
    line = capsys.readouterr().out.strip()
    assert "messages.reply" in line
    assert "key=cli-1" in line
    assert main(["sandbox", "deliveries"]) == 0
    assert injected["deliveries"][0]["delivery_id"] in capsys.readouterr().out
    assert main(["sandbox", "deliveries", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["event_id"] == injected["event_id"]
    assert main(["sandbox", "reset"]) == 0
    assert capsys.readouterr().out.strip() == "sandbox reset"
    assert sandbox.admin.deliveries() == []


def test_verbs_fail_cleanly(sandbox: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "sent", "--url", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: sandbox not reachable at http://127.0.0.1:9")
    assert len(err.strip().splitlines()) == 1
    code = main(
        [
            "sandbox",
            "send",
            "--url",
            sandbox.url,
            "--from",
            "a@example.com",
            "--to",
            "x@example.com",
        ]
    )
    assert code == 1
    assert capsys.readouterr().err.startswith("error: HTTP 400")
    code = main(
        [
            "sandbox", "send", "--url", sandbox.url, "--from", "a@example.com",
            "--to", sandbox.inbox, "--header", "no colon",
        ]
    )  # fmt: skip
    assert code == 1
    assert "--header" in capsys.readouterr().err


def test_missed_webhook_verbs(
    sandbox: Any, raw: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--url", sandbox.url]
    assert main(["sandbox", "webhooks", *url]) == 0
    assert capsys.readouterr().out.strip() == "no webhooks"
    first = create_webhook(raw, "http://127.0.0.1:9/a")["webhook_id"]
    second = create_webhook(raw, "http://127.0.0.1:9/b", inbox=sandbox.inbox)["webhook_id"]

    assert main(["sandbox", "drop", first, "--seconds", "60", *url]) == 0
    assert capsys.readouterr().out.startswith(f"webhook {first}: dropping deliveries until 20")
    assert main(["sandbox", "webhooks", *url]) == 0
    out = capsys.readouterr().out
    assert f"{first} org http://127.0.0.1:9/a (enabled, dropping until 20" in out
    assert f"{second} {sandbox.inbox} http://127.0.0.1:9/b (enabled)" in out
    assert main(["sandbox", "drop", first, "--stop", *url]) == 0
    assert capsys.readouterr().out.strip() == f"webhook {first}: deliveries resume"
    assert main(["sandbox", "drop", first, *url]) == 0
    assert "until cleared with --stop" in capsys.readouterr().out

    assert main(["sandbox", "disable-webhook", second, *url]) == 0
    assert capsys.readouterr().out.strip() == f"webhook {second} disabled"
    assert main(["sandbox", "webhooks", "--json", *url]) == 0
    listed = {w["webhook_id"]: w for w in json.loads(capsys.readouterr().out)}
    assert listed[second]["enabled"] is False
    assert listed[first]["dropping"] is True
    assert main(["sandbox", "delete-webhook", second, *url]) == 0
    assert capsys.readouterr().out.strip() == f"webhook {second} deleted"
    assert [w["webhook_id"] for w in sandbox.admin.webhooks()] == [first]
    assert main(["sandbox", "delete-webhook", second, *url]) == 1
    assert capsys.readouterr().err.startswith("error: HTTP 404")

    assert main(["sandbox", "clock", "--set", "2030-01-01T00:00:00Z", *url]) == 0
    assert capsys.readouterr().out.startswith("sandbox time 2030-01-01T00:00:0")
    assert main(["sandbox", "clock", "--advance", "-86400", *url]) == 0
    assert capsys.readouterr().out.startswith("sandbox time 2029-12-31T00:00:0")
    assert main(["sandbox", "clock", *url]) == 0
    assert capsys.readouterr().out.startswith("sandbox time 2029-12-31T")


def test_draft_verbs_send_and_discard_as_a_person(
    sandbox: Any, receiver: Any, raw: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--url", sandbox.url]
    create_webhook(raw, receiver.url, ["message.sent"])
    original = sandbox.admin.inject(from_="jane@example.com", to=sandbox.inbox, subject="Q")
    base = f"/v0/inboxes/{sandbox.inbox}/drafts"
    keep = raw.post(base, json={"in_reply_to": original["message_id"], "text": "A"}).json()
    drop = raw.post(base, json={"to": ["b@example.com"], "text": "B"}).json()
    capsys.readouterr()

    assert main(["sandbox", "drafts", *url]) == 0
    listing = capsys.readouterr().out
    assert f"{keep['draft_id']} {sandbox.inbox} -> jane@example.com 'Re: Q'" in listing
    assert f"in reply to {original['message_id']}" in listing
    assert drop["draft_id"] in listing

    assert main(["sandbox", "send-draft", keep["draft_id"], *url]) == 0
    [sent] = sandbox.admin.sent()
    assert sent["draft_id"] == keep["draft_id"]
    assert f"sent as {sent['message_id']}" in capsys.readouterr().out
    [event] = receiver.wait_for(1)
    assert event.json()["send"]["message_id"] == sent["message_id"]
    # A second send of the same draft sends nothing: it was deleted.
    assert main(["sandbox", "send-draft", keep["draft_id"], *url]) == 1
    assert "404" in capsys.readouterr().err

    assert main(["sandbox", "delete-draft", drop["draft_id"], *url]) == 0
    assert main(["sandbox", "drafts", "--json", *url]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1] or "[]") == []
    assert len(sandbox.admin.sent()) == 1
