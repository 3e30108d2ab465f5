"""Job manifests for the engine steps of a CoaiMigration. Pure: dicts in, dicts out.

Every Job runs `coai-operator engine <command>` from the operator's image, reaches the database
with the instance's credentials (password by secretKeyRef, never in the manifest), mounts the
backup PVC at /backup and the instance's storage and config PVCs at /storage and /config where the
step needs them, and runs under the restricted Pod Security profile unless `spec.jobTemplate` says otherwise.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

from coai_operator import constants
from coai_operator.instance.render import data_identity
from coai_operator.instance.spec import Names, with_defaults
from coai_operator.migration import names, testfaults
from coai_operator.migration.names import (  # noqa: F401  (backup_location: re-exported)
    BACKUP_MOUNT,
    BUNDLE_MOUNT,
    CONFIG_MOUNT,
    STORAGE_MOUNT,
    backup_location,
    backup_pvc_name,
    owner_reference,
)
from coai_operator.migration.steps import STEPS, JobInput, Step

Obj = dict[str, Any]

RESULT_FILE = "/dev/termination-log"
JOB_TTL_SECONDS = 7 * 24 * 3600
LABEL_MIGRATION = f"{constants.GROUP}/migration"
LABEL_STEP = f"{constants.GROUP}/step"

STEP_SLUGS = {s.name: s.slug for s in STEPS.values() if s.slug}


RESTRICTED_POD_SECURITY: Obj = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY: Obj = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def job_pod_security(instance: Mapping[str, Any] | None, template: Mapping[str, Any]) -> Obj:
    """Restricted, with the instance's data identity (files the app wrote stay writable), then the
    jobTemplate's own override."""
    identity = data_identity((instance or {}).get("spec")) if instance else {}
    return {**RESTRICTED_POD_SECURITY, **identity, **(template.get("podSecurityContext") or {})}


DEFAULT_RESOURCES: Obj = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def engine_image(spec: Mapping[str, Any]) -> str:
    template = spec.get("jobTemplate") or {}
    return str(template.get("image") or os.environ.get("COAI_ENGINE_IMAGE") or constants.OPERATOR_IMAGE)


def job_name(migration: Mapping[str, Any], step: str) -> str:
    return names.job_name(migration, STEP_SLUGS[step])


def backup_pvc(migration: Mapping[str, Any]) -> Obj:
    """The PVC that keeps backups. Not owned by the migration: backups outlive it."""
    spec = migration["spec"]
    pvc_spec = (spec.get("backup") or {}).get("pvc") or {}
    body: Obj = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": pvc_spec.get("size") or "20Gi"}},
    }
    if pvc_spec.get("storageClassName"):
        body["storageClassName"] = pvc_spec["storageClassName"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": backup_pvc_name(migration),
            "namespace": migration["metadata"]["namespace"],
            "labels": constants.labels(spec["instanceRef"]["name"], "backup"),
        },
        "spec": body,
    }


def database_env(instance_spec: Mapping[str, Any]) -> list[Obj]:
    db = with_defaults(copy.deepcopy(dict(instance_spec)))["database"]
    env: list[Obj] = [
        {"name": "MYSQL_HOST", "value": str(db.get("host", ""))},
        {"name": "MYSQL_PORT", "value": str(db.get("port", 3306))},
        {"name": "MYSQL_USER", "value": str(db.get("user", "root"))},
        {"name": "MYSQL_DB", "value": str(db.get("name", "chatnio"))},
    ]
    ref = db.get("passwordSecretRef") or {}
    if ref.get("name"):
        env.append({"name": "MYSQL_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref.get("key") or "password"}}})
    return env


def engine_args(migration: Mapping[str, Any], instance: Mapping[str, Any], step: str,
                has_backup: bool = True) -> list[str]:
    """The `coai-operator engine ...` arguments of one step."""
    definition = STEPS[step]
    if definition.args is None:
        raise ValueError(f"step {step} does not run a Job")
    return definition.args(JobInput(migration, instance, has_backup))


def _volumes(migration: Mapping[str, Any], step: Step, has_backup: bool) -> tuple[list[Obj], list[Obj]]:
    spec = migration["spec"]
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[Obj] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108  (an emptyDir)
    for volume in step.volumes:
        if volume in ("backup", "backup-ro") and not has_backup:
            continue
        if volume in ("backup", "backup-ro"):
            volumes.append({"name": "backup", "persistentVolumeClaim": {"claimName": backup_pvc_name(migration)}})
            mounts.append({"name": "backup", "mountPath": BACKUP_MOUNT, "readOnly": volume == "backup-ro"})
        elif volume == "storage":
            volumes.append({"name": "storage", "persistentVolumeClaim": {
                "claimName": Names(spec["instanceRef"]["name"]).storage_pvc}})
            mounts.append({"name": "storage", "mountPath": STORAGE_MOUNT})
        elif volume in ("config", "config-ro"):
            # /config/config.yaml: channels with their keys, settings (archived as the config tree, engine/backup.py).
            volumes.append({"name": "config", "persistentVolumeClaim": {
                "claimName": Names(spec["instanceRef"]["name"]).config_pvc}})
            mounts.append({"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": volume == "config-ro"})
        elif volume == "bundle":
            bundle_ref = (spec.get("migrations") or {}).get("configMapRef") or {}
            if bundle_ref.get("name"):
                volumes.append({"name": "bundle", "configMap": {"name": bundle_ref["name"]}})
                mounts.append({"name": "bundle", "mountPath": BUNDLE_MOUNT, "readOnly": True})
    return volumes, mounts


def build_job(migration: Mapping[str, Any], instance: Mapping[str, Any], step: str, has_backup: bool = True,
              deadline: int | None = None) -> Obj:
    spec = migration["spec"]
    meta = migration["metadata"]
    instance_name = spec["instanceRef"]["name"]
    template = spec.get("jobTemplate") or {}
    definition = STEPS[step]
    args = engine_args(migration, instance, step, has_backup)

    env = [*database_env(instance.get("spec") or {}),
           {"name": "COAI_RESULT_FILE", "value": RESULT_FILE},
           {"name": "COAI_MIGRATION", "value": meta["name"]},
           {"name": "HOME", "value": "/tmp"}]  # noqa: S108  (an emptyDir)
    if definition.env is not None:
        env += definition.env(JobInput(migration, instance, has_backup))
    volumes, mounts = _volumes(migration, definition, has_backup)

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
    labels = {**constants.labels(instance_name, "migration"), LABEL_MIGRATION: meta["name"],
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
