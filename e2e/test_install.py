"""Install paths against the real control plane: `helm install` of charts/coai-operator and
`kubectl apply -k` of manifests/ each bring up an operator pod (a container of the image built
from the Dockerfile, on the real node, under its own ServiceAccount token) that reconciles a
CoaiInstance whose app pod really becomes Ready; upgrade and uninstall behave as the README says.

The session `operator` process watches all namespaces; these tests pause it (`paused_operator`)
so the installed operator is the only one acting. Each installed operator gets its own liveness
port, so the chart's and the overlay's port settings are exercised.
"""

from __future__ import annotations

import json
import os
import socket
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.test_health_lua import run_health

from coai_operator.engine.dbconfig import DbConfig
from e2e.conftest import Cluster, OperatorProcess
from e2e.helpers import wait_for
from e2e.instances import standin_instance
from e2e.rbac import CHART, rbac_denials, run_helm

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests"
METRICS_PORT = yaml.safe_load((REPO / "charts" / "coai-operator" / "values.yaml").read_text())["metrics"]["port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


@pytest.fixture
def paused_operator(operator: OperatorProcess) -> Iterator[None]:
    operator.stop()
    try:
        yield
    finally:
        operator.start()


def get(cluster: Cluster, namespace: str, *what: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", *what, "-n", namespace, "-o", "json").stdout)


def operator_pod(cluster: Cluster, namespace: str, selector: str) -> dict[str, Any]:
    pods = [p for p in get(cluster, namespace, "pods", "-l", selector)["items"]
            if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def running_pod(cluster: Cluster, namespace: str, selector: str) -> dict[str, Any] | None:
    """The operator pod once it runs and has logged its startup line, else None."""
    pod = operator_pod(cluster, namespace, selector)
    logs = cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"], check=False).stdout
    return pod if pod["status"].get("phase") == "Running" and "coai-operator watching" in logs else None


def wait_operator_running(cluster: Cluster, namespace: str, selector: str) -> dict[str, Any]:
    return wait_for(lambda: running_pod(cluster, namespace, selector), timeout=90,
                    message=f"operator pod in {namespace} running and watching")


def instance_phase(cluster: Cluster, namespace: str) -> str:
    return (get(cluster, namespace, "coai", "coai").get("status") or {}).get("phase", "")


def assert_reconciles_sample(cluster: Cluster, namespace: str, db: DbConfig) -> dict[str, Any]:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=standin_instance(db))
    wait_for(lambda: instance_phase(cluster, namespace) == "Ready", timeout=180,
             message=f"sample CoaiInstance in {namespace} Ready")
    obj = get(cluster, namespace, "coai", "coai")
    assert run_health("CoaiInstance", obj)["status"] == "Healthy"  # Argo CD would agree
    ready = cluster.kubectl("get", "deployment", "coai", "-n", namespace, "-o",
                            "jsonpath={.status.readyReplicas}").stdout
    assert ready == "1"  # the app container answered its probes on the real node
    for kind in ("deployment", "service", "configmap/coai-env", "pvc/coai-config"):
        cluster.kubectl("get", "-n", namespace, kind if "/" in kind else f"{kind}/coai")
    return obj


def logs_of(cluster: Cluster, namespace: str, pod: dict[str, Any]) -> str:
    return cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"], check=False).stdout


# --- helm ---------------------------------------------------------------------------------------

@pytest.fixture
def helm_release(cluster: Cluster, paused_operator: None) -> Iterator[dict[str, str]]:
    release = {"name": "coai-e2e", "namespace": unique("coai-helm"), "watched": unique("coai-watched"),
               "port": str(free_port())}
    cluster.kubectl("create", "namespace", release["watched"])
    env = cluster.env
    try:
        yield release
    finally:
        run_helm("uninstall", release["name"], "-n", release["namespace"], "--wait", "--timeout=60s",
                 env=env, check=False)
        for ns in (release["namespace"], release["watched"]):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_helm_install_runs_an_operator_that_reconciles_a_sample(cluster: Cluster, helm_release: dict[str, str],
                                                                db_config: DbConfig) -> None:
    r = helm_release
    out = run_helm("install", r["name"], str(CHART), "-n", r["namespace"], "--create-namespace",
                   "--set", f"watchNamespaces={{{r['watched']}}}", "--set", f"health.port={r['port']}",
                   "--wait", "--timeout=120s", env=cluster.env).stdout
    assert f"It watches the namespace(s) {r['watched']}" in out  # NOTES.txt
    selector = "app.kubernetes.io/instance=coai-e2e"
    pod = wait_operator_running(cluster, r["namespace"], selector)
    assert pod["spec"]["serviceAccountName"] == "coai-e2e-coai-operator"
    assert pod["spec"]["containers"][0]["args"] == [
        "run", f"--namespace={r['watched']}", f"--liveness=http://0.0.0.0:{r['port']}/healthz",
        f"--metrics=0.0.0.0:{METRICS_PORT}"]

    assert_reconciles_sample(cluster, r["watched"], db_config)
    # Namespaced Role only: nothing outside the watched namespace is touched or even allowed.
    sa = f"system:serviceaccount:{r['namespace']}:coai-e2e-coai-operator"
    assert cluster.kubectl("auth", "can-i", "create", "deployments", "-n", r["watched"], "--as", sa,
                           check=False).stdout.strip() == "yes"
    assert cluster.kubectl("auth", "can-i", "create", "deployments", "-n", "default", "--as", sa,
                           check=False).stdout.strip() == "no"
    assert cluster.kubectl("get", "clusterrole", "coai-e2e-coai-operator", check=False).returncode != 0
    logs = logs_of(cluster, r["namespace"], pod)
    assert rbac_denials(logs) == [] and "Traceback" not in logs


def test_helm_upgrade_restarts_the_operator_and_uninstall_keeps_crds_and_instances(
        cluster: Cluster, helm_release: dict[str, str], db_config: DbConfig) -> None:
    r = helm_release
    common = ["-n", r["namespace"], "--set", f"watchNamespaces={{{r['watched']}}}",
              "--set", f"health.port={r['port']}", "--wait", "--timeout=120s"]
    run_helm("install", r["name"], str(CHART), "--create-namespace", *common, env=cluster.env)
    selector = "app.kubernetes.io/instance=coai-e2e"
    first = wait_operator_running(cluster, r["namespace"], selector)
    assert_reconciles_sample(cluster, r["watched"], db_config)

    run_helm("upgrade", r["name"], str(CHART), *common, "--set", "logLevel=debug", env=cluster.env)
    second = wait_for(lambda: (p := running_pod(cluster, r["namespace"], selector))
                      and p["metadata"]["uid"] != first["metadata"]["uid"] and p,
                      timeout=90, message="a new operator pod after upgrade")
    assert "--verbose" in second["spec"]["containers"][0]["args"]

    run_helm("uninstall", r["name"], "-n", r["namespace"], "--wait", "--timeout=60s", env=cluster.env)
    wait_for(lambda: not get(cluster, r["namespace"], "pods", "-l", selector)["items"], timeout=60,
             message="operator pod gone after uninstall")
    assert cluster.kubectl("get", "role", "coai-e2e-coai-operator", "-n", r["watched"], check=False).returncode != 0
    # CRDs come from the chart's crds/ directory: Helm never deletes them, so instances survive.
    cluster.kubectl("get", "crd", "coaiinstances.coai.dev", "coaimigrations.coai.dev")
    assert instance_phase(cluster, r["watched"]) == "Ready"


def test_helm_refuses_bad_values_before_touching_the_cluster(cluster: Cluster) -> None:
    namespace = unique("coai-bad")
    out = run_helm("install", "coai-bad", str(CHART), "-n", namespace, "--create-namespace",
                   "--set", "watchNamespaces=everything", env=cluster.env, check=False)
    assert out.returncode != 0 and "watchNamespaces" in out.stderr
    assert cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0


# --- kustomize ----------------------------------------------------------------------------------

def kustomize_overlay(tmp_path: Path, base: Path, port: int, prefix: str, namespace: str | None) -> Path:
    """A throw-away overlay over `base`: unique names (so it never meets the e2e operator's RBAC)
    and a free liveness port. Everything else is the repository's manifests as they are."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    spec: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namePrefix": prefix, "resources": [os.path.relpath(base, overlay)],
        "patches": [{"target": {"kind": "Deployment"}, "patch": textwrap.dedent(f"""\
            - op: replace
              path: /spec/template/spec/containers/0/args/2
              value: --liveness=http://0.0.0.0:{port}/healthz
            - op: replace
              path: /spec/template/spec/containers/0/ports/0/containerPort
              value: {port}
            """)}],
    }
    if namespace:
        spec["namespace"] = namespace
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(spec))
    return overlay


def delete_installed(cluster: Cluster, overlay: Path, keep_namespaces: tuple[str, ...] = ()) -> None:
    """Everything the overlay created except the CRDs (shared by the whole suite) and kept namespaces."""
    built = [d for d in yaml.safe_load_all(cluster.kubectl("kustomize", str(overlay)).stdout) if d]
    doomed = [d for d in built if d["kind"] != "CustomResourceDefinition"
              and not (d["kind"] == "Namespace" and d["metadata"]["name"] in keep_namespaces)]
    cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": doomed}), check=False)


def test_kubectl_apply_k_base_runs_an_operator_in_a_restricted_namespace(
        cluster: Cluster, paused_operator: None, tmp_path: Path, namespace: str, db_config: DbConfig) -> None:
    installed = unique("coai-kz")
    overlay = kustomize_overlay(tmp_path, MANIFESTS / "base", free_port(), "e2e-kz-", installed)
    try:
        cluster.kubectl("apply", "-k", str(overlay))
        ns = get(cluster, "default", "namespace", installed)
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        pod = wait_operator_running(cluster, installed, "app.kubernetes.io/name=coai-operator")
        assert pod["spec"]["serviceAccountName"] == "e2e-kz-coai-operator"
        assert "--all-namespaces" in pod["spec"]["containers"][0]["args"]
        assert_reconciles_sample(cluster, namespace, db_config)
        logs = logs_of(cluster, installed, pod)
        assert rbac_denials(logs) == [] and "Traceback" not in logs
    finally:
        delete_installed(cluster, overlay)


def test_kubectl_apply_k_single_namespace_overlay_watches_only_that_namespace(
        cluster: Cluster, paused_operator: None, tmp_path: Path, namespace: str, db_config: DbConfig) -> None:
    overlay = kustomize_overlay(tmp_path, MANIFESTS / "overlays" / "single-namespace", free_port(), "e2e-kz1-",
                                None)
    try:
        cluster.kubectl("apply", "-k", str(overlay))
        pod = wait_operator_running(cluster, "coai-system", "app.kubernetes.io/name=coai-operator")
        assert pod["spec"]["containers"][0]["args"][:2] == ["run", "--namespace=coai-apps"]
        assert_reconciles_sample(cluster, "coai-apps", db_config)
        # A namespace it does not watch: no status, no children.
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=standin_instance(db_config))
        with pytest.raises(AssertionError):
            wait_for(lambda: instance_phase(cluster, namespace), timeout=10, message="not reconciled")
        assert cluster.kubectl("get", "deployment", "coai", "-n", namespace, check=False).returncode != 0
        cluster.kubectl("delete", "coai", "coai", "-n", "coai-apps", "--wait=true")
    finally:
        # coai-system stays: the session's operator_rbac fixture (e2e/rbac.py) lives there too, and
        # re-creating a namespace that is still terminating fails.
        delete_installed(cluster, overlay, keep_namespaces=("coai-system",))
