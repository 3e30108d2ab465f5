"""CoaiMigration end to end: every step's Job runs for real (a container of the operator image on the
real node, as non-root) against a real MariaDB, and validation calls the app's real Service."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from coai_operator.engine.dbconfig import DbConfig
from coai_operator.instance.upgrade import deployed_version
from e2e.conftest import Cluster, OperatorProcess
from e2e.helpers import wait_for
from e2e.localcluster.appimages import STANDIN_IMAGE
from e2e.migration_support import (
    APP_SECRET,
    Deployed,
    deploy_instance,
    file_digests,
    migration_manifest,
    query,
    table_checksums,
    wait_phase,
)


@pytest.fixture
def deployed(cluster: Cluster, operator: OperatorProcess, namespace: str, db_config: DbConfig) -> Deployed:
    return deploy_instance(cluster, namespace, db_config, version="1.8.0")


def secret_data(deployed: Deployed, name: str) -> dict[str, str]:
    data = deployed.get("secret", name).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_upgrade_1_8_to_2_0_runs_every_step_for_real(deployed: Deployed) -> None:
    db = deployed.db
    users_before = query(db, "SELECT id, is_admin FROM users ORDER BY id")
    conversations_before = query(db, "SELECT COUNT(*) FROM conversations")[0][0]
    # No baseURL: the Validate Job calls the instance's own Service, where the new pods answer.
    deployed.kubectl("apply", "-f", "-", input=migration_manifest(
        "to-2", "2.0.0", storageMigration={"enabled": True},
        validation={"checks": ["database", "health", "dataIntegrity"]}))
    mig = wait_phase(deployed, "to-2", {"Succeeded", "Failed", "RolledBack"}, timeout=300)
    status = mig["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert (status["fromVersion"], status["toVersion"]) == ("1.8.0", "2.0.0")
    assert status["path"] == ["1.8.0-to-1.9.0", "1.9.0-to-2.0.0"]
    steps = {s["name"]: s for s in status["steps"]}
    assert list(steps) == ["Preflight", "Backup", "MaintenanceOn", "ConfigMigration", "Migrate",
                           "StorageMigration", "Rollout", "Validate"]
    assert all(s["phase"] == "Succeeded" for s in steps.values())
    for name in ("Preflight", "Backup", "Migrate", "StorageMigration", "Validate"):
        # A step ends at its engine's clean exit; the Job controller counts the pod a second or two later.
        wait_for(lambda job=steps[name]["job"]: deployed.get("job", job)["status"].get("succeeded") == 1,
                 timeout=60, message=f"the {name} Job counted succeeded")
    assert {a["name"] for a in status["backup"]["artifacts"]} >= {"database.sql.gz"}
    assert status["backup"]["rowCounts"]["users"] == len(users_before)
    # One backup path: the Backup step's backup is a pinned CoaiBackup owned by the migration.
    backup = deployed.get("cbk", status["backup"]["name"])
    assert backup["spec"]["pinned"] is True and backup["status"]["phase"] == "Completed"
    assert [(o["kind"], o["name"]) for o in backup["metadata"]["ownerReferences"]] == [("CoaiMigration", "to-2")]
    assert status["backup"]["location"] == f"pvc/chat-backup/{deployed.namespace}/{backup['metadata']['name']}"
    assert steps["Backup"]["job"] == backup["status"]["job"]
    assert status["previous"]["version"] == "1.8.0"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == "True" and conditions["Failed"] == "False"

    instance = deployed.get("coai")
    # Git owns the spec: the migration deployed 2.0.0 through status.upgrade; the old spec.version is
    # reported as a refused downgrade until Git (here: nobody) is updated (docs/gitops.md).
    assert instance["spec"]["version"] == "1.8.0" and deployed_version(instance["status"]) == "2.0.0"
    stalled = next(c for c in instance["status"]["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "Downgrade"), stalled
    assert instance["status"]["version"] == "2.0.0" and instance["status"]["schemaVersion"] == "2.0.0"
    assert not instance["status"].get("activeMigration")
    # spec.maintenance is Git's (the CRD defaults it to enabled: false); the migration's hold is gone.
    assert not instance["spec"]["maintenance"]["enabled"] and not instance["status"]["upgrade"].get("maintenance")
    wait_for(lambda: deployed.get("coai")["status"]["phase"] == "Ready", timeout=30,
             message="the instance leaves phase Migrating when the lock is released")
    rollouts = json.loads(deployed.kubectl("get", "events", "--field-selector", "reason=RolloutStarted",
                                           "-o", "json").stdout)["items"]
    assert sum(e.get("count", 1) for e in rollouts) == 1
    image = deployed.get("deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(":2.0.0")

    env = deployed.get("configmap", "chat-env")["data"]
    assert env["RBAC_ENABLED"] == "true" and env["API_VERSION"] == "v2"
    assert "LEGACY_AUTH_ENABLED" not in env and "OLD_API_FORMAT" not in env
    assert secret_data(deployed, "coai-app") == {"SECRET": APP_SECRET["JWT_SECRET"],
                                                 "OPENAI_API_KEY": APP_SECRET["OPENAI_KEY"]}

    versions = [row[0] for row in query(db, "SELECT version FROM schema_migrations")]
    assert {"1.9.0", "2.0.0"} <= set(versions)
    columns = [row[0] for row in query(db, "SELECT column_name FROM information_schema.columns WHERE "
                                           "table_schema = %s AND table_name = 'users'", (db.database,))]
    assert "is_admin" not in columns
    roles = dict(query(db, "SELECT ur.user_id, r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id"))
    assert roles == {uid: ("admin" if admin else "user") for uid, admin in users_before}
    assert query(db, "SELECT COUNT(*) FROM conversations")[0][0] == conversations_before
    paths = [row[0] for row in query(db, "SELECT file_path FROM files")]
    assert paths and all(p.startswith("uploads/") for p in paths)

    listing = deployed.kubectl("get", "cmig").stdout
    assert "to-2" in listing and "Succeeded" in listing and "2.0.0" in listing


def test_a_failing_user_sql_step_rolls_everything_back(deployed: Deployed) -> None:
    db = deployed.db
    storage = deployed.storage_dir()
    before_tables, before_files = table_checksums(db), file_digests(storage)
    before_env = deployed.get("configmap", "chat-env")["data"]
    deployed.kubectl("create", "configmap", "broken-sql",
                     "--from-literal=2.0.0-zz-broken.sql=UPDATE no_such_table SET x = 1;")
    deployed.kubectl("apply", "-f", "-", input=migration_manifest(
        "broken", "2.0.0", migrations={"configMapRef": {"name": "broken-sql"}}, storageMigration={"enabled": True},
        validation={"enabled": False}))
    mig = wait_phase(deployed, "broken", {"Succeeded", "Failed", "RolledBack"}, timeout=300)
    status = mig["status"]
    assert status["phase"] == "RolledBack", json.dumps(status, indent=1)
    steps = {s["name"]: s["phase"] for s in status["steps"]}
    assert steps["Migrate"] == "Failed"
    assert steps["RollbackRestore"] == "Succeeded" and steps["RollbackConfig"] == "Succeeded"
    assert "no_such_table" in json.dumps(status)

    assert table_checksums(db) == before_tables
    assert file_digests(storage) == before_files
    instance = deployed.get("coai")
    assert deployed_version(instance["status"]) == "1.8.0" and instance["status"]["version"] == "1.8.0"
    # The rollback runs what ran before, by its digest (the node reports repo@sha256 like a pull).
    image = deployed.get("deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{STANDIN_IMAGE}:1.8.0@{status['previous']['imageDigest']}", image
    wait_for(lambda: deployed.get("configmap", "chat-env")["data"] == before_env, timeout=30,
             message="ConfigMap env restored")
    assert secret_data(deployed, "coai-app") == APP_SECRET
    assert not instance["status"].get("activeMigration")


def test_refusals_change_nothing(deployed: Deployed) -> None:
    before = table_checksums(deployed.db)
    deployed.kubectl("apply", "-f", "-", input=migration_manifest("down", "1.6.0"))
    deployed.kubectl("apply", "-f", "-", input=migration_manifest("unknown", "9.9.0"))
    deployed.kubectl("apply", "-f", "-", input=migration_manifest("orphan", "2.0.0", instance="nope"))
    expected = {"down": "Downgrade", "unknown": "UnknownVersion", "orphan": "InstanceNotFound"}
    for name, reason in expected.items():
        status = wait_phase(deployed, name, {"Failed", "Succeeded"}, timeout=60)["status"]
        assert status["phase"] == "Failed"
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == reason and "Nothing was changed" in failed["message"]
        assert not deployed.kubectl("get", "jobs", "-l", f"coai.dev/migration={name}", "-o", "name").stdout
    assert table_checksums(deployed.db) == before
    assert deployed_version(deployed.get("coai")["status"]) == "1.8.0"


def test_dry_run_plans_and_changes_nothing(deployed: Deployed) -> None:
    before = table_checksums(deployed.db)
    deployed.kubectl("apply", "-f", "-", input=migration_manifest("plan-only", "2.0.0", dryRun=True))
    status = wait_phase(deployed, "plan-only", {"Succeeded", "Failed"}, timeout=60)["status"]
    assert status["phase"] == "Succeeded" and status["path"] == ["1.8.0-to-1.9.0", "1.9.0-to-2.0.0"]
    assert "dry run" in status["message"] and "Backup" in status["message"]
    assert {s["phase"] for s in status["steps"]} == {"Skipped"}
    assert table_checksums(deployed.db) == before
    assert not deployed.kubectl("get", "jobs", "-o", "name").stdout
    assert not deployed.get("coai")["status"].get("activeMigration")


def test_two_migrations_for_one_instance_run_one_after_the_other(deployed: Deployed) -> None:
    common = {"validation": {"checks": ["database", "dataIntegrity"]}}
    deployed.kubectl("apply", "-f", "-", input=migration_manifest("first", "1.9.0", **common))
    wait_for(lambda: deployed.get("coai")["status"].get("activeMigration") == "first", timeout=60,
             message="the first migration holds the instance lock")
    deployed.kubectl("apply", "-f", "-", input=migration_manifest("second", "2.0.0", **common))
    first = wait_phase(deployed, "first", {"Succeeded", "Failed", "RolledBack"}, timeout=300)["status"]
    second = wait_phase(deployed, "second", {"Succeeded", "Failed", "RolledBack"}, timeout=300)["status"]
    assert first["phase"] == "Succeeded" and second["phase"] == "Succeeded", (first, second)
    assert first["completedAt"] <= second["startedAt"]
    assert second["fromVersion"] == "1.9.0"
    assert deployed.get("coai")["status"]["version"] == "2.0.0"
    waited = json.loads(deployed.kubectl("get", "events", "--field-selector", "reason=WaitingForLock",
                                         "-o", "json").stdout)["items"]
    assert {e["involvedObject"]["name"] for e in waited} == {"second"}


def test_a_succeeded_migration_can_be_rolled_back_on_request(deployed: Deployed) -> None:
    before = table_checksums(deployed.db)
    deployed.kubectl("apply", "-f", "-", input=migration_manifest(
        "up", "1.9.0", rollback={"policy": "Manual"}, validation={"checks": ["database"]}))
    assert wait_phase(deployed, "up", {"Succeeded", "Failed"}, timeout=300)["status"]["phase"] == "Succeeded"
    assert deployed.get("coai")["status"]["version"] == "1.9.0"
    deployed.kubectl("patch", "cmig", "up", "--type=merge", "-p", '{"spec": {"rollback": {"requested": true}}}')
    status = wait_phase(deployed, "up", {"RolledBack"}, timeout=300)["status"]
    assert status["phase"] == "RolledBack", json.dumps(status, indent=1)
    instance = deployed.get("coai")
    assert deployed_version(instance["status"]) == "1.8.0" and instance["status"]["schemaVersion"] == "1.8.0"
    assert table_checksums(deployed.db) == before


def end_state(deployed: Deployed) -> dict:
    """What an upgrade leaves behind, without run-specific values (times, Job names)."""
    db = deployed.db
    counts = {t: query(db, f"SELECT COUNT(*) FROM `{t}`")[0][0] for t in table_checksums(db)}
    instance = deployed.get("coai")
    return {
        "instance": (deployed_version(instance["status"]), instance["status"].get("schemaVersion")),
        "env": {k: v for k, v in deployed.get("configmap", "chat-env")["data"].items() if not k.startswith("MYSQL_")},
        "secret": sorted(secret_data(deployed, "coai-app")),
        "schema": [row[0] for row in query(db, "SELECT version FROM schema_migrations ORDER BY version")],
        "rows": counts,
        "roles": query(db, "SELECT ur.user_id, r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id "
                           "ORDER BY ur.user_id"),
        "steps": [(s["name"], s["phase"]) for s in deployed.get("cmig", "to-2")["status"]["steps"]],
    }


def test_operator_killed_in_every_phase_still_finishes_the_same_way(
        cluster: Cluster, operator: OperatorProcess, namespace: str, db_config: DbConfig,
        mariadb_server: dict) -> None:
    from tests.mariadb import fresh_database

    spec = {"validation": {"checks": ["database", "dataIntegrity"]}}
    # Reference: an uninterrupted run in its own namespace and database.
    reference_ns = f"{namespace}-ref"
    cluster.kubectl("create", "namespace", reference_ns)
    try:
        with fresh_database(mariadb_server) as ref_db:
            reference = deploy_instance(cluster, reference_ns, ref_db)
            reference.kubectl("apply", "-f", "-", input=migration_manifest("to-2", "2.0.0", **spec))
            assert wait_phase(reference, "to-2", {"Succeeded", "Failed", "RolledBack"})["status"]["phase"] == \
                "Succeeded"
            expected = end_state(reference)
    finally:
        cluster.kubectl("delete", "namespace", reference_ns, "--wait=false", check=False)

    deployed = deploy_instance(cluster, namespace, db_config)
    deployed.kubectl("apply", "-f", "-", input=migration_manifest("to-2", "2.0.0", **spec))
    running, finished = ("Planning", "BackingUp", "Migrating", "Validating"), {"Succeeded", "Failed", "RolledBack"}
    killed_in: list[str] = []

    def a_new_phase() -> str | None:
        now = (deployed.get("cmig", "to-2").get("status") or {}).get("phase")
        return now if now in finished or (now in running and now not in killed_in) else None

    # SIGKILL the operator once in every phase it is seen in (a fast phase may pass unseen).
    while (phase := wait_for(a_new_phase, timeout=240, interval=0.1, message="the next phase")) not in finished:
        operator.kill()
        killed_in.append(phase)
        operator.start()
    final = wait_phase(deployed, "to-2", {"Succeeded", "Failed", "RolledBack"})["status"]
    assert final["phase"] == "Succeeded", json.dumps(final, indent=1)
    assert len(killed_in) >= 3, killed_in
    assert end_state(deployed) == expected


def pvc_dir(deployed: Deployed, claim: str) -> Path:
    volume = deployed.get("pvc", claim)["spec"]["volumeName"]
    return Path(json.loads(deployed.cluster.kubectl("get", "pv", volume, "-o", "json").stdout)
                ["spec"]["local"]["path"])


def test_graceful_manual_rollback_waits_for_the_request_and_exports_first(deployed: Deployed) -> None:
    before = table_checksums(deployed.db)
    deployed.kubectl("create", "configmap", "broken-sql",
                     "--from-literal=2.0.0-zz-broken.sql=ALTER TABLE users ADD COLUMN broken INT; SELEKT 1;")
    deployed.kubectl("apply", "-f", "-", input=migration_manifest(
        "graceful", "2.0.0", migrations={"configMapRef": {"name": "broken-sql"}},
        rollback={"policy": "Manual", "mode": "Graceful"}, validation={"enabled": False}))
    failed = wait_phase(deployed, "graceful", {"Failed", "Succeeded", "RolledBack"}, timeout=300)["status"]
    assert failed["phase"] == "Failed" and "rollback.requested" in failed["message"]
    # Manual: the instance stays locked and in maintenance until a person decides.
    instance = deployed.get("coai")
    assert instance["status"]["activeMigration"] == "graceful"
    assert instance["status"]["upgrade"]["maintenance"]["migration"] == "graceful"
    assert deployed.get("deployment")["spec"]["replicas"] == 0
    assert table_checksums(deployed.db) != before

    deployed.kubectl("patch", "cmig", "graceful", "--type=merge", "-p", '{"spec": {"rollback": {"requested": true}}}')
    status = wait_phase(deployed, "graceful", {"RolledBack"}, timeout=300)["status"]
    assert status["phase"] == "RolledBack", json.dumps(status, indent=1)
    steps = [s["name"] for s in status["steps"] if s["name"].startswith("Rollback")]
    assert steps == ["RollbackMaintenanceOn", "RollbackExport", "RollbackRestore", "RollbackConfig",
                     "RollbackRollout"]
    # The export is a second CoaiBackup of the migration (docs/backups.md), next to the pinned pre backup.
    post = json.loads(deployed.kubectl("get", "cbk", "-l", "coai.dev/migration=graceful,coai.dev/backup-of=post",
                                       "-o", "json").stdout)["items"]
    assert len(post) == 1 and post[0]["status"]["phase"] == "Completed", post
    assert not post[0]["spec"]["pinned"] and status["backup"]["name"].startswith("graceful-pre-")
    export = pvc_dir(deployed, "chat-backup") / deployed.namespace / post[0]["metadata"]["name"] / "manifest.json"
    assert json.loads(export.read_text())["rowCounts"]["users"] > 0
    assert table_checksums(deployed.db) == before
    instance = deployed.get("coai")
    assert not instance["status"].get("activeMigration") and instance["status"]["version"] == "1.8.0"
    assert not (instance["spec"].get("maintenance") or {}).get("enabled")


def test_deleting_a_finished_migration_does_not_wait_for_the_operator(deployed: Deployed,
                                                                      operator: OperatorProcess) -> None:
    deployed.kubectl("apply", "-f", "-", input=migration_manifest("quick", "1.9.0", validation={"enabled": False}))
    status = wait_phase(deployed, "quick", {"Succeeded", "Failed", "RolledBack"})["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    wait_for(lambda: not deployed.get("cmig", "quick")["metadata"].get("finalizers"), timeout=30,
             message="no finalizer left on a finished migration")
    operator.stop()
    try:
        done = deployed.kubectl("delete", "cmig", "quick", "--timeout=20s", check=False)
        assert done.returncode == 0, done.stderr
        assert "quick" not in deployed.kubectl("get", "cmig", "-o", "name").stdout
    finally:
        operator.start()


def test_deleting_a_running_migration_rolls_it_back_before_it_goes(deployed: Deployed) -> None:
    db = deployed.db
    before_tables, before_files = table_checksums(db), file_digests(deployed.storage_dir())
    deployed.kubectl("apply", "-f", "-", input=migration_manifest(
        "doomed", "2.0.0", storageMigration={"enabled": True}, validation={"enabled": False}))
    wait_for(lambda: (deployed.get("cmig", "doomed").get("status") or {}).get("currentStep") in
             ("ConfigMigration", "Migrate", "StorageMigration"), timeout=240, interval=0.2,
             message="the migration is changing the instance")
    deployed.kubectl("delete", "cmig", "doomed", "--wait=false")
    reasons: set[str] = set()

    def gone() -> bool:
        found = deployed.kubectl("get", "cmig", "doomed", "-o", "json", check=False)
        if found.returncode != 0:
            return True
        reasons.update(c.get("reason", "") for c in (json.loads(found.stdout).get("status") or {}).get("conditions")
                       or [])
        return False

    wait_for(gone, timeout=300, interval=0.5, message="the deleted migration rolled back and went away")
    assert table_checksums(db) == before_tables
    assert file_digests(deployed.storage_dir()) == before_files
    instance = deployed.get("coai")
    assert deployed_version(instance["status"]) == "1.8.0" and not instance["status"].get("activeMigration")
    assert secret_data(deployed, "coai-app") == APP_SECRET
    events = json.loads(deployed.kubectl("get", "events", "--field-selector", "reason=DeletionRequested",
                                         "-o", "json").stdout)["items"]
    assert events, "the rollback says why it happened"
