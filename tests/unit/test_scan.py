"""checkov (kubernetes framework) on everything we ship or create: the Helm chart, the kustomize
base and what the operator renders (an instance with and without managed Redis, every migration
Job). tests/checkov-skips.yaml lists the checks we accept failing, each with its reason; any other
failure fails the test, and so does a skip that no longer matches a failure.

Needs checkov (`python -m tests.checkov --install`, run by e2e/setup.sh) and helm for the chart.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from coai_operator.instance import redis_auth
from coai_operator.instance import render as r
from coai_operator.migration import jobs
from tests import checkov
from tests.unit.test_chart import HELM, MANIFESTS, load_all
from tests.unit.test_chart import render as helm_template

SKIPS_FILE = Path(__file__).resolve().parents[1] / "checkov-skips.yaml"
SKIPS: dict[str, str] = yaml.safe_load(SKIPS_FILE.read_text()) or {}

OWNER = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance",
         "metadata": {"name": "chat", "namespace": "apps", "uid": "uid-1"}}
DB = {"host": "mariadb.db.svc", "user": "coai", "passwordSecretRef": {"name": "coai-db"}}
INSTANCES: dict[str, dict[str, Any]] = {
    "instance-external-redis": {"version": "3.11.2", "database": DB, "redis": {"host": "redis.cache"}},
    "instance-managed-redis": {"version": "3.11.2", "database": DB, "redis": {"managed": {"enabled": True}},
                               "imageDigest": "sha256:" + "0a" * 32},
    "instance-load-balancer": {"version": "4.25.0", "database": {**DB, "host": "10.0.0.5"},
                               "service": {"type": "LoadBalancer"},
                               "networkPolicy": {"appIngressFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}},
}
MIGRATION = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiMigration",
             "metadata": {"name": "up", "namespace": "apps", "uid": "mig-1"},
             "spec": {"instanceRef": {"name": "chat"}, "targetVersion": "3.11.3",
                      "migrations": {"configMapRef": {"name": "bundle"}},
                      "validation": {"apiKeySecretRef": {"name": "api-key"}}}}

needs_checkov = pytest.mark.skipif(not checkov.installed(), reason="checkov not installed (python -m tests.checkov "
                                                                    "--install; e2e/setup.sh does it)")


def operator_objects() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for label, spec in INSTANCES.items():
        rendered = r.render(spec, "chat", "apps", OWNER)
        objs = rendered.all()
        if redis_auth.generates_secret(rendered.spec):
            objs.append(redis_auth.secret("chat", "apps", [r.owner_reference(OWNER)], "not-a-real-password"))
        out[label] = objs
    spec = INSTANCES["instance-managed-redis"]
    instance = {"metadata": {"name": "chat", "namespace": "apps"}, "spec": spec,
                "status": {"version": spec["version"]}}  # a Ready instance: the planner needs its version
    out["migration-jobs"] = [jobs.build_job(copy.deepcopy(MIGRATION), instance, step) for step in jobs.STEP_SLUGS]
    return out


def write_all(directory: Path) -> list[str]:
    groups = operator_objects()
    if HELM is not None:
        groups["chart-defaults"] = helm_template()
        # Another release name: checkov's graph checks match policies to pods across files, and
        # this release's NetworkPolicy must not count for the default release's pod.
        groups["chart-all-options"] = helm_template("networkPolicy.enabled=true", "metrics.enabled=true",
                                                    "watchNamespaces={apps}", release="coai-all")
    base = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    groups["kustomize-base"] = [d for res in base["resources"] for d in load_all(MANIFESTS / "base" / res)]
    for label, objs in groups.items():
        (directory / f"{label}.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
    return sorted(groups)


def test_every_skip_has_a_one_line_reason() -> None:
    assert SKIPS, "tests/checkov-skips.yaml is empty or missing"
    for check_id, reason in SKIPS.items():
        assert check_id.startswith("CKV"), check_id
        assert isinstance(reason, str) and reason.strip() and "\n" not in reason.strip(), check_id


def test_the_scanned_set_covers_every_job_kind_and_both_redis_setups() -> None:
    groups = operator_objects()
    steps = {o["metadata"]["labels"][jobs.LABEL_STEP] for o in groups["migration-jobs"] if o["kind"] == "Job"}
    assert steps == set(jobs.STEP_SLUGS.values())
    assert any(o["metadata"]["name"] == "chat-redis" for o in groups["instance-managed-redis"])
    assert not any(o["metadata"]["name"] == "chat-redis" for o in groups["instance-external-redis"])


@needs_checkov
def test_checkov_finds_nothing_new(tmp_path: Path) -> None:
    groups = write_all(tmp_path)
    report = checkov.scan(tmp_path)
    failed = (report.get("results") or {}).get("failed_checks") or []
    # --quiet lists failures only; the summary still counts what passed.
    assert (report.get("summary") or {}).get("passed", 0) > 100, f"checkov scanned (almost) nothing in {groups}"
    new = sorted({f"{f['check_id']} {f['check_name']} ({Path(f['file_path']).name}: {f['resource']})"
                  for f in failed if f["check_id"] not in SKIPS})
    assert not new, "checkov failures not in tests/checkov-skips.yaml (fix them, or skip with a reason):\n" + \
        "\n".join(new)
    stale = sorted(set(SKIPS) - {f["check_id"] for f in failed})
    assert not stale, f"skips that no longer fail (remove them from tests/checkov-skips.yaml): {stale}"
