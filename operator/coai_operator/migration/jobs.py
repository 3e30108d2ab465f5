"""Job manifests for the engine steps of a CoaiMigration. Pure: dicts in, dicts out.

Every Job runs `coai-operator engine <command>` from the operator's image, reaches the database
with the instance's credentials (password by secretKeyRef, never in the manifest), mounts the
instance's storage and config PVCs at /storage and /config where the step needs them, reads the
pre-migration CoaiBackup (RollbackRestore) through its destination (backup/destination.py: the PVC
at /backup, or S3 settings, and the key as a file), and runs under the restricted Pod Security
profile unless `spec.jobTemplate` says otherwise. The backups themselves are CoaiBackups
(migration/backupstep.py), whose Jobs the CoaiBackup controller creates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coai_operator import constants
from coai_operator.backup.destination import BackupSource, env_volumes, key_volume
from coai_operator.enginepod import (  # noqa: F401  (re-exported)
    DEFAULT_RESOURCES,
    RESTRICTED_CONTAINER_SECURITY,
    RESTRICTED_POD_SECURITY,
    database_env,
    engine_image,
    job_pod_security,
)
from coai_operator.instance.spec import Names
from coai_operator.migration import names, testfaults
from coai_operator.migration.names import (
    BUNDLE_MOUNT,
    CONFIG_MOUNT,
    LABEL_MIGRATION,
    STORAGE_MOUNT,
    owner_reference,
)
from coai_operator.migration.steps import STEPS, JobInput, Step

Obj = dict[str, Any]

RESULT_FILE = "/dev/termination-log"
JOB_TTL_SECONDS = 7 * 24 * 3600
LABEL_STEP = f"{constants.GROUP}/step"

STEP_SLUGS = {s.name: s.slug for s in STEPS.values() if s.slug}


def job_name(migration: Mapping[str, Any], step: str) -> str:
    return names.job_name(migration, STEP_SLUGS[step])


def engine_args(migration: Mapping[str, Any], instance: Mapping[str, Any], step: str,
                row_counts: Mapping[str, int] | None = None, source: BackupSource | None = None) -> list[str]:
    """The `coai-operator engine ...` arguments of one step."""
    definition = STEPS[step]
    if definition.args is None:
        raise ValueError(f"step {step} does not run a Job")
    return definition.args(JobInput(migration, instance, row_counts, source))


def _volumes(job: JobInput, step: Step) -> tuple[list[Obj], list[Obj], list[Obj]]:
    """(volumes, mounts, env) of a step's Job."""
    spec = job.spec
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[Obj] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108  (an emptyDir)
    env: list[Obj] = []
    for volume in step.volumes:
        if volume == "backup":  # the backup's own destination and key, as the CoaiBackup's Jobs reach it
            dv, dm = job.backup.dest.volumes(read_only=True)
            kv, km, ke = key_volume(job.backup.key_ref)
            volumes, mounts, env = volumes + dv + kv, mounts + dm + km, env + job.backup.dest.env() + ke
        elif volume == "storage":
            volumes.append({"name": "storage", "persistentVolumeClaim": {
                "claimName": Names(spec["instanceRef"]["name"]).storage_pvc}})
            mounts.append({"name": "storage", "mountPath": STORAGE_MOUNT})
        elif volume == "config":
            # /config/config.yaml: channels with their keys, settings (archived as the config tree, engine/backup.py).
            volumes.append({"name": "config", "persistentVolumeClaim": {
                "claimName": Names(spec["instanceRef"]["name"]).config_pvc}})
            mounts.append({"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": False})
            ev, em = env_volumes(job.instance)  # the restore compares the env copies with these
            volumes, mounts = volumes + ev, mounts + em
        elif volume == "bundle":
            bundle_ref = (spec.get("migrations") or {}).get("configMapRef") or {}
            if bundle_ref.get("name"):
                volumes.append({"name": "bundle", "configMap": {"name": bundle_ref["name"]}})
                mounts.append({"name": "bundle", "mountPath": BUNDLE_MOUNT, "readOnly": True})
    return volumes, mounts, env


def build_job(migration: Mapping[str, Any], instance: Mapping[str, Any], step: str,
              row_counts: Mapping[str, int] | None = None, deadline: int | None = None,
              source: BackupSource | None = None) -> Obj:
    """A step's Job. `row_counts`: the backup's (Validate); `source`: the backup a restore reads."""
    spec = migration["spec"]
    meta = migration["metadata"]
    instance_name = spec["instanceRef"]["name"]
    template = spec.get("jobTemplate") or {}
    definition = STEPS[step]
    job_input = JobInput(migration, instance, row_counts, source)
    args = engine_args(migration, instance, step, row_counts, source)

    env = [*database_env(instance.get("spec") or {}),
           {"name": "COAI_RESULT_FILE", "value": RESULT_FILE},
           {"name": "COAI_MIGRATION", "value": meta["name"]},
           {"name": "HOME", "value": "/tmp"}]  # noqa: S108  (an emptyDir)
    if definition.env is not None:
        env += definition.env(job_input)
    volumes, mounts, volume_env = _volumes(job_input, definition)
    env += volume_env

    container: Obj = {
        "name": "engine",
        "image": engine_image(spec),
        "imagePullPolicy": "IfNotPresent",
        "args": ["engine", *args],
        "env": env,
        "volumeMounts": mounts,
        "resources": template.get("resources") or DEFAULT_RESOURCES,
        "securityContext": {**RESTRICTED_CONTAINER_SECURITY, **(template.get("securityContext") or {})},
        "terminationMessagePath": RESULT_FILE,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: Obj = {
        "restartPolicy": "Never",
        "securityContext": job_pod_security(instance, template),
        "containers": [container],
        "volumes": volumes,
        "automountServiceAccountToken": False,
    }
    for key in ("serviceAccountName", "nodeSelector", "tolerations", "imagePullSecrets"):
        if template.get(key):
            pod_spec[key] = template[key]

    name = job_name(migration, step)
    # A Job that reads the backup's store is not a "migration" pod: the migration NetworkPolicy lets
    # those reach only DNS, the database and the app, and a backup may be in object storage anywhere.
    component = "backup" if "backup" in definition.volumes else "migration"
    labels = {**constants.labels(instance_name, component), LABEL_MIGRATION: meta["name"],
              LABEL_STEP: STEP_SLUGS[step]}
    job_spec: Obj = {
        "backoffLimit": int(spec.get("backoffLimit", 1)),
        "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if deadline:
        job_spec["activeDeadlineSeconds"] = int(deadline)
    return testfaults.apply_fault({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                     "ownerReferences": [owner_reference(migration)]},
        "spec": job_spec,
    }, migration, step)
