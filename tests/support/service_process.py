"""Run the real ``autoreply serve`` as a child process, for tests that kill it.

The service is started exactly as users start it (the console script, settings from
the environment) on a free port; its log goes to a file the test can read.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def autoreply_command() -> list[str]:
    """The console script of this venv, or ``python -m service`` if it is not installed."""
    script = Path(sys.executable).with_name("autoreply")
    if script.exists():
        return [str(script)]
    found = shutil.which("autoreply")
    return [found] if found else [sys.executable, "-m", "service"]


def user_environment(**env: str) -> dict[str, str]:
    """The test's environment without any ``AGENTMAIL_*`` or ``AUTOREPLY_*`` variable,
    plus ``env``: what a user's shell would give the command."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTMAIL_", "AUTOREPLY_"))}
    return {**base, **env}


def run_autoreply(
    *args: str, env: Mapping[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run one ``autoreply`` command to its end with ``env`` as its settings; the
    output is captured as text, and the exit status is the caller's to check."""
    return subprocess.run(
        [*autoreply_command(), *args],
        env=user_environment(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class ServiceProcess:
    """One ``autoreply serve`` child process."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0) -> ServiceProcess:
        """Start the process and wait until ``/readyz`` (or ``/healthz``) answers 200."""
        env = {**os.environ, **self.env, "AUTOREPLY_LOG_FORMAT": "json"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*autoreply_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_for("/readyz" if wait_ready else "/healthz", timeout=timeout)
        return self

    def wait_for(self, path: str, *, timeout: float) -> None:
        """Poll ``path`` until it answers 200; fail with the log if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"service exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"service not ready at {path} after {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, *, timeout: float = 30.0) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Make sure the process is gone (fixture teardown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        """Everything the process wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
