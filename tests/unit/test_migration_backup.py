"""The CoaiMigration's backups are CoaiBackups (migration/backupstep.py), on the in-memory API with the
real CoaiBackup controller (backup/controller.py) in the loop: one backup path."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest

from coai_operator.backup import schedule
from coai_operator.migration import backupstep, testfaults
from tests.unit.migration_world import NS, World

S3_LOCATION = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiBackupLocation",
               "metadata": {"name": "offsite", "namespace": NS},
               "spec": {"default": True, "s3": {"bucket": "bk", "prefix": "prod", "endpoint": "https://s3.example",
                                                "credentialsSecretRef": {"name": "s3-creds"}}}}


def backups(world: World) -> dict[str, dict]:
    return {name: obj for (kind, _, name), obj in world.kube.objects.items() if kind == "CoaiBackup"}


def jobs_of(world: World, command: str) -> list[dict]:
    return [j for (k, _, _), j in world.kube.objects.items()
            if k == "Job" and j["spec"]["template"]["spec"]["containers"][0]["args"][1] == command]


def env_of(job: dict) -> dict[str, dict]:
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_backup_step_creates_a_pinned_coaibackup_owned_by_the_migration() -> None:
    world = World().setup(deadlines={"backup": 1800, "podStart": 30}, backup={"include": ["database", "storage"]})
    git_spec = copy.deepcopy(world.get("CoaiInstance", "chat")["spec"])
    status = world.run()
    assert status["phase"] == "Succeeded", status
    name = backupstep.backup_name(world.get("CoaiMigration", "to-2"))
    assert list(backups(world)) == [name] and name.startswith("to-2-pre-")
    backup = backups(world)[name]
    owner = backup["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("CoaiMigration", "to-2", "uid-to-2")
    spec = backup["spec"]
    assert spec["pinned"] is True and spec["retainData"] is True and spec["verify"] is True
    assert spec["include"] == ["database", "storage"]
    assert spec["destination"] == {"pvc": {"name": "chat-backup", "size": "20Gi"}}  # no location anywhere
    assert spec["jobTemplate"] == {"activeDeadlineSeconds": 1800, "podStartSeconds": 30}
    assert backup["status"]["phase"] == "Completed"
    # The backup's Job is the CoaiBackup controller's, and it is the step's Job.
    [job] = jobs_of(world, "backup")
    assert job["metadata"]["ownerReferences"][0]["name"] == name
    assert job["spec"]["activeDeadlineSeconds"] == 1800
    assert next(s for s in status["steps"] if s["name"] == "Backup")["job"] == job["metadata"]["name"]
    assert status["backup"]["name"] == name and status["backup"]["location"] == f"pvc/chat-backup/{NS}/{name}"
    assert status["backup"]["rowCounts"] == {"users": 40}
    assert status["backup"]["artifacts"] == [{"name": "database.sql.gz", "bytes": 10, "sha256": None}]
    # Validate compares with the backup's row counts, handed over in its environment.
    [validate] = jobs_of(world, "validate")
    assert json.loads(env_of(validate)["COAI_EXPECTED_ROW_COUNTS"]["value"]) == {"users": 40}
    assert world.get("CoaiInstance", "chat")["spec"] == git_spec
    assert "PersistentVolumeClaim" in {k for (k, _, n) in world.kube.objects if n == "chat-backup"}


@pytest.mark.parametrize(("backup_spec", "expected"), [
    pytest.param({}, {"locationRef": {"name": "offsite"}}, id="namespace-default"),
    pytest.param({"locationRef": {"name": "other"}}, {"locationRef": {"name": "other"}}, id="locationRef"),
    pytest.param({"pvc": {"name": "mine", "size": "5Gi"}}, {"destination": {"pvc": {"name": "mine", "size": "5Gi"}}},
                 id="explicit-pvc-wins-over-the-default"),
])
def test_the_destination_follows_spec_backup_then_the_default_location(backup_spec: dict, expected: dict) -> None:
    world = World().setup(backup=backup_spec)
    world.kube.put(S3_LOCATION)
    body = backupstep.desired(world.kube, world.get("CoaiMigration", "to-2"), backupstep.PRE, 3600)
    assert {k: body["spec"][k] for k in ("locationRef", "destination") if k in body["spec"]} == expected


def test_a_failed_backup_fails_the_migration_with_its_reason_and_nothing_changed() -> None:
    world = World().setup()
    world.results["backup"] = {"ok": False, "reason": "InsufficientSpace",
                               "error": "not enough space at /backup: need 3.0 GiB, 1.0 GiB free"}
    status = world.run()
    assert status["phase"] == "Failed", status
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InsufficientSpace" and "3.0 GiB" in failed["message"]
    assert "Nothing was changed" in failed["message"]
    assert world.ran == ["plan", "backup"] and not world.get("CoaiInstance", "chat")["status"].get("activeMigration")


def test_a_backup_that_does_not_finish_within_the_step_deadline_fails_it() -> None:
    world = World().setup(deadlines={"backup": 600})
    world.results["backup"] = "pending"
    world.run_until_step("Backup")
    world.settle()
    [job] = jobs_of(world, "backup")
    world.kube.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b", "namespace": NS,
                    "labels": {"job-name": job["metadata"]["name"]}},
                    "status": {"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]}})
    world.tick()
    assert world.steps()["Backup"] == "Running"
    world.age_step("Backup", 601)
    status = world.run()
    assert status["phase"] == "Failed", status
    assert "deadline of 600s" in next(s for s in status["steps"] if s["name"] == "Backup")["message"]
    assert job["spec"]["activeDeadlineSeconds"] == 600  # Kubernetes stops the engine too


def test_a_backup_pod_that_never_starts_fails_with_pod_not_started_and_its_job_goes() -> None:
    world = World().setup(deadlines={"podStart": 20})
    world.results["backup"] = "image-pull"
    world.run_until_step("Backup")
    world.settle()
    world.age_step("Backup", 25)
    status = world.run()
    assert status["phase"] == "Failed", status
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodNotStarted" and "ImagePullBackOff" in failed["message"], failed
    assert jobs_of(world, "backup") == []


def test_the_backup_step_resumes_after_a_lost_status_write_and_never_creates_a_second_backup() -> None:
    world = World().setup()
    world.results["backup"] = "pending"
    world.run_until_step("Backup")
    world.kube.fail("patch/status", "CoaiMigration", 409, times=3)  # the operator's writes are lost (restarts)
    for _ in range(3):
        world.tick()
        world.settle()
    world.kube.fail("create", "CoaiBackup", 409)  # a create whose answer was lost is found again
    world.results.pop("backup")
    assert world.run()["phase"] == "Succeeded"
    assert len(backups(world)) == 1 and len(world.kube.writes("create", "CoaiBackup")) == 1
    assert len(jobs_of(world, "backup")) == 1


def test_the_rollback_restores_the_coaibackup_from_object_storage_with_its_key() -> None:
    world = World().setup(backup={"encryption": {"keySecretRef": {"name": "bk-key"}}})
    world.kube.put(S3_LOCATION)
    world.results["migrate"] = {"ok": False, "error": "boom"}
    status = world.run()
    assert status["phase"] == "RolledBack", status
    name = status["backup"]["name"]
    assert status["backup"]["location"] == f"s3://bk/prod/{NS}/{name}"
    [backup_job] = jobs_of(world, "backup")
    [restore] = jobs_of(world, "restore")
    args = restore["spec"]["template"]["spec"]["containers"][0]["args"]
    backup_args = backup_job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--dir") + 1] == backup_args[backup_args.index("--dir") + 1] == f"s3://bk/prod/{NS}/{name}"
    assert args[args.index("--target-version") + 1] == "1.8.0"
    for job in (backup_job, restore):
        env = env_of(job)
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
        assert env["COAI_BACKUP_KEY_FILE"]["value"].endswith("/key")
    assert world.get("PersistentVolumeClaim", "chat-backup") is None  # nothing on a volume


def test_a_rollback_whose_backup_was_deleted_fails_saying_where_the_data_was() -> None:
    world = World().setup()
    world.results["migrate"] = "pending"
    world.run_until_step("Migrate")
    name = world.status()["backup"]["name"]
    world.kube.objects.pop(("CoaiBackup", NS, name))
    world.results["migrate"] = {"ok": False, "error": "boom"}
    status = world.run()
    assert status["phase"] == "Failed", status
    restore = next(s for s in status["steps"] if s["name"] == "RollbackRestore")
    assert restore["phase"] == "Failed" and f"CoaiBackup {name} no longer exists" in restore["message"]
    assert f"pvc/chat-backup/{NS}/{name}" in restore["message"]


def test_a_graceful_rollback_exports_into_a_second_unpinned_coaibackup() -> None:
    world = World().setup(rollback={"mode": "Graceful"})
    world.results["migrate"] = {"ok": False, "error": "boom"}
    status = world.run()
    assert status["phase"] == "RolledBack", status
    mig = world.get("CoaiMigration", "to-2")
    pre, post = backupstep.backup_name(mig, backupstep.PRE), backupstep.backup_name(mig, backupstep.POST)
    assert set(backups(world)) == {pre, post}
    assert backups(world)[post]["spec"]["pinned"] is False and backups(world)[pre]["spec"]["pinned"] is True
    assert backups(world)[post]["status"]["phase"] == "Completed"
    assert world.steps()["RollbackExport"] == "Succeeded" and status["backup"]["name"] == pre


def test_the_fault_hook_lands_on_the_coaibackup_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(testfaults.ENABLED, "1")
    world = World().setup()
    world.get("CoaiMigration", "to-2")["metadata"]["annotations"] = {testfaults.ANNOTATION: "Backup=engine-fails"}
    world.run_until_step("Backup")
    world.tick()
    world.settle()
    [job] = jobs_of(world, "backup")
    assert "COAI_ENGINE_FAIL" in env_of(job)


def test_retention_never_prunes_a_pinned_backup_nor_the_migrations() -> None:
    world = World().setup()
    assert world.run()["phase"] == "Succeeded"
    migration_backup = next(iter(backups(world)))
    for day, pinned in ((1, False), (2, True), (3, False), (4, False)):
        world.kube.put({"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiBackup",
                        "metadata": {"name": f"nightly-{day}", "namespace": NS,
                                     "labels": {"coai.dev/schedule": "nightly"}},
                        "spec": {"instanceRef": {"name": "chat"}, "pinned": pinned},
                        "status": {"phase": "Completed", "startTime": f"2026-03-0{day}T02:00:00Z"}})
    nightly = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiBackupSchedule",
               "metadata": {"name": "nightly", "namespace": NS, "creationTimestamp": "2026-03-01T00:00:00Z"},
               "spec": {"instanceRef": {"name": "chat"}, "schedule": "0 2 * * *", "suspend": True,
                        "retention": {"keepLast": 1}}}
    status, _ = schedule.reconcile_schedule(world.kube, nightly, now=datetime(2026, 3, 5, tzinfo=UTC))
    assert status["pruned"] == ["nightly-3", "nightly-1"] and status["kept"] == ["nightly-4", "nightly-2"]
    assert set(backups(world)) == {migration_backup, "nightly-4", "nightly-2"}


def test_a_missing_location_is_waited_for_briefly_then_fails_the_migration_with_nothing_changed() -> None:
    world = World().setup(backup={"locationRef": {"name": "not-yet"}})
    world.run_until_step("Backup")
    for _ in range(3):
        world.tick()
        world.settle()
    assert world.steps()["Backup"] == "Running"  # it may be applied in the same sync: waited for
    assert "CoaiBackupLocation not-yet does not exist" in next(
        s for s in world.status()["steps"] if s["name"] == "Backup")["message"]
    world.age_step("Backup", backupstep.LOCATION_GRACE_SECONDS + 1)
    status = world.run()
    assert status["phase"] == "Failed", status
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "LocationNotFound" and "Nothing was changed" in failed["message"]
    assert jobs_of(world, "backup") == []
