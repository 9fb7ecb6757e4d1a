"""Fixtures for the operator surface: real ``autoreply serve`` processes on a real SQLite
file against the sandbox, and the real ``autoreply`` command line beside them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.deployment import Deployment

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(deployment: Deployment) -> Cli:
    """Run ``autoreply ARGS...`` with the deployment's settings, as an operator would."""
    return deployment.run


def status_json(cli: Cli, *args: str, **env: str) -> dict[str, Any]:
    """``autoreply status --json``, parsed; fails with stderr on a non-zero exit."""
    result = cli("status", "--json", *args, **env)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def scrape(url: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` parsed: (sample name, sorted labels) -> value."""
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    """One sample's value, or None when absent."""
    return samples.get((name, tuple(sorted(labels.items()))))
