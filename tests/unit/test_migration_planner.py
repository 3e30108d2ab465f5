"""The pure parts of the CoaiMigration controller: planning, rollback planning, Jobs, snapshots."""

from __future__ import annotations

import base64
import json

import pytest

from coai_operator.backup.destination import BackupSource, Destination
from coai_operator.bundles import load_bundle
from coai_operator.bundles.config_migration import ConfigRules
from coai_operator.migration import backupstep, jobs, planner
from coai_operator.migration.jobsteps import parse_result
from coai_operator.migration.snapshot import (
    Snapshot,
    map_merge_patch,
    migrated_config,
    snapshot_objects,
    take_snapshot,
)
from coai_operator.migration.status import conditions_for

TABLE = load_bundle().table


def instance(version: str = "1.8.0", spec_version: str | None = None, **spec: object) -> dict:
    return {
        "apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance",
        "metadata": {"name": "chat", "namespace": "prod", "uid": "i-1"},
        "spec": {"version": spec_version or version, "database": {"host": "db", "user": "coai",
                 "passwordSecretRef": {"name": "coai-db", "key": "password"}}, **spec},
        "status": {"version": version},
    }


def migration(target: str = "2.0.0", **spec: object) -> dict:
    return {
        "apiVersion": "coai.dev/v1alpha1", "kind": "CoaiMigration",
        "metadata": {"name": "to-2", "namespace": "prod", "uid": "m-1234"},
        "spec": {"instanceRef": {"name": "chat"}, "targetVersion": target, **spec},
    }


def test_plan_1_8_to_2_0_passes_through_1_9() -> None:
    plan = planner.plan_migration(migration()["spec"], instance(), TABLE, "chat")
    assert (plan.from_version, plan.to_version) == ("1.8.0", "2.0.0")
    assert plan.path == ("1.8.0-to-1.9.0", "1.9.0-to-2.0.0")
    assert plan.steps == ("Preflight", "Backup", "MaintenanceOn", "ConfigMigration", "Migrate", "Rollout", "Validate")
    assert plan.checks == ("database", "health", "dataIntegrity")


@pytest.mark.parametrize(("current", "target", "reason", "words"), [
    ("2.0.0", "1.9.0", "Downgrade", "downgrade"),
    ("1.8.0", "3.0.0", "UnknownVersion", "3.0.0"),
    ("1.6.0", "2.0.0", "UnsupportedPath", "1.8"),
    ("2.0.0", "2.0.0", "AlreadyAtTarget", "already runs"),
])
def test_plan_refusals_name_a_reason_and_what_to_do(current: str, target: str, reason: str, words: str) -> None:
    with pytest.raises(planner.PlanRefused) as refused:
        planner.plan_migration(migration(target)["spec"], instance(current), TABLE, "chat")
    assert refused.value.reason == reason
    assert words in str(refused.value).lower()


def test_plan_refuses_a_missing_instance() -> None:
    with pytest.raises(planner.PlanRefused, match="does not exist") as missing:
        planner.plan_migration(migration()["spec"], None, TABLE, "chat")
    assert missing.value.reason == "InstanceNotFound"



def test_a_spec_version_ahead_of_the_deployed_one_is_what_the_migration_carries_out() -> None:
    # Git asks for 2.0.0 (an Automatic upgrade creates the migration); 1.8.0 is deployed and runs.
    plan = planner.plan_migration(migration("2.0.0")["spec"], instance("1.8.0", spec_version="2.0.0"), TABLE, "chat")
    assert (plan.from_version, plan.path) == ("1.8.0", ("1.8.0-to-1.9.0", "1.9.0-to-2.0.0"))
    deployed = instance("1.8.0", spec_version="2.0.0")
    deployed["status"]["upgrade"] = {"version": "1.9.0"}  # rolled to 1.9.0, the pods not yet reporting it
    assert planner.plan_migration(migration("2.0.0")["spec"], deployed, TABLE, "chat").from_version == "1.9.0"


def test_optional_steps_follow_the_spec() -> None:
    spec = migration(storageMigration={"enabled": True}, maintenance={"enabled": False},
                     validation={"enabled": False}, backup={"enabled": False})["spec"]
    assert planner.forward_steps(spec) == ("Preflight", "ConfigMigration", "Migrate", "StorageMigration", "Rollout")


def test_rollback_plan_depends_on_what_started() -> None:
    spec = migration()["spec"]
    assert planner.rollback_steps(spec, ["Preflight", "Backup"], backup_done=True) == ()
    assert planner.rollback_steps(spec, ["Preflight", "Backup", "MaintenanceOn", "ConfigMigration"], True) == (
        "RollbackConfig", "RollbackRollout")
    assert planner.rollback_steps(spec, ["Backup", "MaintenanceOn", "ConfigMigration", "Migrate"], True) == (
        "RollbackMaintenanceOn", "RollbackRestore", "RollbackConfig", "RollbackRollout")
    graceful = migration(rollback={"mode": "Graceful"})["spec"]
    assert planner.rollback_steps(graceful, ["Backup", "Migrate"], True) == (
        "RollbackMaintenanceOn", "RollbackExport", "RollbackRestore", "RollbackConfig", "RollbackRollout")


