"""deploy/k8s: valid Kubernetes objects that fit the service they run.

Each manifest is validated (strictly: unknown fields are errors) against the bundled
Kubernetes OpenAPI schemas of ``kubernetes-validate``, offline, for the oldest version
we support and the newest the tool knows. The rest checks what a schema cannot: that
probes, ports, selectors, mounts, settings and the shutdown timing agree with the
service, and that the templates ConfigMap, mounted the way kubelet mounts it, loads,
renders and reloads in a real service process.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from service.server import uvicorn_config
from service.settings import Settings
from tests.deploy.conftest import DEPLOY, K8S, known_settings, load_yaml
from tests.support.deployment import Deployment, replies_to
from tests.support.service_process import ServiceProcess, run_autoreply
from tests.support.waiting import until_sync

#: The oldest Kubernetes minor version the manifests must stay valid for.
OLDEST_KUBERNETES = "1.30.0"


def kustomization() -> dict[str, Any]:
    [doc] = load_yaml(K8S / "kustomization.yaml")
    return doc


def resources() -> list[dict[str, Any]]:
    """Every object the kustomization applies, in its order."""
    return [doc for name in kustomization()["resources"] for doc in load_yaml(K8S / name)]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [
        doc
        for doc in resources()
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    return found


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = one("Deployment")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    [only] = pod_spec()["containers"]
    return only


def container_env() -> dict[str, str]:
    """The container's environment as the pod gets it: envFrom sources, then env."""
    env: dict[str, str] = {}
    for source in container().get("envFrom", []):
        if "configMapRef" in source:
            env.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(one("Secret", source["secretRef"]["name"])["stringData"])
    for item in container().get("env", []):
        env[item["name"]] = item.get("value", "<from a reference>")
    return env


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# -- schema and kustomize ------------------------------------------------------------------


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.latest_version()])
def test_every_object_is_valid_kubernetes(version: str) -> None:
    docs = resources()
    assert {doc["kind"] for doc in docs} >= {
        "Deployment",
        "Service",
        "Secret",
        "ConfigMap",
        "PodDisruptionBudget",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_kustomization_applies_every_manifest_in_the_folder() -> None:
    listed = set(kustomization()["resources"])
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    [image] = kustomization()["images"]
    assert image["name"] == container()["image"]


@pytest.mark.skipif(
    shutil.which("kubectl") is None and shutil.which("kustomize") is None,
    reason="neither kubectl nor kustomize is installed",
)
@pytest.mark.slow
def test_kustomize_builds_it() -> None:
    command = ["kustomize", "build"] if shutil.which("kustomize") else ["kubectl", "kustomize"]
    built = subprocess.run(
        [*command, str(K8S)], capture_output=True, text=True, check=True, timeout=60
    )
    docs = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert len(docs) == len(resources())
    [deployment] = [doc for doc in docs if doc["kind"] == "Deployment"]
    [image] = kustomization()["images"]
    built_image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert built_image == f"{image['newName']}:{image['newTag']}"


# -- the Deployment fits the service ---------------------------------------------------------


def test_probes_hit_the_service_port_and_answer_on_a_real_service(
    running_service: ServiceProcess,
) -> None:
    spec = container()
    args = spec["args"]
    assert args[0] == "serve"
    port = int(args[args.index("--port") + 1])
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert ports == {"http": port}
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        get = spec[probe]["httpGet"]
        assert get["port"] in (port, "http")
        response = httpx.get(running_service.url + get["path"], timeout=5)
        assert response.status_code == 200, (probe, response.text)


def test_termination_grace_outlasts_the_whole_shutdown() -> None:
    """SIGKILL must not cut the drain short: preStop, uvicorn closing, then the workers."""
    env = container_env()
    drain = float(env.get("AUTOREPLY_SHUTDOWN_GRACE_SECONDS", Settings.shutdown_grace_seconds))
    uvicorn_close = uvicorn_config(None, host="0.0.0.0", port=0).timeout_graceful_shutdown or 0
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pod_spec()["terminationGracePeriodSeconds"] > pre_stop + uvicorn_close + drain


def test_it_runs_as_the_images_user_on_a_read_only_root() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    [user] = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    pod = pod_spec()["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == user
    own = container()["securityContext"]
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_requests_and_limits_are_set() -> None:
    resources_ = container()["resources"]
    for kind in ("requests", "limits"):
        assert set(resources_[kind]) == {"cpu", "memory"}
    assert _mebibytes(resources_["requests"]["memory"]) <= _mebibytes(
        resources_["limits"]["memory"]
    )
    assert _millicores(resources_["requests"]["cpu"]) <= _millicores(resources_["limits"]["cpu"])


def test_selectors_find_the_pods() -> None:
    deployment = one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], labels)
    assert matches(one("Service")["spec"]["selector"], labels)
    pdb = one("PodDisruptionBudget")["spec"]
    assert matches(pdb["selector"]["matchLabels"], labels)
    # A budget the replicas cannot meet would block every node drain.
    assert pdb["minAvailable"] < deployment["spec"]["replicas"]
    target = one("Service")["spec"]["ports"][0]["targetPort"]
    assert target in {p["name"] for p in container()["ports"]}


