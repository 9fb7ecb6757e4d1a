"""Shared helpers for the deployment files' tests (deploy/)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.service_process import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def known_settings() -> set[str]:
    """Every environment variable the service reads, from ``service/settings.py`` itself."""
    source = (ROOT / "service" / "settings.py").read_text()
    names = set(re.findall(r"""r\.(?:get|required|raw)\(\s*["']([A-Z0-9_]+)["']""", source))
    assert "AGENTMAIL_API_KEY" in names, "settings.py changed shape: update known_settings()"
    return names


def load_yaml(path: Path) -> list[dict[str, Any]]:
    """Every document of a YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture
def running_service(sandbox: Any, tmp_path: Path) -> Iterator[ServiceProcess]:
    """A real ``autoreply serve`` against the sandbox, ready."""
    env = {
        "AGENTMAIL_API_KEY": sandbox.api_key,
        "AGENTMAIL_BASE_URL": sandbox.url,
        "AUTOREPLY_DATABASE_URL": f"sqlite:///{tmp_path / 'autoreply.db'}",
    }
    process = ServiceProcess(env, tmp_path / "service.log")
    process.env["AUTOREPLY_PUBLIC_URL"] = process.url
    process.start()
    yield process
    process.stop()