def test_job_names_are_deterministic_short_and_per_step() -> None:
    mig = migration()
    names = {step: jobs.job_name(mig, step) for step in jobs.STEP_SLUGS}
    assert names == {step: jobs.job_name(migration(), step) for step in jobs.STEP_SLUGS}
    assert len(set(names.values())) == len(names)
    long = migration()
    long["metadata"]["name"] = "x" * 45
    assert all(len(jobs.job_name(long, s)) <= 63 for s in jobs.STEP_SLUGS)


def test_the_rollback_restore_job_reads_the_backup_and_keeps_the_password_secret() -> None:
    job = jobs.build_job(migration(), instance(), planner.RB_RESTORE)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # Without a source the pre-migration CoaiBackup is on the default PVC, in <namespace>/<backup name>.
    folder = f"/backup/prod/{backupstep.backup_name(migration())}"
    assert container["args"][:4] == ["engine", "restore", "--dir", folder]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"backup": "chat-backup", "storage": "chat-storage", "config": "chat-config"}
    assert {"name": "backup", "mountPath": "/backup", "readOnly": True} in container["volumeMounts"]
    password = next(e for e in container["env"] if e["name"] == "MYSQL_PASSWORD")
    assert password == {"name": "MYSQL_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "coai-db", "key": "password"}}}
    assert all("value" not in e or "password" not in e["value"].lower() for e in container["env"])
    assert job["metadata"]["ownerReferences"][0]["uid"] == "m-1234"
    assert job["spec"]["backoffLimit"] == 1 and job["spec"]["ttlSecondsAfterFinished"] > 0
    # It may reach object storage: not a "migration" pod, which the NetworkPolicy confines.
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "backup"


def test_the_rollback_restore_reads_s3_with_the_key_as_a_file_and_checks_the_version() -> None:
    s3 = Destination("s3", {"bucket": "bk", "prefix": "p", "endpoint": "https://s3.example",
                            "credentialsSecretRef": {"name": "s3-creds"}})
    source = BackupSource(s3, "prod/to-2-pre-abcde", {"name": "bk-key"}, "to-2-pre-abcde")
    mig = migration()
    mig["status"] = {"fromVersion": "1.8.0"}
    pod = jobs.build_job(mig, instance(), planner.RB_RESTORE, source=source)["spec"]["template"]["spec"]
    args, env = pod["containers"][0]["args"], {e["name"]: e for e in pod["containers"][0]["env"]}
    assert args[args.index("--dir") + 1] == "s3://bk/p/prod/to-2-pre-abcde"
    assert args[args.index("--target-version") + 1] == "1.8.0"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert env["COAI_BACKUP_KEY_FILE"]["value"].endswith("/key")
    assert {v["name"] for v in pod["volumes"]} >= {"backup-key", "storage", "config"}
    assert "chat-backup" not in json.dumps(pod)


def test_config_yaml_is_written_only_by_the_restore() -> None:
    pod = jobs.build_job(migration(), instance(), planner.RB_RESTORE)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "config", "mountPath": "/config", "readOnly": False} in container["volumeMounts"]
    assert "--config=/config" in container["args"]
    assert "config" in container["args"][container["args"].index("--include") + 1].split(",")
    for step in (planner.PREFLIGHT, planner.MIGRATE, planner.STORAGE, planner.VALIDATE):
        pod = jobs.build_job(migration(), instance(), step)["spec"]["template"]["spec"]
        assert all(v["name"] != "config" for v in pod["volumes"]), step
    without = jobs.build_job(migration(backup={"include": ["database"]}), instance(), planner.RB_RESTORE)
    args = without["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--config=/config" not in args and args[args.index("--include") + 1] == "database"


def test_jobs_write_the_instance_volumes_as_the_app_does() -> None:
    """A Job that could not write what the app wrote fails with EACCES on /storage (seen on the real node)."""
    default = jobs.build_job(migration(), instance(), planner.STORAGE)["spec"]["template"]["spec"]
    assert {k: default["securityContext"][k] for k in ("runAsUser", "runAsGroup", "fsGroup")} == \
        {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001}
    own = {"runAsNonRoot": True, "runAsUser": 2000, "runAsGroup": 3000, "fsGroup": 3000}
    pod = jobs.build_job(migration(), instance(podSecurityContext=own), planner.STORAGE)
    context = pod["spec"]["template"]["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (2000, 3000, 3000)
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_jobs_are_restricted_by_default_and_take_the_job_template() -> None:
    job = jobs.build_job(migration(), instance(), planner.MIGRATE)
    pod = job["spec"]["template"]["spec"]
    sc = pod["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    custom = migration(jobTemplate={"resources": {"limits": {"memory": "4Gi"}}, "nodeSelector": {"pool": "db"},
                                    "serviceAccountName": "engine", "image": "registry.local/coai-operator:dev"},
                       backoffLimit=3, migrations={"configMapRef": {"name": "extra-sql"}})
    job = jobs.build_job(custom, instance(), planner.MIGRATE)
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "db"} and pod["serviceAccountName"] == "engine"
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "4Gi"}}
    assert pod["containers"][0]["image"] == "registry.local/coai-operator:dev"
    assert job["spec"]["backoffLimit"] == 3
    assert pod["containers"][0]["args"][-2:] == ["--bundle-dir", "/bundle"]
    assert {"name": "bundle", "configMap": {"name": "extra-sql"}} in pod["volumes"]