def test_replicas_share_postgresql() -> None:
    """SQLite is one process's file: two replicas need the PostgreSQL store."""
    assert one("Deployment")["spec"]["replicas"] == 2
    assert container_env()["AUTOREPLY_DATABASE_URL"].startswith("postgresql://")


def test_every_variable_is_a_setting_and_they_parse(tmp_path: Path) -> None:
    env = container_env()
    unknown = set(env) - known_settings()
    assert not unknown, f"not settings of the service: {sorted(unknown)}"
    # The values parse as the service would parse them (the templates dir must exist).
    env["AUTOREPLY_TEMPLATES_DIR"] = str(tmp_path)
    Settings.from_environ(env, dotenv=None)
    assert one("Deployment")["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_the_secret_holds_placeholders_only() -> None:
    for key, value in one("Secret")["stringData"].items():
        assert "REPLACE_ME" in value, f"{key} looks like a real value"


# -- templates from the ConfigMap ------------------------------------------------------------


def mount_like_kubelet(folder: Path, data: dict[str, str], version: str) -> Path:
    """Write the templates volume as kubelet does: a timestamped folder with the items,
    ``..data`` pointing at it, and a symlink per top-level entry; swapped atomically."""
    items = {item["key"]: item["path"] for item in _templates_volume()["configMap"]["items"]}
    payload = folder / f"..{version}"
    for key, path in items.items():
        target = payload / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[key])
    staging = folder / "..data_tmp"
    staging.symlink_to(payload.name)
    staging.rename(folder / "..data")  # atomic replace, as kubelet's AtomicWriter does
    for top in {Path(path).parts[0] for path in items.values()}:
        link = folder / top
        if not link.is_symlink():
            link.symlink_to(Path("..data") / top)
    return folder


def _templates_volume() -> dict[str, Any]:
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    [name] = [n for n, v in volumes.items() if "configMap" in v]
    assert mounts[name]["readOnly"] is True
    return {**volumes[name], "mountPath": mounts[name]["mountPath"]}


def test_templates_are_mounted_where_the_setting_points() -> None:
    volume = _templates_volume()
    assert volume["mountPath"] == container_env()["AUTOREPLY_TEMPLATES_DIR"]
    data = one("ConfigMap", volume["configMap"]["name"])["data"]
    assert {item["key"] for item in volume["configMap"]["items"]} == set(data)


@pytest.mark.slow
def test_the_templates_configmap_passes_templates_check(tmp_path: Path) -> None:
    data = one("ConfigMap", _templates_volume()["configMap"]["name"])["data"]
    folder = mount_like_kubelet(tmp_path, data, "2025_01_01_00_00_00.000000001")
    result = run_autoreply("templates", "check", "--dir", str(folder), env={})
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_configmap_update_reaches_the_running_service(
    sandbox: Any, deployment: Deployment, tmp_path: Path
) -> None:
    """kubelet swaps ``..data`` when the ConfigMap changes; the service reloads from it."""
    data = one("ConfigMap", _templates_volume()["configMap"]["name"])["data"]
    folder = tmp_path / "templates"
    folder.mkdir()
    mount_like_kubelet(folder, data, "2025_01_01_00_00_00.000000001")
    service = deployment.start(AUTOREPLY_TEMPLATES_DIR=str(folder))
    first = _reply_text(sandbox, "first@example.com")
    assert "It has reached us" in first
    changed = {**data, "default.body.txt": "Hello {{ sender.name }}, updated by kubelet.\n"}
    mount_like_kubelet(folder, changed, "2025_01_01_00_01_00.000000001")
    _wait_for_log(service, "templates_reloaded")
    assert _reply_text(sandbox, "second@example.com").strip().endswith("updated by kubelet.")


def _reply_text(sandbox: Any, sender: str) -> str:
    message_id = sandbox.admin.inject(from_=sender, to=sandbox.inbox, subject="Hi")["message_id"]
    until_sync(
        lambda: replies_to(sandbox.admin.sent(), message_id) != [], timeout=30, what="a reply"
    )
    [reply] = replies_to(sandbox.admin.sent(), message_id)
    return str(reply["text"])


def _wait_for_log(service: ServiceProcess, event: str) -> None:
    until_sync(lambda: event in service.log(), timeout=30, what=f"{event} in the log")


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * factor
    return float(quantity) / 2**20


def _millicores(quantity: str) -> float:
    return float(quantity.removesuffix("m")) if quantity.endswith("m") else float(quantity) * 1000
