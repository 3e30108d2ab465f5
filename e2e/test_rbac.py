"""The chart's RBAC is least privilege and enough: the operator, running under exactly that
identity, reconciles an instance and runs a migration's Jobs; a rule taken away fails it.

The whole e2e suite (the migration scenarios included) runs the operator
under the same identity by default; see e2e/rbac.py.
"""

from __future__ import annotations

import copy
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from coai_operator.engine.dbconfig import DbConfig
from e2e.conftest import Cluster, OperatorProcess
from e2e.helpers import wait_for
from e2e.instances import standin_instance
from e2e.rbac import OperatorRBAC, as_list, rbac_denials

RULES = yaml.safe_load((Path(__file__).resolve().parent.parent / "charts" / "coai-operator" / "files"
                        / "rbac-rules.yaml").read_text())

# What the operator must never be able to do, whatever the controllers grow into: read every
# Secret, run or exec into arbitrary pods, touch RBAC, impersonate, delete its own resources or
# CRDs, see nodes.
DENIED = [
    ("list", "secrets"), ("watch", "secrets"), ("delete", "secrets"), ("update", "secrets"),
    ("create", "pods"), ("delete", "pods"), ("create", "pods/exec"), ("create", "pods/portforward"),
    # delete on Jobs is granted: a step Job whose pod never started is deleted when the step fails.
    ("update", "jobs.batch"), ("patch", "jobs.batch"),
    ("create", "coaiinstances.coai.dev"), ("delete", "coaiinstances.coai.dev"),
    # create on CoaiMigrations is granted: spec.upgrade.policy Automatic creates the upgrade's migration.
    ("delete", "coaimigrations.coai.dev"),
    ("create", "clusterroles.rbac.authorization.k8s.io"), ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"), ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("impersonate", "users"), ("impersonate", "serviceaccounts"), ("create", "serviceaccounts/token"),
    ("get", "nodes"), ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"), ("list", "namespaces"),
    ("create", "leases.coordination.k8s.io"), ("patch", "deployments.apps/scale"),
    ("create", "statefulsets.apps"), ("create", "daemonsets.apps"), ("create", "cronjobs.batch"),
]



def resource_names(rule: dict[str, Any]) -> list[str]:
    group = rule["apiGroups"][0]
    return [r if not group else (f"{r}.{group}" if "/" not in r else
                                 f"{r.split('/')[0]}.{group}/{r.split('/')[1]}") for r in rule["resources"]]


def get(cluster: Cluster, namespace: str, *what: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", *what, "-n", namespace, "-o", "json").stdout)


def phase(cluster: Cluster, namespace: str, kind: str, name: str) -> str:
    return (get(cluster, namespace, kind, name).get("status") or {}).get("phase", "")


def test_the_identity_has_every_listed_right(cluster: Cluster, operator_rbac: OperatorRBAC) -> None:
    listed = [*RULES["operator"], *RULES["discovery"]["crds"], *RULES["discovery"]["storageClasses"]]
    assert sorted(map(json.dumps, operator_rbac.rules)) == sorted(map(json.dumps, listed))
    missing = [(verb, name) for rule in operator_rbac.rules for name in resource_names(rule)
               for verb in rule["verbs"] if not operator_rbac.can_i(cluster, verb, name)]
    assert missing == []


@pytest.mark.parametrize(("verb", "resource"), DENIED, ids=[f"{v}-{r}" for v, r in DENIED])
def test_the_identity_cannot(cluster: Cluster, operator_rbac: OperatorRBAC, verb: str, resource: str) -> None:
    assert not operator_rbac.can_i(cluster, verb, resource)


@pytest.fixture
def operator_log_mark(operator_with_chart_rbac: OperatorProcess) -> Iterator[int]:
    yield len(operator_with_chart_rbac.log_text())


def test_operator_reconciles_under_the_chart_rbac(cluster: Cluster, operator_with_chart_rbac: OperatorProcess,
                                                  operator_log_mark: int, namespace: str, db_config: DbConfig) -> None:
    operator = operator_with_chart_rbac
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=standin_instance(db_config, version="1.8.0"))
    wait_for(lambda: phase(cluster, namespace, "coai", "coai") == "Ready", timeout=180,
             message="CoaiInstance Ready under the chart's RBAC")
    # Children deleted by hand come back (kopf watches them: list/watch), managed Redis on and
    # off (create, then delete of its Deployment and Service).
    cluster.kubectl("delete", "deployment", "coai", "-n", namespace)
    wait_for(lambda: cluster.kubectl("get", "deployment", "coai", "-n", namespace, check=False).returncode == 0,
             timeout=60, message="the deleted Deployment is put back")
    cluster.kubectl("patch", "coai", "coai", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"redis": {"managed": {"enabled": true}}}}')
    wait_for(lambda: cluster.kubectl("get", "deployment,service", "coai-redis", "-n", namespace,
                                     check=False).returncode == 0, timeout=60, message="managed Redis created")
    cluster.kubectl("patch", "coai", "coai", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"redis": {"managed": {"enabled": false}}}}')
    wait_for(lambda: cluster.kubectl("get", "deployment", "coai-redis", "-n", namespace,
                                     check=False).returncode != 0, timeout=60, message="managed Redis removed")
    events = get(cluster, namespace, "events", "--field-selector", "involvedObject.name=coai")["items"]
    assert any(e["reason"] == "Created" for e in events), "the operator posts Events"
    log = operator.log_text()[operator_log_mark:]
    assert rbac_denials(log) == []
    assert "Traceback" not in log


