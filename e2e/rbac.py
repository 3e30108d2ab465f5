"""The operator under exactly the Helm chart's RBAC, for any e2e test (issue 6).

`operator_rbac` (session) renders the chart's ServiceAccount and RBAC with `helm template` (release
coai-operator in namespace coai-system, watching all namespaces: a ClusterRole), applies them, and
hands out a kubeconfig for that identity: on the local control plane the token user
`system:serviceaccount:coai-system:coai-operator` (cluster.local.operator_kubeconfig), on an
existing cluster a token of the ServiceAccount itself (`kubectl create token`).

`operator_with_chart_rbac` restarts the session `operator` under that identity for one test and
puts it back afterwards. By default every test that uses the `operator` fixture runs it under the
chart's RBAC (the autouse `_operator_identity` below), so a rule missing from
charts/coai-operator/files/rbac-rules.yaml fails whichever scenario needs it;
COAI_E2E_OPERATOR_RBAC=0 runs them with the admin identity instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.helpers import wait_for

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "coai-operator"
OPERATOR_NAMESPACE = "coai-system"
RELEASE = "coai-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{RELEASE}"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def helm_binary() -> str:
    """helm built by e2e/localcluster/build_binaries.py (same cache as the control plane), else PATH."""
    sys.path.insert(0, str(REPO / "e2e" / "localcluster"))
    try:
        import build_binaries

        cached = build_binaries.bin_dir() / "helm"
        if not cached.exists() and not shutil.which("helm"):
            build_binaries.ensure_built(["helm"])
        if cached.exists():
            return str(cached)
    finally:
        sys.path.pop(0)
    found = shutil.which("helm")
    if not found:
        raise RuntimeError("helm not found: run e2e/localcluster/build_binaries.py or put helm on PATH")
    return found


def run_helm(*args: str, env: dict[str, str] | None = None, check: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, env=env or dict(os.environ),
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def render_chart(*args: str, release: str = RELEASE, namespace: str = OPERATOR_NAMESPACE) -> list[dict[str, Any]]:
    """`helm template` of the chart, as a list of objects."""
    out = run_helm("template", release, str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def rbac_denials(log: str) -> list[str]:
    """Lines of an operator log where the authorizer said no (`User "..." cannot list resource ...`);
    other 403s (e.g. writing into a namespace being deleted) are not about RBAC."""
    return [line for line in log.splitlines() if re.search(r"cannot [a-z]+ resource", line)]


def as_list(objects: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


@dataclass
class OperatorRBAC:
    """The chart's RBAC, applied, and credentials that carry exactly that identity."""

    kubeconfig: Path
    user: str
    objects: list[dict[str, Any]]

    @property
    def rules(self) -> list[dict[str, Any]]:
        return [r for o in self.objects if o["kind"] == "ClusterRole" for r in o["rules"]]

    def can_i(self, cluster: Any, verb: str, resource: str, namespace: str | None = None) -> bool:
        """`kubectl auth can-i` asked with the operator's own credentials (no impersonation).

        `resource` as kubectl spells it (`jobs.batch`), a subresource after a slash (`pods/log`)."""
        scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
        resource, _, subresource = resource.partition("/")
        extra = [f"--subresource={subresource}"] if subresource else []
        out = cluster.kubectl("--kubeconfig", str(self.kubeconfig), "auth", "can-i", verb, resource, *extra,
                              *scope, check=False)
        return out.stdout.strip() == "yes"


def _service_account_kubeconfig(cluster: Any, path: Path) -> Path:
    """An existing cluster has no token user: use a token of the ServiceAccount itself."""
    token = cluster.kubectl("create", "token", RELEASE, "-n", OPERATOR_NAMESPACE, "--duration=4h").stdout.strip()
    view = json.loads(cluster.kubectl("config", "view", "--minify", "--raw", "-o", "json").stdout)
    view["users"] = [{"name": RELEASE, "user": {"token": token}}]
    view["contexts"][0]["context"]["user"] = RELEASE
    path.write_text(json.dumps(view))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def operator_rbac(cluster: Any, crds_installed: list[str],
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorRBAC]:
    objects = [o for o in render_chart() if o["kind"] in RBAC_KINDS]
    created_namespace = cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False).returncode == 0
    cluster.kubectl("apply", "-f", "-", input=as_list(objects))
    if cluster.local:
        kubeconfig = cluster.local.operator_kubeconfig
    else:
        kubeconfig = _service_account_kubeconfig(cluster, tmp_path_factory.mktemp("rbac") / "kubeconfig")
    rbac = OperatorRBAC(kubeconfig=kubeconfig, user=OPERATOR_USER, objects=objects)
    wait_for(lambda: rbac.can_i(cluster, "watch", "coaiinstances.coai.dev"), timeout=30,
             message="the chart's ClusterRole is in effect for the operator's identity")
    try:
        yield rbac
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", input=as_list(objects),
                        check=False)
        if created_namespace:
            cluster.kubectl("delete", "namespace", OPERATOR_NAMESPACE, "--wait=false", check=False)


def restart_as(operator: Any, kubeconfig: Path) -> None:
    """Restart the session operator with other credentials; wait for this run's startup line."""
    operator.stop()
    mark = len(operator.log_text())
    operator.kubeconfig = kubeconfig
    operator.start()
    wait_for(lambda: "coai-operator watching" in operator.log_text()[mark:], timeout=60,
             message="operator restarted under new credentials")


@pytest.fixture
def operator_with_chart_rbac(operator: Any, operator_rbac: OperatorRBAC) -> Iterator[Any]:
    """The session operator, for one test, running under the chart's RBAC only."""
    admin = operator.kubeconfig
    if admin == operator_rbac.kubeconfig:  # the whole run is under the chart's RBAC already
        yield operator
        return
    restart_as(operator, operator_rbac.kubeconfig)
    try:
        yield operator
    finally:
        restart_as(operator, admin)


@pytest.fixture(autouse=True)
def _operator_identity(request: pytest.FixtureRequest) -> None:
    """Every test that uses `operator` gets it under the chart's RBAC (COAI_E2E_OPERATOR_RBAC=0: admin)."""
    if os.environ.get("COAI_E2E_OPERATOR_RBAC", "1") != "1" or "operator" not in request.fixturenames:
        return
    # RBAC first: session fixtures are torn down in reverse, so the operator stops before its rules go.
    rbac: OperatorRBAC = request.getfixturevalue("operator_rbac")
    operator = request.getfixturevalue("operator")
    if operator.kubeconfig != rbac.kubeconfig:
        restart_as(operator, rbac.kubeconfig)
