"""The README's SQLite backup command, run against a live service's database."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.deploy.conftest import ROOT
from tests.support.service_process import ServiceProcess
from tests.support.waiting import until_sync


def readme_backup_snippet() -> str:
    """The Python of ``docker exec autoreply python3 -c "..."`` in the README."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r'docker exec autoreply python3 -c "([^"]+)"', readme)
    assert match, "the README's backup command moved"
    return match[1]


def test_online_backup_is_consistent_while_the_service_writes(
    sandbox: Any, running_service: ServiceProcess, tmp_path: Path
) -> None:
    database = running_service.env["AUTOREPLY_DATABASE_URL"].removeprefix("sqlite:///")
    data = str(Path(database).parent)
    snippet = readme_backup_snippet().replace("/data", data)
    for n in range(20):
        sandbox.admin.inject(from_=f"s{n}@example.com", to=sandbox.inbox, subject=f"Q{n}")
    until_sync(lambda: _jobs(database) > 0, timeout=30, what="a delivery to be recorded")
    subprocess.run([sys.executable, "-c", snippet], check=True, timeout=60)

    backup = Path(data) / "backup.db"
    with sqlite3.connect(backup) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    # Whatever the service had committed when the backup ran, and nothing half-written.
    assert 1 <= jobs <= 20
    assert _jobs(database) >= jobs


def _jobs(database: str) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as live:
        return int(live.execute("SELECT count(*) FROM jobs").fetchone()[0])
