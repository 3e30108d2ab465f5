"""Keep the copies in sync with their sources: `python charts/sync.py` writes, `--check` only compares.

Sources -> copies:
- crds/*.yaml -> charts/coai-operator/crds/ and manifests/base/crds/ (byte for byte)
- the chart (templates + files/rbac-rules.yaml) -> the kustomize manifests: `helm template` with
  the default values gives manifests/base/{serviceaccount,rbac,deployment}.yaml, with
  watchNamespaces=[coai-apps] it gives manifests/overlays/single-namespace/{rbac,deployment-patch}.yaml.
  Helm's own labels (helm.sh/chart, managed-by: Helm) are dropped.

tests/unit/test_chart.py runs the check, so a chart change without a resync fails the unit tests.
Needs helm (built by e2e/localcluster/build_binaries.py, or on PATH).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "coai-operator"
CRDS = REPO / "crds"
BASE = REPO / "manifests" / "base"
OVERLAY = REPO / "manifests" / "overlays" / "single-namespace"
RELEASE, NAMESPACE, OVERLAY_NAMESPACE = "coai-operator", "coai-system", "coai-apps"
HEADER = "# Generated from charts/coai-operator by charts/sync.py: edit the chart, then run the script.\n"


def helm_binary() -> str | None:
    sys.path.insert(0, str(REPO / "e2e" / "localcluster"))
    try:
        import build_binaries

        cached = build_binaries.bin_dir() / "helm"
        if cached.exists():
            return str(cached)
    except ImportError:
        pass
    finally:
        sys.path.pop(0)
    return shutil.which("helm")


def helm_template(*args: str, helm: str | None = None) -> list[dict]:
    helm = helm or helm_binary()
    if not helm:
        raise RuntimeError("helm not found: run e2e/localcluster/build_binaries.py or put helm on PATH")
    out = subprocess.run([helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args],
                         capture_output=True, text=True, check=True, env={**os.environ, "HELM_DEBUG": "0"}).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _strip_helm(doc: dict) -> dict:
    def clean(meta: dict) -> None:
        labels = meta.get("labels") or {}
        labels.pop("helm.sh/chart", None)
        labels.pop("app.kubernetes.io/managed-by", None)

    clean(doc["metadata"])
    template = (doc.get("spec") or {}).get("template")
    if template:
        clean(template["metadata"])
    return doc


def _dump(docs: list[dict]) -> str:
    return HEADER + "---\n".join(yaml.safe_dump(d, sort_keys=False, default_flow_style=False) for d in docs)


def expected_files(helm: str | None = None) -> dict[Path, str]:
    """Every generated copy and the content it must have."""
    files: dict[Path, str] = {}
    for crd in sorted(CRDS.glob("*.yaml")):
        files[CHART / "crds" / crd.name] = crd.read_text()
        files[BASE / "crds" / crd.name] = crd.read_text()

    docs = [_strip_helm(d) for d in helm_template(helm=helm)]
    by_kind = {k: [d for d in docs if d["kind"] == k] for k in {d["kind"] for d in docs}}
    files[BASE / "serviceaccount.yaml"] = _dump(by_kind["ServiceAccount"])
    files[BASE / "rbac.yaml"] = _dump(by_kind["ClusterRole"] + by_kind["ClusterRoleBinding"])
    files[BASE / "deployment.yaml"] = _dump(by_kind["Deployment"])

    single = [_strip_helm(d) for d in helm_template("--set", f"watchNamespaces={{{OVERLAY_NAMESPACE}}}", helm=helm)]
    rbac = [d for d in single if d["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    files[OVERLAY / "rbac.yaml"] = _dump(rbac)
    deployment = next(d for d in single if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    patch = {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": deployment["metadata"]["name"], "namespace": NAMESPACE},
             "spec": {"template": {"spec": {"containers": [{"name": container["name"], "args": container["args"]}]}}}}
    files[OVERLAY / "deployment-patch.yaml"] = _dump([patch])
    return files


def out_of_sync(helm: str | None = None) -> list[Path]:
    return [p for p, text in expected_files(helm).items() if not p.exists() or p.read_text() != text]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ (exit 1)")
    args = parser.parse_args()
    if args.check:
        stale = out_of_sync()
        for path in stale:
            print(f"out of sync: {path.relative_to(REPO)}")
        return 1 if stale else 0
    for path, text in expected_files().items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
