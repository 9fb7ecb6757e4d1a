"""The README's run commands work: ``autoreply demo`` and ``autoreply dev``."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.service_process import (
    autoreply_command,
    free_port,
    run_autoreply,
    user_environment,
)
from tests.support.waiting import until_sync

#: Every test runs `autoreply demo` or `autoreply dev` as a process.
pytestmark = pytest.mark.slow


def test_demo_replies_once_skips_the_rest_and_exits_zero(tmp_path: Path) -> None:
    """The demo registers, answers the two customers once each and skips the automated mail."""
    result = run_autoreply("demo", env={}, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All outcomes as expected." in result.stdout
    assert result.stdout.count("-> replied once") == 2
    assert "-> drafted for review (draft drf_" in result.stdout
    assert "labels while it waits: received, unread, unreplied, autoreply-draft" in result.stdout
    assert "sent once; message.sent reached the service, job replied" in result.stdout
    assert "skipped: auto_submitted" in result.stdout
    assert "-> a person answered in the thread: 'Hi Dana" in result.stdout
    assert "-> skipped: answered_in_thread" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_dev_runs_both_until_interrupted(tmp_path: Path) -> None:
    """``autoreply dev`` answers mail injected with ``autoreply sandbox send``; Ctrl-C stops it."""
    sandbox_port, port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env = user_environment()
    process = subprocess.Popen(
        [*autoreply_command(), "dev", "--port", str(port), "--sandbox-port", str(sandbox_port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def ready() -> bool:
            assert process.poll() is None, "dev exited"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        until_sync(ready, timeout=30, what="dev to be ready")
        send = subprocess.run(
            [*autoreply_command(), "sandbox", "send", "--url", sandbox_url,
             "--from", "You <you@example.com>", "--to", "demo@agentmail.to",
             "--subject", "Hello", "--text", "Hi there"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert send.returncode == 0, send.stderr
        until_sync(
            lambda: "you@example.com" in httpx.get(f"{sandbox_url}/_sandbox/sent").text,
            timeout=30,
            what="the reply",
        )
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGINT, 130), output
    assert (tmp_path / "autoreply.db").exists()
