"""The Helm chart, the kustomize manifests, the Dockerfile and the GitOps files: rendered and read,
no cluster. Rendering needs helm (built next to the control plane by build_binaries.py, or on
PATH); those tests skip without it, the file-level ones never do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "coai-operator"
CRDS = REPO / "crds"
MANIFESTS = REPO / "manifests"
RULES = yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text())
SC = RULES["discovery"]["storageClasses"]  # backup/growth.py reads StorageClasses

sys.path.insert(0, str(REPO / "charts"))
import sync  # noqa: E402  (charts/sync.py: the copies and how they are made)

sys.path.pop(0)

HELM = sync.helm_binary()
needs_helm = pytest.mark.skipif(HELM is None, reason="helm not built (e2e/localcluster/build_binaries.py)")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=check)


def render(*values: str, namespace: str = "coai-system", release: str = "coai-operator") -> list[dict[str, Any]]:
    out = helm("template", release, str(CHART), "--namespace", namespace,
               *[a for v in values for a in ("--set", v)]).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# --- copies -------------------------------------------------------------------------------------

@pytest.mark.parametrize("copy_dir", [CHART / "crds", MANIFESTS / "base" / "crds"], ids=["chart", "kustomize"])
def test_crd_copies_are_byte_identical(copy_dir: Path) -> None:
    sources = sorted(p.name for p in CRDS.glob("*.yaml"))
    assert sorted(p.name for p in copy_dir.glob("*.yaml")) == sources, "run: python charts/sync.py"
    for name in sources:
        assert (copy_dir / name).read_bytes() == (CRDS / name).read_bytes(), f"{name}: run python charts/sync.py"


def test_kustomize_rbac_is_the_chart_rules_file() -> None:
    base = {d["kind"]: d for d in load_all(MANIFESTS / "base" / "rbac.yaml")}
    assert base["ClusterRole"]["rules"] == RULES["operator"] + RULES["discovery"]["crds"] + SC
    overlay = load_all(MANIFESTS / "overlays" / "single-namespace" / "rbac.yaml")
    role = next(d for d in overlay if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == "coai-apps"
    assert role["rules"] == RULES["operator"]
    discovery = next(d for d in overlay if d["kind"] == "ClusterRole")
    assert discovery["rules"] == RULES["discovery"]["crds"] + RULES["discovery"]["namespaces"] + SC


@needs_helm
def test_generated_manifests_are_in_sync_with_the_chart() -> None:
    assert sync.out_of_sync(HELM) == [], "run: python charts/sync.py"


# --- least privilege, as a policy on the rules file --------------------------------------------

def all_rules() -> list[dict[str, Any]]:
    return [*RULES["operator"], *RULES["discovery"]["crds"], *RULES["discovery"]["namespaces"],
            *RULES["ownerReferences"]]


def test_no_wildcards_and_no_dangerous_verbs() -> None:
    for rule in all_rules():
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule


def granted(resource: str, rules: list[dict[str, Any]]) -> set[str]:
    return {v for r in rules if resource in r["resources"] for v in r["verbs"]}


def test_secrets_can_be_read_by_name_only_and_never_deleted() -> None:
    assert granted("secrets", RULES["operator"]) == {"get", "create", "patch"}


def test_no_pod_creation_exec_or_rbac_objects() -> None:
    resources = {r for rule in all_rules() for r in rule["resources"]}
    assert not resources & {"pods/exec", "pods/attach", "pods/portforward", "serviceaccounts/token", "nodes",
                            "roles", "rolebindings", "clusterroles", "clusterrolebindings"}
    assert granted("pods", all_rules()) == {"list", "watch"}  # read only: Job pods' exits and results


def test_cluster_scoped_rules_are_read_only() -> None:
    for rule in RULES["discovery"]["crds"] + RULES["discovery"]["namespaces"] + SC:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}


# --- the chart ----------------------------------------------------------------------------------

@needs_helm
def test_helm_lint_is_clean() -> None:
    out = helm("lint", "--strict", str(CHART), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout


@needs_helm
def test_default_render_watches_all_namespaces_with_a_cluster_role() -> None:
    docs = render()
    assert sorted(d["kind"] for d in docs) == ["ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"]
    role, binding = kinds(docs, "ClusterRole")[0], kinds(docs, "ClusterRoleBinding")[0]
    assert role["rules"] == RULES["operator"] + RULES["discovery"]["crds"] + SC
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "coai-operator", "namespace": "coai-system"}]
    container = kinds(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz",
                                 "--metrics=0.0.0.0:9102"]


@needs_helm
def test_deployment_is_restricted_single_and_probed() -> None:
    deployment = kinds(render(), "Deployment")[0]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "coai-operator"
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                      "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/coai-operator/coai-operator:0.1.0"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "runAsUser": 65532, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"},
                                  {"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]


@needs_helm
def test_image_tag_follows_the_operator_constant() -> None:
    from coai_operator.constants import OPERATOR_IMAGE

    deployment = kinds(render(), "Deployment")[0]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == OPERATOR_IMAGE
    digest = "sha256:" + "a" * 64
    deployment = kinds(render(f"image.digest={digest}"), "Deployment")[0]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith("@" + digest)


@needs_helm
def test_watch_namespaces_gives_a_role_in_each_and_no_cluster_wide_write() -> None:
    docs = render("watchNamespaces={team-a,team-b}", release="coai", namespace="ops")
    roles = kinds(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(r["rules"] == RULES["operator"] for r in roles)
    for binding in kinds(docs, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "coai-coai-operator", "namespace": "ops"}]
    (cluster_role,) = kinds(docs, "ClusterRole")
    assert cluster_role["metadata"]["name"] == "coai-coai-operator-discovery"
    assert cluster_role["rules"] == RULES["discovery"]["crds"] + RULES["discovery"]["namespaces"] + SC
    args = kinds(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["run", "--namespace=team-a", "--namespace=team-b"]


@needs_helm
def test_discovery_and_rbac_can_be_switched_off() -> None:
    assert kinds(render("watchNamespaces={a}", "rbac.discovery=false"), "ClusterRole") == []
    assert {d["kind"] for d in render("rbac.create=false")} == {"ServiceAccount", "Deployment"}
    docs = render("serviceAccount.create=false", "serviceAccount.name=existing")
    assert kinds(docs, "ServiceAccount") == []
    assert kinds(docs, "Deployment")[0]["spec"]["template"]["spec"]["serviceAccountName"] == "existing"


@needs_helm
def test_owner_references_enforcement_adds_only_its_rules() -> None:
    role = kinds(render("rbac.ownerReferencesPermissionEnforcement=true"), "ClusterRole")[0]
    assert role["rules"] == RULES["operator"] + RULES["ownerReferences"] + RULES["discovery"]["crds"] + SC


@needs_helm
def test_log_level_extra_env_metrics_and_scheduling() -> None:
    docs = render("logLevel=debug", "metrics.enabled=true", "metrics.port=9200", "health.port=9000",
                  "extraEnv[0].name=COAI_LABEL", "extraEnv[0].value=blue",
                  "nodeSelector.kubernetes\\.io/os=linux", "tolerations[0].key=dedicated",
                  "tolerations[0].operator=Exists")
    pod = kinds(docs, "Deployment")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["run", "--all-namespaces", "--liveness=http://0.0.0.0:9000/healthz",
                                 "--metrics=0.0.0.0:9200", "--verbose"]
    assert {"name": "COAI_LABEL", "value": "blue"} in container["env"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    (service,) = kinds(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9200, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "coai-operator",
                                           "app.kubernetes.io/instance": "coai-operator"}


BAD_VALUES = {
    "watchNamespaces is a list": ("watchNamespaces=everything", "/watchNamespaces"),
    "namespace names are DNS labels": ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
    "log level": ("logLevel=trace", "/logLevel"),
    "one operator at most": ("replicaCount=2", "/replicaCount"),
    "pull policy": ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    "port range": ("health.port=70000", "/health/port"),
    "quantities": ("resources.limits.memory=lots", "/resources/limits/memory"),
    "digest format": ("image.digest=latest", "/image/digest"),
    "typos are not ignored": ("watchNamespace={a}", "watchNamespace"),
    "env entries need a name": ("extraEnv[0].value=x", "/extraEnv/0"),
}


@needs_helm
@pytest.mark.parametrize(("value", "where"), list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_values_schema_rejects(value: str, where: str) -> None:
    assert_schema_rejects(value, where)


def assert_schema_rejects(value: str, where: str) -> None:
    """`helm template --set value` fails on the values schema, naming `where`."""
    out = helm("template", "x", str(CHART), "--set", value, check=False)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr and where in out.stderr


def test_values_schema_is_valid_json_and_covers_every_top_level_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_chart_version_follows_the_package() -> None:
    import coai_operator

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == chart["version"] == coai_operator.__version__


# --- kustomize ----------------------------------------------------------------------------------

def test_kustomize_base_lists_every_file_and_a_restricted_namespace() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (MANIFESTS / "base" / resource).exists(), resource
    assert kustomization["namespace"] == "coai-system"
    namespace = yaml.safe_load((MANIFESTS / "base" / "namespace.yaml").read_text())
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def kubectl_binary() -> str | None:
    cached = Path(HELM).parent / "kubectl" if HELM else None
    return str(cached) if cached and cached.exists() else None


@pytest.mark.skipif(kubectl_binary() is None, reason="kubectl not built")
@pytest.mark.parametrize("path", ["manifests", "manifests/base", "manifests/overlays/single-namespace"])
def test_kustomize_builds(path: str) -> None:
    out = subprocess.run([str(kubectl_binary()), "kustomize", str(REPO / path)], capture_output=True, text=True,
                         check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    if path.endswith("single-namespace"):
        assert args[:2] == ["run", "--namespace=coai-apps"]
        assert ("ClusterRole", "coai-operator") not in names and ("Role", "coai-operator") in names
    else:
        assert args[:2] == ["run", "--all-namespaces"]
        assert ("ClusterRole", "coai-operator") in names


@pytest.mark.skipif(kubectl_binary() is None, reason="kubectl not built")
def test_argocd_health_config_map_carries_the_lua_files_verbatim() -> None:
    out = subprocess.run([str(kubectl_binary()), "kustomize", str(REPO / "gitops" / "argocd")], capture_output=True,
                         text=True, check=True).stdout
    (cm,) = [d for d in yaml.safe_load_all(out) if d]
    assert cm["metadata"] == {"name": "argocd-cm", "namespace": "argocd",
                              "labels": {"app.kubernetes.io/part-of": "argocd"}}
    for kind in ("CoaiInstance", "CoaiMigration"):
        lua = (REPO / "gitops" / "argocd" / "health" / "coai.dev" / kind / "health.lua").read_text()
        assert cm["data"][f"resource.customizations.health.coai.dev_{kind}"] == lua


# --- Dockerfile and GitOps examples ---------------------------------------------------------------

def test_dockerfile_runs_the_cli_as_the_charts_non_root_user() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "USER 65532:65532" in text
    assert 'ENTRYPOINT ["coai-operator"]' in text and 'CMD ["run", "--all-namespaces"]' in text
    assert "mariadb-client" in text  # mariadb-dump / mariadb for the engine's Jobs
    ignored = [line for line in (REPO / ".dockerignore").read_text().splitlines() if not line.startswith("#")]
    assert ignored[0] == "*" and "!operator/" in ignored and "!pyproject.toml" in ignored


def test_flux_examples_parse_and_wait() -> None:
    helmrelease = load_all(REPO / "gitops" / "flux" / "helmrelease.yaml")
    release = next(d for d in helmrelease if d["kind"] == "HelmRelease")
    assert release["spec"]["chart"]["spec"]["chart"] == "./charts/coai-operator"
    assert release["spec"]["install"]["crds"] == release["spec"]["upgrade"]["crds"] == "CreateReplace"
    kustomizations = [d for d in load_all(REPO / "gitops" / "flux" / "kustomization.flux.yaml")
                      if d["kind"] == "Kustomization"]
    assert kustomizations[0]["spec"]["wait"] is True
    exprs = {e["kind"]: e for e in kustomizations[1]["spec"]["healthCheckExprs"]}
    assert set(exprs) == {"CoaiInstance", "CoaiMigration"}
    assert all({"current", "failed"} <= set(e) for e in exprs.values())
