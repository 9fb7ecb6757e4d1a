"""Fixtures for the template tests.

* ``folder``: write ``{relative path: text}`` under a fresh templates folder and get the
  folder back; call it again to add or change files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

Files = Callable[[dict[str, str]], Path]


@pytest.fixture
def folder(tmp_path: Path) -> Files:
    """Write ``{relative path: text}`` under a fresh templates folder and return it."""

    def write(files: dict[str, str]) -> Path:
        root = tmp_path / "templates"
        root.mkdir(exist_ok=True)
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return root

    return write
