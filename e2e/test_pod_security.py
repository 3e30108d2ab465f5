"""Pod Security: the operator's pod and every migration Job pod are admitted in a namespace that
enforces the "restricted" profile, by the real apiserver's PodSecurity admission.

For a Deployment or Job, PodSecurity only warns at the workload level; the pod is what it
rejects. So each check creates the Pod built from the workload's template with a server-side dry
run, and one Job is created for real to see its pod appear. The breach tests prove the check
catches what it is for: a spec that breaks the profile fails `assert_admitted`.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from coai_operator.migration import jobs, planner
from e2e.conftest import Cluster
from e2e.helpers import wait_for
from e2e.rbac import render_chart

JOB_STEPS = list(jobs.STEP_SLUGS)


@pytest.fixture(scope="module")
def restricted_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-restricted-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def pod_from_template(template: dict[str, Any], name: str) -> dict[str, Any]:
    spec = copy.deepcopy(template["spec"])
    # The ServiceAccount admission plugin runs first and wants the account to exist; which account
    # it is does not matter to PodSecurity.
    spec.pop("serviceAccountName", None)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": (template.get("metadata") or {}).get("labels") or {}},
            "spec": spec}


def assert_admitted(cluster: Cluster, namespace: str, pod: dict[str, Any]) -> None:
    """Create the pod with a server-side dry run: PodSecurity admission says yes or why not."""
    out = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(pod),
                          check=False)
    assert out.returncode == 0, f"pod {pod['metadata']['name']} not admitted: {out.stderr.strip()}"


def operator_pod(*values: str) -> dict[str, Any]:
    docs = render_chart(*[a for v in values for a in ("--set", v)])
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    return pod_from_template(deployment["spec"]["template"], "operator")


# --- the operator's pod -------------------------------------------------------------------------

def test_the_operator_pod_is_admitted(cluster: Cluster, restricted_namespace: str) -> None:
    assert_admitted(cluster, restricted_namespace, operator_pod())


def test_the_operator_pod_watching_a_namespace_list_is_admitted(cluster: Cluster, restricted_namespace: str) -> None:
    assert_admitted(cluster, restricted_namespace, operator_pod("watchNamespaces={a,b}", "metrics.enabled=true",
                                                                "logLevel=debug"))


BREACHES = {
    "root user": ["securityContext.runAsUser=0"],
    "runAsNonRoot off everywhere": ["podSecurityContext.runAsNonRoot=false", "securityContext.runAsNonRoot=false"],
    "privilege escalation": ["securityContext.allowPrivilegeEscalation=true"],
    "privileged": ["securityContext.privileged=true", "securityContext.allowPrivilegeEscalation=true"],
    "added capability": ["securityContext.capabilities.add={NET_ADMIN}"],
    "no seccomp profile": ["podSecurityContext.seccompProfile=null", "securityContext.seccompProfile=null"],
}


@pytest.mark.parametrize("values", list(BREACHES.values()), ids=list(BREACHES))
def test_chart_values_that_break_the_profile_are_caught(cluster: Cluster, restricted_namespace: str,
                                                        values: list[str]) -> None:
    with pytest.raises(AssertionError, match='violates PodSecurity "restricted:latest"'):
        assert_admitted(cluster, restricted_namespace, operator_pod(*values))


# --- the migration Jobs' pods -------------------------------------------------------------------

def migration(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiMigration",
            "metadata": {"name": "to-2", "namespace": "ignored", "uid": "5f0a4c3e-9d2b-4e61-8a7f-0c1d2e3f4a5b"},
            "spec": {"instanceRef": {"name": "coai"}, "targetVersion": "2.0.0",
                     "migrations": {"configMapRef": {"name": "extra-sql"}},
                     "validation": {"apiKeySecretRef": {"name": "coai-api-key"}}, **spec}}


INSTANCE = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance",
            "metadata": {"name": "coai", "namespace": "ignored", "uid": "0b6f5e2c-1111-4a6e-9d1b-5f3c2a1b0c01"},
            "spec": {"version": "1.8.0", "database": {"host": "mariadb", "user": "chatnio",
                                                      "passwordSecretRef": {"name": "coai-db"}}}}


def job_pod(step: str, **spec: Any) -> dict[str, Any]:
    job = jobs.build_job(migration(**spec), INSTANCE, step)
    return pod_from_template(job["spec"]["template"], f"{jobs.STEP_SLUGS[step]}-pod")


@pytest.mark.parametrize("step", JOB_STEPS)
def test_every_job_pod_is_admitted(cluster: Cluster, restricted_namespace: str, step: str) -> None:
    assert_admitted(cluster, restricted_namespace, job_pod(step))


def test_the_coaibackup_job_pod_of_a_migration_is_admitted(cluster: Cluster, restricted_namespace: str) -> None:
    """The migration's Backup step is a CoaiBackup: its Job (config: the env ConfigMap and Secret
    mounted, the key as a file) must pass the restricted profile too."""
    from coai_operator.backup import jobs as backup_jobs
    from coai_operator.backup.destination import Destination

    backup = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiBackup",
              "metadata": {"name": "m-pre-abcde", "namespace": "ignored", "uid": "0b6f5e2c-2222"},
              "spec": {"instanceRef": {"name": "coai"}, "encryption": {"keySecretRef": {"name": "bk-key"}}}}
    instance = {**INSTANCE, "spec": {**INSTANCE["spec"], "secretRef": {"name": "coai-app"}}}
    dest = Destination("pvc", {"name": "coai-backup"})
    args, trees = backup_jobs.backup_args(backup, dest)
    job = backup_jobs.engine_job(backup, "backup", args, dest, instance=instance, trees=trees, read_only_trees=True,
                                 key_ref=backup["spec"]["encryption"]["keySecretRef"])
    assert_admitted(cluster, restricted_namespace, pod_from_template(job["spec"]["template"], "backup-pod"))


JOB_BREACHES = {
    "privileged": {"securityContext": {"privileged": True, "allowPrivilegeEscalation": True}},
    "root user": {"podSecurityContext": {"runAsUser": 0}},
    "capability": {"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}},
}


@pytest.mark.parametrize("template", list(JOB_BREACHES.values()), ids=list(JOB_BREACHES))
def test_a_job_spec_that_breaks_the_profile_is_caught(cluster: Cluster, restricted_namespace: str,
                                                      template: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match='violates PodSecurity "restricted:latest"'):
        assert_admitted(cluster, restricted_namespace, job_pod(planner.MIGRATE, jobTemplate=template))


def test_a_real_job_gets_its_pod_in_the_restricted_namespace(cluster: Cluster, restricted_namespace: str) -> None:
    """Not a dry run: the Job controller creates the pod and admission lets it through."""
    job = jobs.build_job(migration(), INSTANCE, planner.PREFLIGHT)
    job["metadata"]["namespace"] = restricted_namespace
    job["metadata"].pop("ownerReferences")  # no CoaiMigration object behind this one
    job["spec"]["backoffLimit"] = 0
    name = job["metadata"]["name"]
    cluster.kubectl("create", "-f", "-", input=json.dumps(job))
    try:
        pods = wait_for(lambda: json.loads(cluster.kubectl(
            "get", "pods", "-n", restricted_namespace, "-l", f"job-name={name}", "-o", "json").stdout)["items"],
            timeout=60, message=f"the Job controller created a pod for {name}")
        assert pods[0]["spec"]["securityContext"]["runAsNonRoot"] is True
        events = cluster.kubectl("get", "events", "-n", restricted_namespace, "--field-selector",
                                 f"involvedObject.name={name}", "-o", "json").stdout
        assert "violates PodSecurity" not in events
    finally:
        cluster.kubectl("delete", "job", name, "-n", restricted_namespace, "--wait=false", check=False)
