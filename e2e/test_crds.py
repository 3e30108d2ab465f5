"""The CRDs on a real apiserver: they install, kubectl shows their columns and documentation, the
apiserver applies their defaults, and it rejects invalid objects and forbidden changes with a
message that names the field.

None of these tests needs the operator. If the operator runs in the same session it may write the
status of these objects, so status-based assertions compare the server's table with the object
returned in the same response instead of with values set here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config
from tests.unit.test_crds import MIGRATION_DEFAULTS, SEED_INSTANCE_DEFAULTS

from e2e.helpers import wait_for

pytestmark = pytest.mark.e2e

CRDS = Path(__file__).resolve().parent.parent / "crds"
GROUP_VERSION = "coai.dev/v1alpha1"
INSTANCE_CRD = "coaiinstances.coai.dev"
MIGRATION_CRD = "coaimigrations.coai.dev"


def instance(name: str = "chat", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": GROUP_VERSION, "kind": "CoaiInstance", "metadata": {"name": name},
            "spec": {"version": "3.11.2", "database": {"host": "mariadb.db.svc"}, **spec}}


def migration(name: str = "to-4-25", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": GROUP_VERSION, "kind": "CoaiMigration", "metadata": {"name": name},
            "spec": {"instanceRef": {"name": "chat"}, "targetVersion": "4.25.0", **spec}}


def create(cluster, namespace: str, obj: dict[str, Any], *extra: str,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("create", "-n", namespace, "-f", "-", *extra, input=json.dumps(obj), check=check)


def dry_run(cluster, namespace: str, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return create(cluster, namespace, obj, "--dry-run=server", "-o", "json", check=False)


def merge_patch(cluster, namespace: str, resource: str, patch: dict[str, Any],
                *extra: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("patch", "-n", namespace, resource, "--type=merge", "-p", json.dumps(patch), *extra,
                           check=False)


def headers(table: str) -> list[str]:
    return table.splitlines()[0].split()


def flat(text: str) -> str:
    """kubectl wraps explain output and error lists; compare on single-spaced text."""
    return " ".join(text.split())


def server_table(cluster, namespace: str, plural: str) -> dict[str, Any]:
    """The apiserver's table for a list, with each row's object: cells and object are one snapshot."""
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        method, url, headers_, body, post = api.param_serialize(
            "GET", f"/apis/{GROUP_VERSION}/namespaces/{namespace}/{plural}",
            query_params=[("includeObject", "Object")],
            header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
            auth_settings=["BearerToken"])
        response = api.call_api(method, url, header_params=headers_, body=body, post_params=post)
        assert response.status == 200, response.read()
        return json.loads(response.read())
    finally:
        api.close()


def field(obj: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


# ------------------------------------------------------------------------------------------------
# installation


def test_crds_are_established_and_structural(cluster, crds_installed) -> None:
    for crd in (INSTANCE_CRD, MIGRATION_CRD):
        out = cluster.kubectl("get", "crd", crd, "-o", "json").stdout
        conditions = {c["type"]: c["status"] for c in json.loads(out)["status"]["conditions"]}
        assert conditions.get("Established") == "True", conditions
        assert conditions.get("NamesAccepted") == "True", conditions
        assert "NonStructuralSchema" not in conditions, conditions


def test_crds_reapply_cleanly(cluster, crds_installed) -> None:
    """Re-applying (upgrades, GitOps sync) is a no-op the apiserver accepts, CEL budget included."""
    result = cluster.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", str(CRDS))
    assert INSTANCE_CRD in result.stdout and MIGRATION_CRD in result.stdout


# ------------------------------------------------------------------------------------------------
# kubectl get / explain


def test_get_cmig_shows_the_migration_columns(cluster, crds_installed, namespace) -> None:
    create(cluster, namespace, instance())
    create(cluster, namespace, migration())
    merge_patch(cluster, namespace, "coaimigration/to-4-25", {"status": {
        "phase": "BackingUp", "fromVersion": "3.11.2", "currentStep": "backup"}}, "--subresource=status")

    table = cluster.kubectl("get", "cmig", "-n", namespace).stdout
    assert headers(table) == ["NAME", "INSTANCE", "FROM", "TO", "PHASE", "STEP", "AGE"]
    row = table.splitlines()[1].split()
    assert row[:2] == ["to-4-25", "chat"]
    assert "4.25.0" in row

    wide = cluster.kubectl("get", "coaimigrations", "-n", namespace, "-o", "wide").stdout
    assert headers(wide)[:7] == ["NAME", "INSTANCE", "FROM", "TO", "PHASE", "STEP", "AGE"]
    assert "MESSAGE" in headers(wide)

    server = server_table(cluster, namespace, "coaimigrations")
    names = [c["name"] for c in server["columnDefinitions"]]
    (row_obj,) = server["rows"]
    cells, obj = dict(zip(names, row_obj["cells"], strict=True)), row_obj["object"]
    assert cells["Instance"] == "chat"
    assert cells["To"] == "4.25.0"
    for column, path in (("From", "status.fromVersion"), ("Phase", "status.phase"), ("Step", "status.currentStep")):
        assert (cells[column] or None) == field(obj, path), column


def test_get_coai_shows_the_instance_columns(cluster, crds_installed, namespace) -> None:
    create(cluster, namespace, instance())
    merge_patch(cluster, namespace, "coaiinstance/chat", {"status": {
        "phase": "Ready", "version": "3.11.2", "readyReplicas": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "1/1 ready",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}, "--subresource=status")

    table = cluster.kubectl("get", "coai", "-n", namespace).stdout
    assert headers(table) == ["NAME", "VERSION", "PHASE", "READY", "AGE"]
    # The short name names one kind, so it also works with an object name (no category clash).
    single = cluster.kubectl("get", "coai", "chat", "-n", namespace).stdout
    assert single.splitlines()[1].split()[0] == "chat"

    server = server_table(cluster, namespace, "coaiinstances")
    names = [c["name"] for c in server["columnDefinitions"]]
    (row_obj,) = server["rows"]
    cells, obj = dict(zip(names, row_obj["cells"], strict=True)), row_obj["object"]
    assert (cells["Version"] or None) == field(obj, "status.version")
    assert (cells["Phase"] or None) == field(obj, "status.phase")
    ready = [c["status"] for c in field(obj, "status.conditions") or [] if c["type"] == "Ready"]
    assert (cells["Ready"] or None) == (ready[0] if ready else None)


def test_category_lists_both_kinds(cluster, crds_installed, namespace) -> None:
    create(cluster, namespace, instance())
    create(cluster, namespace, migration())
    out = cluster.kubectl("get", "coai-all", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(out) == ["coaiinstance.coai.dev/chat", "coaimigration.coai.dev/to-4-25"]


def _explain(cluster, target: str, expected: str) -> str:
    def attempt() -> str:
        out = cluster.kubectl("explain", target, check=False)
        return flat(out.stdout) if expected in flat(out.stdout) else ""

    # The apiserver publishes a new CRD's OpenAPI a moment after it is Established.
    return wait_for(attempt, timeout=60, message=f"kubectl explain {target} mentioning {expected!r}")


def test_explain_migration_backup(cluster, crds_installed) -> None:
    text = _explain(cluster, "coaimigration.spec.backup", "Nothing proceeds without it")
    assert "consistent logical dump of the database" in text
    assert "Immutable." in text
    for name in ("enabled", "include", "pvc"):
        assert f"{name} <" in text, name
    assert "Default all three" in text


def test_explain_instance_storage_retain(cluster, crds_installed) -> None:
    text = _explain(cluster, "coaiinstance.spec.storage.retain", "deleting the CoaiInstance never deletes data")
    assert "Default true" in text


def test_explain_rollback_requested(cluster, crds_installed) -> None:
    text = _explain(cluster, "coaimigration.spec.rollback.requested", "Set to true to roll back")
    assert "cannot be set back to false" in text


# ------------------------------------------------------------------------------------------------
# defaults


def test_server_side_defaults_instance(cluster, crds_installed, namespace) -> None:
    result = dry_run(cluster, namespace, instance())
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)["spec"]
    assert {k: spec.get(k) for k in SEED_INSTANCE_DEFAULTS} == SEED_INSTANCE_DEFAULTS


def test_server_side_defaults_managed_redis(cluster, crds_installed, namespace) -> None:
    result = dry_run(cluster, namespace, instance(redis={"managed": {"enabled": True}}))
    assert result.returncode == 0, result.stderr
    redis = json.loads(result.stdout)["spec"]["redis"]
    assert redis["managed"] == {"enabled": True, "image": "redis:7-alpine", "storage": {"size": "1Gi"}}


def test_server_side_defaults_migration(cluster, crds_installed, namespace) -> None:
    result = dry_run(cluster, namespace, migration())
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)["spec"]
    assert {k: spec.get(k) for k in MIGRATION_DEFAULTS} == MIGRATION_DEFAULTS


# ------------------------------------------------------------------------------------------------
# rejected on create

INVALID = [
    pytest.param(migration(targetVersion="v4.25.0"), ["spec.targetVersion", "should match"], id="targetVersion-v"),
    pytest.param(migration(targetVersion="4.25"), ["spec.targetVersion", "should match"], id="targetVersion-2-parts"),
    pytest.param(instance(version="latest"), ["spec.version", "should match", "floating tag", "pin a version"],
                 id="version-latest"),
    pytest.param(migration(targetVersion="stable"), ["spec.targetVersion", "floating tag", "pin a version"],
                 id="targetVersion-stable"),
    pytest.param(migration(rollback={"policy": "Sometimes"}), ["spec.rollback.policy", "Unsupported value",
                                                               '"Sometimes"'], id="rollback-policy"),
    pytest.param(migration(backup={"include": ["database", "redis"]}), ["spec.backup.include[1]", "Unsupported"],
                 id="backup-include"),
    pytest.param(migration(backoffLimit=11), ["spec.backoffLimit", "less than or equal to 10"], id="backoffLimit"),
    pytest.param(migration(validation={"checks": ["health", "chat"]}),
                 ["spec.validation.apiKeySecretRef", "required when spec.validation.checks contains chat"],
                 id="chat-without-api-key"),
    pytest.param(migration(backup={"enabled": False}),
                 ["spec.rollback.policy", "Automatic needs spec.backup.enabled=true"], id="no-backup-automatic"),
    pytest.param(migration(configMigration={"rename": {"old.key": "NEW"}}),
                 ["spec.configMigration.rename", "environment variable names"], id="rename-key"),
    pytest.param({**migration(), "spec": {"targetVersion": "4.25.0"}}, ["spec.instanceRef", "Required value"],
                 id="no-instanceRef"),
    pytest.param(instance(image="programzmh/chatnio:3.11.2"), ["spec.image", "should match"], id="image-with-tag"),
    pytest.param(instance(service={"type": "Ingress"}), ["spec.service.type", "Unsupported value"],
                 id="service-type"),
    pytest.param(instance(port=0), ["spec.port", "greater than or equal to 1"], id="port"),
    pytest.param(instance(redis={"host": "redis", "managed": {"enabled": True}}),
                 ["spec.redis", "either spec.redis.host", "not both"], id="redis-both"),
    pytest.param(instance(config={"server.port": "8094"}), ["spec.config", "environment variable names"],
                 id="config-key"),
    pytest.param(instance(config={"MYSQL_HOST": "elsewhere"}), ["spec.config must not set", "MYSQL_*"],
                 id="config-reserved"),
    pytest.param({**instance(), "spec": {"version": "3.11.2"}}, ["spec.database", "Required value"], id="no-db"),
    pytest.param(instance(name="x" * 46), ["metadata.name", "at most 45 characters"], id="instance-name"),
]


@pytest.mark.parametrize(("obj", "expected"), INVALID)
def test_invalid_objects_are_rejected(cluster, crds_installed, namespace, obj: dict[str, Any],
                                      expected: list[str]) -> None:
    result = dry_run(cluster, namespace, obj)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    message = flat(result.stderr)
    assert "is invalid" in message, message
    for text in expected:
        assert text in message, message


def test_valid_full_objects_are_accepted(cluster, crds_installed, namespace) -> None:
    full_instance = instance(
        version="4.25.0-rc.1", image="registry.example.com:5000/mirror/chatnio", replicas=2, port=8094,
        healthPath="/api/", service={"type": "LoadBalancer", "port": 443},
        database={"host": "db", "port": 3307, "name": "coai", "user": "coai",
                  "passwordSecretRef": {"name": "db", "key": "pw"}},
        redis={"host": "redis", "passwordSecretRef": {"name": "redis"}},
        secretRef={"name": "coai-env"}, config={"SERVE_STATIC": "true"},
        storage={"size": "100Gi", "storageClassName": "standard", "retain": False},
        resources={"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": 2, "memory": "4Gi"}},
        podSecurityContext={"fsGroup": 1000}, securityContext={"allowPrivilegeEscalation": False},
        nodeSelector={"pool": "apps"}, tolerations=[{"key": "dedicated", "operator": "Exists"}],
        affinity={"nodeAffinity": {}}, imagePullSecrets=[{"name": "regcred"}], podAnnotations={"a": "b"})
    result = dry_run(cluster, namespace, full_instance)
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)["spec"]
    assert spec["securityContext"] == {"allowPrivilegeEscalation": False}  # preserved, not pruned
    assert spec["redis"]["passwordSecretRef"] == {"name": "redis", "key": "password"}

    full_migration = migration(
        targetVersion="2.0.0", dryRun=True,
        backup={"include": ["database", "config"], "pvc": {"name": "chat-backups", "size": "50Gi"}},
        configMigration={"rename": {"JWT_SECRET": "SECRET", "OPENAI_KEY": "OPENAI_API_KEY"},
                         "set": {"RBAC_ENABLED": "true"}, "remove": ["LEGACY_AUTH_ENABLED"]},
        migrations={"configMapRef": {"name": "extra-sql"}}, storageMigration={"enabled": True},
        validation={"baseURL": "https://chat.example.com", "apiKeySecretRef": {"name": "probe"},
                    "checks": ["health", "chat", "files"], "timeoutSeconds": 60},
        rollback={"policy": "Manual", "mode": "Graceful"}, maintenance={"message": "upgrading"},
        jobTemplate={"image": "ghcr.io/me/engine:dev", "resources": {"limits": {"memory": "1Gi"}},
                     "serviceAccountName": "engine", "securityContext": {"runAsUser": 0}})
    result = dry_run(cluster, namespace, full_migration)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["spec"]["validation"]["apiKeySecretRef"] == {"name": "probe", "key": "api-key"}


def test_status_is_validated(cluster, crds_installed, namespace) -> None:
    create(cluster, namespace, migration())
    bad = merge_patch(cluster, namespace, "coaimigration/to-4-25", {"status": {"phase": "Done"}},
                      "--subresource=status")
    assert bad.returncode != 0
    assert "status.phase" in bad.stderr and "Unsupported value" in bad.stderr
    good = merge_patch(cluster, namespace, "coaimigration/to-4-25", {"status": {
        "backup": {"artifacts": [{"name": "database.sql", "bytes": 2**40, "sha256": "0" * 64}],
                   "rowCounts": {"conversation": 10_000_000_000}}}}, "--subresource=status")
    assert good.returncode == 0, good.stderr


# ------------------------------------------------------------------------------------------------
# immutability after creation

IMMUTABLE = [
    pytest.param({"targetVersion": "4.26.0"}, "spec.targetVersion is immutable", id="targetVersion"),
    pytest.param({"instanceRef": {"name": "other"}}, "spec.instanceRef is immutable", id="instanceRef"),
    pytest.param({"backup": {"pvc": {"size": "30Gi"}}}, "spec.backup is immutable", id="backup"),
    pytest.param({"backup": {"include": ["database"]}}, "spec.backup is immutable", id="backup-include"),
    pytest.param({"migrations": {"configMapRef": {"name": "late-sql"}}}, "spec.migrations is immutable",
                 id="migrations-added"),
    pytest.param({"configMigration": {"set": {"A": "b"}}}, "spec.configMigration is immutable",
                 id="configMigration"),
    pytest.param({"storageMigration": {"enabled": True}}, "spec.storageMigration is immutable",
                 id="storageMigration"),
    pytest.param({"dryRun": True}, "spec.dryRun is immutable", id="dryRun"),
]


@pytest.mark.parametrize(("spec_patch", "expected"), IMMUTABLE)
def test_run_parameters_are_immutable(cluster, crds_installed, namespace, spec_patch: dict[str, Any],
                                      expected: str) -> None:
    create(cluster, namespace, migration())
    result = merge_patch(cluster, namespace, "cmig/to-4-25", {"spec": spec_patch})
    assert result.returncode != 0, result.stdout
    assert expected in flat(result.stderr), result.stderr
    current = json.loads(cluster.kubectl("get", "cmig/to-4-25", "-n", namespace, "-o", "json").stdout)["spec"]
    assert current["targetVersion"] == "4.25.0"
    assert current["instanceRef"] == {"name": "chat"}


def test_migrations_cannot_be_removed_after_creation(cluster, crds_installed, namespace) -> None:
    create(cluster, namespace, migration(migrations={"configMapRef": {"name": "extra-sql"}}))
    result = cluster.kubectl("patch", "-n", namespace, "cmig/to-4-25", "--type=json", "-p",
                             json.dumps([{"op": "remove", "path": "/spec/migrations"}]), check=False)
    assert result.returncode != 0
    assert "spec.migrations is immutable" in flat(result.stderr)


def test_rollback_can_be_requested_but_not_cancelled(cluster, crds_installed, namespace) -> None:
    create(cluster, namespace, migration())
    requested = merge_patch(cluster, namespace, "cmig/to-4-25", {"spec": {"rollback": {"requested": True}}})
    assert requested.returncode == 0, requested.stderr
    spec = json.loads(cluster.kubectl("get", "cmig/to-4-25", "-n", namespace, "-o", "json").stdout)["spec"]
    assert spec["rollback"]["requested"] is True

    cancelled = merge_patch(cluster, namespace, "cmig/to-4-25", {"spec": {"rollback": {"requested": False}}})
    assert cancelled.returncode != 0
    assert "spec.rollback.requested cannot be set back to false" in flat(cancelled.stderr)


def test_operational_settings_stay_editable(cluster, crds_installed, namespace) -> None:
    create(cluster, namespace, migration())
    for spec_patch in ({"rollback": {"policy": "Manual", "mode": "Graceful"}},
                       {"validation": {"timeoutSeconds": 900}},
                       {"maintenance": {"message": "almost done"}},
                       {"backoffLimit": 3},
                       {"jobTemplate": {"serviceAccountName": "engine"}}):
        result = merge_patch(cluster, namespace, "cmig/to-4-25", {"spec": spec_patch})
        assert result.returncode == 0, f"{spec_patch}: {result.stderr}"
