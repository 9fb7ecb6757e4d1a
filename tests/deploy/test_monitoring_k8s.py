"""deploy/k8s/monitoring: the Prometheus Operator component.

kubernetes-validate has no schemas for the operator's CRDs (ServiceMonitor,
PrometheusRule), so these are checked for what matters instead: kustomize builds the base
with the component (and the base alone stays free of CRD objects), the ServiceMonitor
finds the Service and its metrics port, and the PrometheusRule is alerts.yaml, generated,
with rules promtool accepts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy import promql
from tests.deploy.conftest import K8S, load_yaml

MONITORING = K8S / "monitoring"
GENERATOR = MONITORING / "generate.py"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def component() -> dict[str, Any]:
    [doc] = load_yaml(MONITORING / "kustomization.yaml")
    return doc


def objects() -> dict[str, dict[str, Any]]:
    """kind -> object, for every manifest of the component."""
    return {
        doc["kind"]: doc
        for name in component()["resources"]
        for doc in load_yaml(MONITORING / name)
    }


def test_the_prometheusrule_is_generated_from_alerts_yaml() -> None:
    generated = promql.load_script(GENERATOR).render()
    assert (MONITORING / "prometheusrule.yaml").read_text() == generated, (
        "deploy/k8s/monitoring/prometheusrule.yaml is stale: run `make monitoring` and commit it"
    )
    rules = yaml.safe_load(promql.ALERTS.read_text())
    assert objects()["PrometheusRule"]["spec"]["groups"] == rules["groups"]


@pytest.mark.slow
def test_promtool_accepts_the_prometheusrules_groups(tmp_path: Path) -> None:
    """What the operator hands to Prometheus: the spec's groups as a rule file."""
    spec = objects()["PrometheusRule"]["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": spec["groups"]}))
    result = promql.run_promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_is_a_component_listing_every_manifest_in_its_folder() -> None:
    assert component()["kind"] == "Component"
    listed = set(component()["resources"])
    assert listed == {path.name for path in MONITORING.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(objects()) == CRD_KINDS
    for doc in objects().values():
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["metadata"]["name"] == "autoreply"


def test_the_servicemonitor_scrapes_the_services_metrics_port() -> None:
    [service] = [doc for doc in load_yaml(K8S / "service.yaml") if doc["kind"] == "Service"]
    spec = objects()["ServiceMonitor"]["spec"]
    selector = spec["selector"]["matchLabels"]
    assert all(service["metadata"]["labels"].get(k) == v for k, v in selector.items())
    [endpoint] = spec["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


@pytest.mark.slow
def test_the_base_does_not_need_the_operator() -> None:
    [base] = load_yaml(K8S / "kustomization.yaml")
    assert "components" not in base
    assert not any("monitoring" in name for name in base["resources"])


def _kustomize() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.skip("neither kubectl nor kustomize is installed")


def _build(folder: Path) -> list[dict[str, Any]]:
    built = subprocess.run(
        [*_kustomize(), str(folder)], capture_output=True, text=True, check=True, timeout=60
    )
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


@pytest.mark.slow
def test_kustomize_builds_the_base_with_the_component(tmp_path: Path) -> None:
    """An overlay like the one docs/operations.md shows: the base plus the component."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(K8S, overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [base],
                "components": [f"{base}/monitoring"],
            }
        )
    )
    with_monitoring = _build(overlay)
    alone = _build(K8S)
    assert not {doc["kind"] for doc in alone} & CRD_KINDS
    added = [doc for doc in with_monitoring if doc not in alone]
    assert sorted(doc["kind"] for doc in added) == sorted(CRD_KINDS)
    assert [doc for doc in with_monitoring if doc["kind"] not in CRD_KINDS] == alone
    for doc in alone:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