def test_validate_job_targets_the_service_unless_a_base_url_is_given() -> None:
    args = jobs.engine_args(migration(), instance(), planner.VALIDATE)
    assert args[args.index("--base-url") + 1] == "http://chat.prod.svc:80"
    args = jobs.engine_args(migration(validation={"baseURL": "http://127.0.0.1:9999", "checks": ["database"]}),
                            instance(), planner.VALIDATE)
    assert args[args.index("--base-url") + 1] == "http://127.0.0.1:9999"
    assert args[args.index("--checks") + 1] == "database"


def secret(data: dict[str, str]) -> dict:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def test_snapshot_round_trips_through_its_configmap_and_secret() -> None:
    inst = instance(config={"LOG_LEVEL": "info"}, secretRef={"name": "coai-app"}, image="programzmh/chatnio",
                    maintenance={"enabled": False})
    snap = take_snapshot(inst, "1.8.0", secret({"JWT_SECRET": "s" * 32, "OPENAI_KEY": "sk-1"}))
    cm, sec = snapshot_objects(migration(), snap)
    assert sec is not None and "sk-1" not in json.dumps(cm)
    assert Snapshot.from_objects(cm, sec) == snap


def test_config_migration_to_2_0_renames_secret_keys_on_the_secret_side() -> None:
    inst = instance(config={"LEGACY_AUTH_ENABLED": "true", "SITE": "x"}, secretRef={"name": "coai-app"})
    snap = take_snapshot(inst, "1.8.0", secret({"JWT_SECRET": "s" * 32, "OPENAI_KEY": "sk-1"}))
    rules = load_bundle().config_rules(
        [h for h in __import__("coai_operator.domain.versions", fromlist=["plan_path"]).plan_path(
            "1.8.0", "2.0.0", TABLE).hops], {"set": {"SITE": "y"}})
    plan = migrated_config(snap, rules)
    assert plan.secret == {"SECRET": "s" * 32, "OPENAI_API_KEY": "sk-1"}
    assert plan.config["RBAC_ENABLED"] == "true" and plan.config["API_VERSION"] == "v2"
    assert "LEGACY_AUTH_ENABLED" not in plan.config and plan.config["SITE"] == "y"
    assert not any("sk-1" in c or "s" * 32 in c for c in plan.changes)


def test_config_migration_with_no_rules_changes_nothing() -> None:
    snap = take_snapshot(instance(config={"A": "1"}), "1.8.0", None)
    assert migrated_config(snap, [ConfigRules()]).config == {"A": "1"}


def test_map_merge_patch_removes_and_sets_only_differences() -> None:
    assert map_merge_patch({"A": "1", "B": "2"}, {"A": "1", "C": "3"}) == {"B": None, "C": "3"}
    assert map_merge_patch({"A": "1"}, {"A": "1"}) is None


def test_parse_result_takes_the_last_json_line() -> None:
    assert parse_result('log line\n{"ok": true, "command": "backup"}\n') == {"ok": True, "command": "backup"}
    assert parse_result("no json here") is None
    assert parse_result(None) is None


def test_conditions_follow_the_phase() -> None:
    status = {"phase": "Succeeded"}
    conds = {c["type"]: c["status"] for c in conditions_for(status, 3, "Succeeded", "ok")}
    assert conds == {"Ready": "True", "Progressing": "False", "Failed": "False", "RolledBack": "False",
                     "Reconciling": "False", "Stalled": "False"}
    status = {"phase": "RollingBack"}
    conds = {c["type"]: c["status"] for c in conditions_for(status, 3, "RollingBack", "x")}
    assert conds["Progressing"] == "True" and conds["Ready"] == "False" and conds["Reconciling"] == "True"
    conds = {c["type"]: c["status"] for c in conditions_for({"phase": "Failed"}, 3, "MigrateFailed", "x")}
    assert conds["Stalled"] == "True" and conds["Failed"] == "True" and conds["Reconciling"] == "False"
