"""The CoaiMigration state machine on the in-memory API: every transition and failure branch."""

from __future__ import annotations

import copy
import datetime as dt
import itertools

from tests.unit.migration_world import World


def test_happy_path_runs_every_step_and_releases_the_lock() -> None:
    world = World().setup(storageMigration={"enabled": True})
    git_spec = copy.deepcopy(world.get("CoaiInstance", "chat")["spec"])
    status = world.run()
    assert status["phase"] == "Succeeded", status
    assert list(world.steps().items()) == [(s, "Succeeded") for s in (
        "Preflight", "Backup", "MaintenanceOn", "ConfigMigration", "Migrate", "StorageMigration", "Rollout",
        "Validate")]
    instance = world.get("CoaiInstance", "chat")
    assert instance["spec"] == git_spec  # Git owns the spec: the migration acts through status.upgrade
    assert instance["status"]["upgrade"]["version"] == "2.0.0" and instance["status"]["schemaVersion"] == "2.0.0"
    assert instance["status"]["version"] == "2.0.0" and world.rendered["version"] == "2.0.0"
    assert instance["status"]["upgrade"]["migration"] == "to-2" and not instance["status"]["upgrade"].get("maintenance")
    assert not instance["status"].get("activeMigration")
    assert world.ran == ["plan", "backup", "migrate", "migrate-storage", "validate"]


def test_failed_migrate_rolls_back_automatically() -> None:
    world = World().setup()
    world.results["migrate"] = {"ok": False, "error": "no_such_table"}
    status = world.run()
    assert status["phase"] == "RolledBack", status
    assert world.steps()["Migrate"] == "Failed"
    assert world.steps()["RollbackRestore"] == "Succeeded"
    instance = world.get("CoaiInstance", "chat")
    assert instance["status"]["upgrade"]["version"] == "1.8.0" and world.rendered["version"] == "1.8.0"
    assert not instance["status"]["upgrade"].get("configRules") and not instance["status"]["upgrade"].get("maintenance")
    assert world.rendered["config"] == {"LEGACY_AUTH_ENABLED": "true", "OLD_API_FORMAT": "1"}
    assert world.get("Secret", "coai-app")["data"] == {"JWT_SECRET": "ampq", "OPENAI_KEY": "c2s="}
    assert not instance["status"].get("activeMigration")


# --- bug 1: nothing hangs with the app held ----------------------------------------------------

