"""PostgreSQL for tests: a throwaway schema on the shared server, or a private server.

* ``server_problem()``: why the shared server (``TEST_POSTGRES_URL``, default
  ``postgresql://postgres@127.0.0.1:5432/test``) cannot be used, or None. Tests that need
  it call ``require_server()``, which skips with that reason.
* ``temporary_schema()``: a fresh schema on the shared server, dropped afterwards; yields
  a database URL whose ``search_path`` is that schema (``options=-csearch_path=...``),
  so each test has its own tables without creating databases.
* ``PrivateServer``: a PostgreSQL of our own (``initdb`` into a temporary folder, on a
  free port), for tests that stop and start the database. The machine's shared server is
  never restarted. As root, the server runs as the ``postgres`` user (PostgreSQL refuses
  to run as root).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tests.support.service_process import free_port

SERVER_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@functools.cache
def server_problem() -> str | None:
    """Why no shared PostgreSQL can be used (checked once per test session), or None."""
    try:
        with psycopg.connect(SERVER_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no PostgreSQL reachable at {SERVER_URL} ({first}); set TEST_POSTGRES_URL"
    return None


def require_server() -> None:
    """Skip the calling test, with the reason, when no PostgreSQL can be reached."""
    problem = server_problem()
    if problem is not None:
        pytest.skip(problem)


def with_search_path(url: str, schema: str) -> str:
    """``url`` with libpq's ``options`` setting ``search_path`` to ``schema``."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}', safe='')}"


@contextlib.contextmanager
def temporary_schema(url: str = SERVER_URL, prefix: str = "test") -> Iterator[str]:
    """Create a uniquely named schema, yield a URL using it, then drop it with its tables."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _bin(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, or in Debian's versioned folders (newest)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PrivateServer:
    """A PostgreSQL server of the test's own, started and stopped at will.

    Its data folder lives under the system temporary folder (the ``postgres`` user must be
    able to reach it, which pytest's 0700 ``tmp_path`` does not allow) and is removed by
    ``destroy``. ``stop()`` is an immediate shutdown, like a crash: the next ``start()``
    runs crash recovery from the WAL.
    """

    def __init__(self) -> None:
        initdb, self.pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if initdb is None or self.pg_ctl is None:
            pytest.skip("initdb/pg_ctl not found: cannot run a private PostgreSQL")
        self.folder = Path(tempfile.mkdtemp(prefix="autoreply-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user: list[str] = []
        self._frozen: list[int] = []
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run PostgreSQL")
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
            self._user = ["runuser", "-u", "postgres", "--"]
        self._run(
            initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip

    def _run(self, *argv: str) -> None:
        result = subprocess.run(
            [*self._user, *argv], capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}):\n{result.stderr}")

    def start(self) -> None:
        """Start (or restart after ``stop``) and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off"
        )
        self._run(
            self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def running(self) -> bool:
        """True while the server runs (``pg_ctl status``)."""
        status = subprocess.run(
            [*self._user, self.pg_ctl, "-D", str(self.data), "status"],
            capture_output=True,
            check=False,
            timeout=30,
        )
        return status.returncode == 0

    def start_if_stopped(self) -> None:
        """Start the server unless it runs (a test may have left it stopped)."""
        if not self.running():
            self.start()

    def stop(self) -> None:
        """Immediate shutdown: every connection is cut, nothing is flushed politely."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def _pids(self) -> list[int]:
        """The postmaster and its children (backends, background workers)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        return [postmaster, *map(int, children)]

    def freeze(self) -> None:
        """SIGSTOP every server process: connections stay open but nothing answers.

        The postmaster first, so it forks no new backend meanwhile.
        """
        self._frozen = self._pids()
        for pid in self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT the processes ``freeze`` stopped (backends first, the postmaster last)."""
        frozen, self._frozen = self._frozen, []
        for pid in reversed(frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def log(self) -> str:
        """The server's log so far."""
        try:
            return (self.folder / "log").read_text(errors="replace")
        except OSError:
            return ""

    def destroy(self) -> None:
        """Stop the server if it runs and remove its folder."""
        self.thaw()
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
