"""Build prometheusrule.yaml (beside this file) from deploy/prometheus/alerts.yaml.

The rules live in one place, alerts.yaml, where promtool checks and tests them; the
Prometheus Operator's PrometheusRule carries the same groups unchanged. Run
``make monitoring`` (or ``python deploy/k8s/monitoring/generate.py``) after editing the
rules; a test fails while the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[1] / "prometheus" / "alerts.yaml"
OUTPUT = HERE / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by deploy/k8s/monitoring/generate.py
# (`make monitoring`): edit the rules there, not here. What each alert means and what to
# do: docs/operations.md.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the longer expressions) as literal blocks, as in alerts.yaml."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def build() -> dict[str, Any]:
    """The PrometheusRule object."""
    rules = yaml.safe_load(RULES.read_text())
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "autoreply", "labels": {"app.kubernetes.io/name": "autoreply"}},
        "spec": {"groups": rules["groups"]},
    }


def render() -> str:
    """prometheusrule.yaml's text."""
    body = str(yaml.dump(build(), Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True))
    return HEADER + body


def main() -> int:
    """Write the file; the tests fail while the committed one differs from ``render()``."""
    OUTPUT.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