def test_bug1_validation_without_a_backup_mounts_no_missing_volume_and_succeeds() -> None:
    world = World().setup(backup={"enabled": False})
    status = world.run()
    assert status["phase"] == "Succeeded", status
    validate = next(j for (k, _, n), j in world.kube.objects.items() if k == "Job" and "-validate-" in n)
    claims = [v for v in validate["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == []
    assert "--manifest" not in validate["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any("dataIntegrity" in m for _, r, m in world.events if r == "PlanWarning")


def test_bug1_a_pod_that_cannot_start_fails_its_step_naming_the_cause_then_rolls_back() -> None:
    world = World().setup()
    world.results["migrate"] = "image-pull"
    world.run_until_step("Migrate")
    world.settle()
    world.tick()
    assert world.steps()["Migrate"] == "Running"  # a pull may still succeed: not failed at once
    world.age_step("Migrate", 100)
    status = world.run()
    assert status["phase"] == "RolledBack", status
    migrate = next(s for s in status["steps"] if s["name"] == "Migrate")
    assert migrate["phase"] == "Failed" and "ImagePullBackOff" in migrate["message"], migrate
    assert not [n for (k, _, n) in world.kube.objects if k == "Job" and "-migrate-" in n]  # deleted, nothing runs


def test_bug1_an_unschedulable_pod_names_the_missing_claim() -> None:
    world = World().setup()
    world.kube.objects.pop(("PersistentVolumeClaim", "apps", "chat-storage"))
    world.run_until_step("Backup")
    world.settle()
    world.tick()
    assert world.steps()["Backup"] == "Running"
    world.age_step("Backup", 100)
    status = world.run()
    assert status["phase"] == "Failed", status  # nothing was changed yet: no rollback needed
    backup = next(s for s in status["steps"] if s["name"] == "Backup")
    assert 'persistentvolumeclaim "chat-storage" not found' in backup["message"], backup
    assert not world.get("CoaiInstance", "chat")["status"].get("activeMigration")


def test_bug1_an_in_operator_step_past_its_deadline_fails_and_rolls_back() -> None:
    world = World().setup(deadlines={"rollout": 60}, validation={"enabled": False})
    world.hooks.append(lambda w: setattr(w, "instance_ready", "Rollout" not in w.steps()))
    world.run_until_step("Rollout")
    world.hooks.clear()
    world.instance_ready = False
    world.settle()
    world.age_step("Rollout", 61)
    world.tick()
    world.instance_ready = True
    status = world.run()
    assert status["phase"] == "RolledBack", status
    rollout = next(s for s in status["steps"] if s["name"] == "Rollout")
    assert "deadline of 60s" in rollout["message"] and "spec.deadlines.rollout" in rollout["message"]


def test_bug1_a_job_step_past_its_deadline_fails() -> None:
    world = World().setup(deadlines={"migrate": 300})
    world.results["migrate"] = "pending"
    world.run_until_step("Migrate")
    job = next(j for (k, _, n), j in world.kube.objects.items() if k == "Job" and "-migrate-" in n)
    assert job["spec"]["activeDeadlineSeconds"] == 300
    world.kube.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "m", "namespace": "apps",
                    "labels": {"job-name": job["metadata"]["name"]}},
                    "status": {"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]}})
    world.age_step("Migrate", 400)
    status = world.run()
    assert status["phase"] == "RolledBack", status
    assert "deadline of 300s" in next(s for s in status["steps"] if s["name"] == "Migrate")["message"]


# --- bug 2: the snapshot is all-or-nothing -----------------------------------------------------

def test_bug2_a_secret_copy_that_fails_once_is_retried_and_no_secret_is_lost() -> None:
    world = World().setup(backup={"enabled": False}, validation={"enabled": False})
    world.kube.fail("create", "Secret", 500, name="to-2-snapshot")
    status = world.run()
    assert status["phase"] == "Succeeded", status
    copy_ = world.get("Secret", "to-2-snapshot")
    assert copy_["data"] == {"JWT_SECRET": "ampq", "OPENAI_KEY": "c2s="}
    live = world.get("Secret", "coai-app")["data"]
    assert live == {"SECRET": "ampq", "OPENAI_API_KEY": "c2s="}, live  # migrated from the real values


def test_bug2_a_secret_copy_that_cannot_be_written_fails_before_anything_changes() -> None:
    world = World().setup()
    world.kube.fail("create", "Secret", 403, times=99, name="to-2-snapshot")  # e.g. a ResourceQuota
    status = world.run()
    assert status["phase"] == "Failed", status
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "SnapshotIncomplete" and "Nothing was changed" in failed["message"], failed
    assert world.get("ConfigMap", "to-2-snapshot") is None  # never marked complete
    instance = world.get("CoaiInstance", "chat")
    assert "maintenance" not in world.rendered and world.rendered["version"] == "1.8.0"
    assert world.get("Secret", "coai-app")["data"] == {"JWT_SECRET": "ampq", "OPENAI_KEY": "c2s="}
    assert not instance["status"].get("activeMigration")


def test_bug2_rollback_refuses_an_incomplete_snapshot() -> None:
    world = World().setup()
    world.results["migrate"] = "pending"
    world.run_until_step("Migrate")
    world.kube.objects.pop(("Secret", "apps", "to-2-snapshot"))  # somebody deleted the copy
    world.results["migrate"] = {"ok": False, "error": "boom"}
    world.kube.objects = {k: v for k, v in world.kube.objects.items() if not (k[0] == "Job" and "-migrate-" in k[2])}
    status = world.run()
    assert status["phase"] == "Failed", status
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "RollbackFailed" and "snapshot" in failed["message"].lower(), failed
    # The live Secret is never patched from an empty copy: it keeps the migrated values for a person to decide.
    assert world.get("Secret", "coai-app")["data"] == {"SECRET": "ampq", "OPENAI_API_KEY": "c2s="}


# --- bug 3: a re-created migration never reads another one's backup ----------------------------

def _job_dirs(world: World) -> dict[str, str]:
    dirs = {}
    for (kind, _, _), job in world.kube.objects.items():
        if kind == "Job":
            args = job["spec"]["template"]["spec"]["containers"][0]["args"]
            if "--dir" in args:
                dirs[args[1]] = args[args.index("--dir") + 1]
    return dirs


def test_bug3_backups_are_keyed_by_the_migrations_uid() -> None:
    first = World().setup()
    first.results["migrate"] = {"ok": False, "error": "boom"}
    assert first.run()["phase"] == "RolledBack"
    again = World().setup()
    again.kube.objects[("CoaiMigration", "apps", "to-2")]["metadata"]["uid"] = "another-uid-2"
    again.results["migrate"] = {"ok": False, "error": "boom"}
    assert again.run()["phase"] == "RolledBack"
    one, two = _job_dirs(first), _job_dirs(again)
    assert one["backup"] == one["restore"] and two["backup"] == two["restore"]
    assert one["backup"] != two["backup"], (one, two)
    assert again.status()["backup"]["location"] == "pvc/chat-backup/" + two["backup"].removeprefix("/backup/")


# --- bug 4: events only on transitions ---------------------------------------------------------

def test_bug4_a_requested_rollback_waiting_for_the_lock_posts_one_event() -> None:
    world = World().setup(validation={"enabled": False})
    assert world.run()["phase"] == "Succeeded"
    world.migration("next", "2.0.0")
    world.get("CoaiInstance", "chat")["status"]["activeMigration"] = "next"  # another one holds the lock
    world.get("CoaiMigration", "to-2")["spec"]["rollback"] = {"requested": True}
    world.events.clear()
    for _ in range(10):
        assert world.tick() is not None
    assert world.reasons() == ["WaitingForLock"], world.events


def test_bug4_ticks_that_change_nothing_post_nothing() -> None:
    world = World().setup()
    world.results["migrate"] = "pending"
    world.run_until_step("Migrate")
    world.tick()
    world.events.clear()
    writes = len(world.kube.writes())
    for _ in range(5):
        world.tick()
    assert world.events == [] and len(world.kube.writes()) == writes


# --- bug 5: preflight compared with the plan, transport errors temporary, render errors are ours -----

def test_bug5_preflight_reporting_another_version_than_planned_stops_before_any_change() -> None:
    world = World().setup()
    world.results["plan"] = {"ok": True, "current": "1.7.0", "path": ["1.7.0-to-1.8.0"]}
    status = world.run()
    assert status["phase"] == "Failed", status
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "VersionMismatch" and "1.7.0" in failed["message"] and "1.8.0" in failed["message"]
    assert "Nothing was changed" in failed["message"]
    assert world.ran == ["plan", "backup"]  # the backup ran beside the plan: read-only, nothing migrated
    backup = next(s for s in status["steps"] if s["name"] == "Backup")
    assert backup["phase"] == "Skipped" and backup["message"].startswith("not waited for: the database is at 1.7.0")
    assert not world.get("CoaiInstance", "chat")["status"].get("activeMigration")


# --- the backup starts beside the preflight (steps.runs_beside) --------------------------------

def test_the_backup_starts_with_the_preflight_and_nothing_after_them_before_both_succeeded() -> None:
    world = World().setup()
    world.results["plan"] = "pending"  # its Job never finishes until the test says so
    world.tick()
    assert world.steps()["Preflight"] == "Running" and world.steps()["Backup"] == "Running"
    assert [n for (k, _, n) in world.kube.objects if k == "CoaiBackup"], "the backup was created at once"
    for _ in range(5):
        world.settle()
        world.tick()
    steps = world.steps()
    assert steps["Preflight"] == "Running" and steps["Backup"] == "Succeeded" and steps["MaintenanceOn"] == "Pending"
    assert world.rendered["version"] == "1.8.0" and "maintenance" not in world.rendered
    del world.results["plan"]
    status = world.run()
    assert status["phase"] == "Succeeded", status
    assert world.ran == ["backup", "plan", "migrate", "validate"]


def test_a_backup_failing_beside_the_preflight_fails_the_migration_at_once() -> None:
    world = World().setup()
    world.results["plan"] = "pending"
    world.results["backup"] = {"ok": False, "error": "disk full"}
    status = world.run()
    assert status["phase"] == "Failed", status
    assert "Nothing was changed" in status["message"] and "disk full" in status["message"]
    preflight = next(s for s in status["steps"] if s["name"] == "Preflight")
    assert preflight["phase"] == "Skipped" and preflight["message"].startswith("not waited for: Backup failed")
    assert world.steps()["MaintenanceOn"] == "Pending" and world.rendered["version"] == "1.8.0"
    assert not world.get("CoaiInstance", "chat")["status"].get("activeMigration")


def test_without_a_backup_the_preflight_runs_alone() -> None:
    world = World().setup(backup={"enabled": False})
    world.results["plan"] = "pending"
    for _ in range(3):
        world.tick()
        world.settle()
    assert world.steps()["Preflight"] == "Running" and world.steps()["MaintenanceOn"] == "Pending"
    assert "maintenance" not in world.rendered


def test_only_read_only_steps_run_beside_each_other() -> None:
    from coai_operator.migration.steps import FORWARD, ROLLBACK, runs_beside

    pairs = [(a.name, b.name) for steps in (FORWARD, ROLLBACK) for a, b in itertools.pairwise(steps)
             if runs_beside(a.name, b.name)]
    assert pairs == [("Preflight", "Backup")]
    assert not runs_beside("Preflight", "MaintenanceOn")  # the next step when the backup is disabled


def test_bug5_transport_errors_are_temporary() -> None:
    world = World().setup()
    world.results["migrate"] = "pending"
    world.run_until_step("Migrate")
    world.kube.fail("get", "Job", status=0, times=1)  # a timeout / refused connection
    delay = world.tick()
    assert delay is not None and world.steps()["Migrate"] == "Running"
    world.results.pop("migrate")
    assert world.run()["phase"] == "Succeeded"


def test_bug5_the_kube_client_turns_transport_failures_into_a_temporary_kube_error() -> None:
    import pytest
    import urllib3

    from coai_operator.kube import Kube, KubeError

    class Unreachable:
        def param_serialize(self, **kwargs):
            return "GET", "https://127.0.0.1:1/x", {}, None, None

        def call_api(self, *args, **kwargs):
            raise urllib3.exceptions.MaxRetryError(None, "https://127.0.0.1:1/x", "connection refused")

    with pytest.raises(KubeError) as caught:
        Kube(api=Unreachable()).get("v1", "Secret", "apps", "x")
    assert caught.value.status == 0 and "connection refused" in caught.value.message


# --- deleting a running migration cancels it: the running step ends, what changed is rolled back ----

def test_deleting_a_running_migration_rolls_it_back_after_the_running_step() -> None:
    world = World().setup(rollback={"policy": "Manual"})
    world.results["migrate"] = "pending"
    world.run_until_step("Migrate")
    world.get("CoaiMigration", "to-2")["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    world.tick()
    assert world.steps()["Migrate"] == "Running"  # a running engine command is never cut off
    world.results.pop("migrate")
    status = world.run()
    assert status["phase"] == "RolledBack", status
    assert world.steps()["Rollout"] == "Pending" and world.steps()["RollbackRestore"] == "Succeeded"
    assert "DeletionRequested" in world.reasons()
    assert not world.get("CoaiInstance", "chat")["status"].get("activeMigration")


def test_deleting_a_migration_that_waits_for_the_lock_ends_it_with_nothing_changed() -> None:
    world = World().setup()
    world.migration("other", "1.9.0")
    world.get("CoaiInstance", "chat")["status"]["activeMigration"] = "other"
    world.tick()
    assert world.status()["phase"] == "Pending"
    world.get("CoaiMigration", "to-2")["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = world.run()
    assert status["phase"] == "Failed" and "Nothing was changed" in status["message"], status


# --- the seed's 2.0 authentication: an RS256 key pair in a Secret mounted at /certs -------------

def test_a_migration_to_2_0_generates_the_rs256_key_pair_and_its_rollback_removes_it() -> None:
    from cryptography.hazmat.primitives import serialization

    world = World().setup(validation={"enabled": False})
    assert world.run()["phase"] == "Succeeded"
    instance = world.get("CoaiInstance", "chat")
    assert "certs" not in instance["spec"]
    assert instance["status"]["upgrade"]["certs"] == {"secretRef": {"name": "chat-jwt-keys"}}
    assert world.rendered["certs"] == {"secretRef": {"name": "chat-jwt-keys"}}
    config = world.rendered["config"]
    assert (config["JWT_ALGORITHM"], config["JWT_PUBLIC_KEY_FILE"], config["JWT_PRIVATE_KEY_FILE"]) == \
        ("RS256", "/certs/public.pem", "/certs/private.pem")
    keys = world.get("Secret", "chat-jwt-keys")["data"]
    import base64
    private = serialization.load_pem_private_key(base64.b64decode(keys["private.pem"]), password=None)
    public = serialization.load_pem_public_key(base64.b64decode(keys["public.pem"]))
    assert private.public_key().public_numbers() == public.public_numbers()
    assert keys["private.pem"] not in str(world.events) and keys["private.pem"] not in str(world.status())

    world.get("CoaiMigration", "to-2")["spec"]["rollback"] = {"requested": True}
    assert world.run()["phase"] == "RolledBack"
    instance = world.get("CoaiInstance", "chat")
    assert "certs" not in world.rendered and "JWT_ALGORITHM" not in world.rendered["config"]
    assert not instance["status"]["upgrade"].get("certs")
    # The operator may not delete Secrets: the unused pair stays, owned by (and deleted with) the instance.
    owners = world.get("Secret", "chat-jwt-keys")["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"]) for o in owners] == [("CoaiInstance", "chat")]


def test_an_instance_with_its_own_certs_keeps_them() -> None:
    world = World().setup(validation={"enabled": False})
    world.get("CoaiInstance", "chat")["spec"]["certs"] = {"secretRef": {"name": "mine"}}
    assert world.run()["phase"] == "Succeeded"
    assert world.rendered["certs"] == {"secretRef": {"name": "mine"}}
    assert not world.get("CoaiInstance", "chat")["status"]["upgrade"].get("certs")
    assert world.get("Secret", "chat-jwt-keys") is None


# --- the other transitions and failure branches ------------------------------------------------

def failed_reason(status: dict) -> str:
    return next(c for c in status["conditions"] if c["type"] == "Failed")["reason"]


def test_dry_run_plans_and_changes_nothing() -> None:
    world = World().setup(dryRun=True)
    status = world.run()
    assert status["phase"] == "Succeeded" and "dry run" in status["message"]
    assert set(world.steps().values()) == {"Skipped"} and world.ran == []
    assert not world.get("CoaiInstance", "chat")["status"].get("activeMigration")


def test_a_downgrade_is_refused_with_nothing_changed() -> None:
    world = World().setup()
    world.migration("down", "1.6.0")
    status = world.run("down")
    assert status["phase"] == "Failed" and failed_reason(status) == "Downgrade"
    assert "Nothing was changed" in status["message"] and world.kube.writes("create") == []


def test_a_missing_instance_is_waited_for_then_refused(monkeypatch) -> None:
    from coai_operator.migration import begin

    world = World().setup()
    world.kube.objects.pop(("CoaiInstance", "apps", "chat"))
    world.tick()
    assert world.status()["phase"] == "Pending"
    monkeypatch.setattr(begin, "INSTANCE_GRACE_SECONDS", -1)
    world.get("CoaiMigration", "to-2")["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
    status = world.run()
    assert status["phase"] == "Failed" and failed_reason(status) == "InstanceNotFound"


def test_manual_policy_keeps_the_lock_until_a_rollback_is_requested() -> None:
    world = World().setup(rollback={"policy": "Manual"})
    world.results["migrate"] = {"ok": False, "error": "boom"}
    status = world.run()
    assert status["phase"] == "Failed" and "rollback.requested" in status["message"]
    assert world.get("CoaiInstance", "chat")["status"]["activeMigration"] == "to-2"
    world.get("CoaiMigration", "to-2")["spec"]["rollback"]["requested"] = True
    assert world.run()["phase"] == "RolledBack"
    assert not world.get("CoaiInstance", "chat")["status"].get("activeMigration")


def test_never_policy_stops_and_releases_the_lock() -> None:
    world = World().setup(rollback={"policy": "Never"})
    world.results["migrate"] = {"ok": False, "error": "boom"}
    status = world.run()
    assert status["phase"] == "Failed" and "Never" in status["message"]
    assert not [s for s in world.steps() if s.startswith("Rollback")]
    assert not world.get("CoaiInstance", "chat")["status"].get("activeMigration")


def test_a_second_migration_waits_for_the_lock_then_runs_from_the_new_version() -> None:
    world = World().setup(validation={"enabled": False})
    world.migration("second", "2.0.0", validation={"enabled": False})
    world.get("CoaiMigration", "to-2")["spec"]["targetVersion"] = "1.9.0"
    world.results["plan"] = {"ok": True, "current": "1.8.0"}
    world.tick("to-2")
    world.tick("second")
    assert world.status("second")["phase"] == "Pending"
    assert world.run("to-2")["phase"] == "Succeeded"
    world.results["plan"] = {"ok": True, "current": "1.9.0"}
    status = world.run("second")
    assert status["phase"] == "Succeeded" and status["fromVersion"] == "1.9.0"


def test_a_failing_rollback_step_keeps_the_lock_and_says_where_the_backup_is() -> None:
    world = World().setup()
    world.results["migrate"] = {"ok": False, "error": "boom"}
    world.results["restore"] = {"ok": False, "error": "disk full"}
    status = world.run()
    assert status["phase"] == "Failed" and failed_reason(status) == "RollbackFailed"
    assert "disk full" in status["message"] and "CoaiBackup to-2-pre-" in status["message"]
    assert "at pvc/chat-backup/apps/to-2-pre-" in status["message"]
    assert world.get("CoaiInstance", "chat")["status"]["activeMigration"] == "to-2"


def test_a_rollback_step_past_its_deadline_ends_in_rollback_failed() -> None:
    world = World().setup(deadlines={"rollbackRollout": 30})
    world.results["migrate"] = {"ok": False, "error": "boom"}
    world.hooks.append(lambda w: setattr(w, "instance_ready", "RollbackRollout" not in w.steps()))
    world.run_until_step("RollbackRollout")
    world.hooks.clear()
    world.instance_ready = False
    world.age_step("RollbackRollout", 31)
    status = world.run()
    assert status["phase"] == "Failed" and failed_reason(status) == "RollbackFailed"
    assert "deadline of 30s" in status["message"]


def test_a_job_that_cannot_be_created_fails_its_step() -> None:
    world = World().setup()
    world.kube.fail("create", "Job", 403, times=99)
    status = world.run()
    assert status["phase"] == "Failed" and "cannot create Job" in status["message"]


def test_a_status_write_conflict_is_retried() -> None:
    world = World().setup()
    world.kube.fail("patch/status", "CoaiMigration", 409)
    assert world.tick() is not None and world.status() == {}
    assert world.run()["phase"] == "Succeeded"


def test_an_instance_deleted_during_the_migration_fails_it() -> None:
    world = World().setup()
    world.results["migrate"] = "pending"
    world.run_until_step("Migrate")
    world.kube.objects.pop(("CoaiInstance", "apps", "chat"))
    status = world.run()
    assert status["phase"] == "Failed" and failed_reason(status) == "InstanceNotFound"


def test_a_conflicting_instance_write_is_redone_from_a_fresh_read_and_announced_once() -> None:
    world = World().setup(validation={"enabled": False})
    world.results["migrate"] = "pending"
    world.run_until_step("Migrate")
    world.results.pop("migrate")
    # Rollout's status.upgrade writes answer 409 (the instance changed since it was read), more
    # often than one step retries: the step is retried later, from what the API has then.
    world.kube.fail("patch/status", "CoaiInstance", 409, times=4, name="chat")
    assert world.run()["phase"] == "Succeeded"
    assert all(f.times == 0 for f in world.kube.faults)
    assert world.get("CoaiInstance", "chat")["status"]["upgrade"]["version"] == "2.0.0"
    assert world.reasons().count("RolloutStarted") == 1


def test_pod_start_is_counted_from_the_jobs_creation_not_from_the_steps_start() -> None:
    """Seen in CI: a StorageMigration step whose first look hit an API error and whose operator was
    restarted created its Job 68 s after the step started; the 60 s pod-start deadline then failed
    it 3 s after the Job existed, and the migration rolled back for nothing."""
    world = World().setup(deadlines={"podStart": 60})
    world.results["migrate"] = "pending"
    world.run_until_step("Migrate")
    [job] = [j for (k, _, n), j in world.kube.objects.items() if k == "Job" and "-migrate-" in n]
    world.pending_pod(job["metadata"]["name"], waiting={"reason": "ContainerCreating"})
    record = next(s for s in world.status()["steps"] if s["name"] == "Migrate")
    started = dt.datetime.fromisoformat(record["startedAt"].replace("Z", "+00:00"))
    # The step started 100 s ago (within its own deadline); its Job is new.
    record["startedAt"] = (started - dt.timedelta(seconds=100)).strftime("%Y-%m-%dT%H:%M:%SZ")
    world.tick()
    assert world.steps()["Migrate"] == "Running"
    world.age_step("Migrate", 61)
    status = world.run()
    migrate = next(s for s in status["steps"] if s["name"] == "Migrate")
    assert migrate["phase"] == "Failed" and "did not start within 60s" in migrate["message"], migrate


def test_maintenance_holds_only_once_the_terminating_app_pods_are_gone() -> None:
    """A Deployment scaled to 0 reports 0 replicas as soon as its pods are terminating, while their
    app may still run (and write) for its grace period: Migrate must not start before they end."""
    world = World().setup()
    world.run_until_step("MaintenanceOn")
    world.settle()
    selector = world.get("Deployment", "chat")["spec"]["selector"]["matchLabels"]
    world.kube.put({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "chat-6f7-abc", "namespace": "apps", "labels": dict(selector),
        "deletionTimestamp": "2026-12-01T00:00:00Z"}, "status": {"phase": "Running"}})
    for _ in range(3):
        world.tick()
        world.settle()
    maintenance = next(s for s in world.status()["steps"] if s["name"] == "MaintenanceOn")
    assert maintenance["phase"] == "Running" and "chat-6f7-abc" in maintenance["message"], maintenance
    assert world.steps()["Migrate"] == "Pending"
    world.kube.objects.pop(("Pod", "apps", "chat-6f7-abc"))
    assert world.run()["phase"] == "Succeeded"



def test_a_job_step_ends_when_its_engine_exited_cleanly_before_the_job_says_complete() -> None:
    world = World(exit_lag=True).setup(storageMigration={"enabled": True})
    world.tick()  # Preflight creates its Job
    world.settle()  # the engine exited 0; the Job is still active with no condition
    job = next(o for (k, _, _), o in world.kube.objects.items() if k == "Job")
    assert not job["status"].get("conditions") and job["status"]["active"] == 1
    world.tick()
    assert world.steps()["Preflight"] == "Succeeded"  # not a round later, at Complete
    assert world.status()["fromVersion"] == "1.8.0"  # the result line was read from the pod
    assert world.run()["phase"] == "Succeeded"


def test_an_engine_that_exited_non_zero_waits_for_the_jobs_failed_condition() -> None:
    world = World(exit_lag=True).setup()
    world.results["migrate"] = {"ok": False, "error": "no_such_table"}
    for _ in range(40):
        world.tick()
        migrate = [o for (k, _, n), o in world.kube.objects.items() if k == "Job" and "migrate" in n]
        if migrate and "lagging" in migrate[0].get("status", {}):
            break
        world.settle()
    world.tick()
    assert world.steps()["Migrate"] == "Running"  # exit 1: the Job's retries and deadline decide
    assert world.run()["phase"] == "RolledBack"