def test_a_migration_runs_its_jobs_under_the_chart_rbac(cluster: Cluster, operator_with_chart_rbac: OperatorProcess,
                                                         operator_log_mark: int, namespace: str,
                                                         db_config: DbConfig) -> None:
    """An empty database (no CoAI schema): the Preflight Job fails and the migration ends Failed,
    but on the way the operator takes the lock (instance status), creates a Job, reads its pod's
    result and log, writes the migration's status and Events, all under the chart's rules."""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=standin_instance(db_config, version="1.8.0"))
    wait_for(lambda: phase(cluster, namespace, "coai", "coai") == "Ready", timeout=180, message="instance Ready")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=textwrap.dedent("""\
        apiVersion: coai.dev/v1alpha1
        kind: CoaiMigration
        metadata: {name: to-2}
        spec: {instanceRef: {name: coai}, targetVersion: 2.0.0, backoffLimit: 0}
        """))
    wait_for(lambda: phase(cluster, namespace, "cmig", "to-2") in ("Failed", "RolledBack", "Succeeded"),
             timeout=180, message="the migration finishes")
    status = get(cluster, namespace, "cmig", "to-2")["status"]
    jobs = [s["job"] for s in status.get("steps", []) if s.get("job")]
    assert jobs, json.dumps(status, indent=1)
    assert cluster.kubectl("get", "job", jobs[0], "-n", namespace, check=False).returncode == 0
    assert get(cluster, namespace, "coai", "coai")["status"].get("activeMigration") in (None, ""), \
        "the lock was released (instance status written)"
    log = operator_with_chart_rbac.log_text()[operator_log_mark:]
    assert rbac_denials(log) == []


@pytest.fixture
def without_services_rule(cluster: Cluster, operator_rbac: OperatorRBAC) -> Iterator[None]:
    role = next(o for o in operator_rbac.objects if o["kind"] == "ClusterRole")
    reduced = copy.deepcopy(role)
    reduced["rules"] = [r for r in reduced["rules"] if "services" not in r["resources"]]
    assert len(reduced["rules"]) == len(role["rules"]) - 1
    cluster.kubectl("apply", "-f", "-", input=as_list([reduced]))
    try:
        yield
    finally:
        cluster.kubectl("apply", "-f", "-", input=as_list([role]))
        wait_for(lambda: operator_rbac.can_i(cluster, "create", "services", "default"), timeout=30,
                 message="the services rule is back")


def test_a_missing_rule_makes_the_instance_fail_visibly(cluster: Cluster, operator_with_chart_rbac: OperatorProcess,
                                                        without_services_rule: None, namespace: str,
                                                        db_config: DbConfig) -> None:
    """The check the RBAC tests rely on: take one rule away and the reconcile reports it."""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=standin_instance(db_config, version="1.8.0"))

    def degraded_by_rbac() -> str:
        status = get(cluster, namespace, "coai", "coai").get("status") or {}
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return ready.get("message", "") if status.get("phase") == "Degraded" else ""

    message = wait_for(degraded_by_rbac, timeout=60, message="instance Degraded because a rule is missing")
    assert "forbidden" in message.lower() or "403" in message
