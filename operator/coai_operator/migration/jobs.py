"""Job manifests for the engine steps of a CoaiMigration. Pure: dicts in, dicts out.

Every Job runs `coai-operator engine <command>` from the operator's image, reaches the database
with the instance's credentials (password by secretKeyRef, never in the manifest), mounts the
backup PVC at /backup and the instance's storage PVC at /storage where the step needs them, and
runs under the restricted Pod Security profile unless `spec.jobTemplate` says otherwise.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Mapping
from typing import Any

from coai_operator import constants
from coai_operator.instance.spec import Names, with_defaults
from coai_operator.migration import planner, realjobs

Obj = dict[str, Any]

BACKUP_MOUNT = "/backup"
STORAGE_MOUNT = "/storage"
CONFIG_MOUNT = "/config"
BUNDLE_MOUNT = "/bundle"
RESULT_FILE = "/dev/termination-log"
JOB_TTL_SECONDS = 7 * 24 * 3600
LABEL_MIGRATION = f"{constants.GROUP}/migration"
LABEL_STEP = f"{constants.GROUP}/step"

STEP_SLUGS = {
    planner.PREFLIGHT: "plan",
    planner.BACKUP: "backup",
    planner.MIGRATE: "migrate",
    planner.STORAGE: "storage",
    planner.VALIDATE: "validate",
    planner.RB_EXPORT: "export",
    planner.RB_RESTORE: "restore",
}

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
DEFAULT_RESOURCES: Obj = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def engine_image(spec: Mapping[str, Any]) -> str:
    template = spec.get("jobTemplate") or {}
    return str(template.get("image") or os.environ.get("COAI_ENGINE_IMAGE") or constants.OPERATOR_IMAGE)


def job_name(migration: Mapping[str, Any], step: str) -> str:
    """`<migration>-<step>-<5 hex of the uid>`: stable across operator restarts, unique per migration."""
    meta = migration["metadata"]
    suffix = hashlib.sha256(f"{meta['uid']}/{step}".encode()).hexdigest()[:5]
    return f"{meta['name'][:45]}-{STEP_SLUGS[step]}-{suffix}"


def backup_pvc_name(migration: Mapping[str, Any]) -> str:
    pvc = ((migration.get("spec") or {}).get("backup") or {}).get("pvc") or {}
    return str(pvc.get("name") or f"{migration['spec']['instanceRef']['name']}-backup")


def backup_location(migration: Mapping[str, Any]) -> str:
    return f"{BACKUP_MOUNT}/{migration['metadata']['name']}"


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


def owner_reference(obj: Mapping[str, Any]) -> Obj:
    return {
        "apiVersion": obj.get("apiVersion", constants.API_VERSION),
        "kind": obj.get("kind", constants.MIGRATION_KIND),
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
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


def engine_args(migration: Mapping[str, Any], instance: Mapping[str, Any], step: str) -> list[str]:
    """The `coai-operator engine ...` arguments of one step."""
    spec = migration["spec"]
    target = str(spec["targetVersion"])
    location = backup_location(migration)
    include = [i for i in ((spec.get("backup") or {}).get("include") or ["database", "storage", "config"])
               if i in ("database", "storage", "config")]
    config = ["--config", CONFIG_MOUNT] if "config" in include else []
    bundle = ["--bundle-dir", BUNDLE_MOUNT] if (spec.get("migrations") or {}).get("configMapRef") else []
    real = realjobs.engine_args(migration, instance, step) if realjobs.applies(migration) else None
    if real is not None:
        return real
    if step == planner.PREFLIGHT:
        return ["plan", "--target", target, *bundle]
    if step == planner.BACKUP:
        return ["backup", "--dir", location, "--storage", STORAGE_MOUNT, *config, "--include", ",".join(include),
                "--label", f"pre-upgrade to {target}"]
    if step == planner.MIGRATE:
        return ["migrate", "--target", target, *bundle]
    if step == planner.STORAGE:
        return ["migrate-storage", "--storage", STORAGE_MOUNT]
    if step == planner.RB_EXPORT:
        return ["backup", "--dir", f"{location}/post-migration", "--storage", STORAGE_MOUNT, *config,
                "--include", ",".join(include), "--label", "post-migration export before rollback"]
    if step == planner.RB_RESTORE:
        return ["restore", "--dir", location, "--storage", STORAGE_MOUNT, *config, "--include", ",".join(include)]
    if step == planner.VALIDATE:
        validation = spec.get("validation") or {}
        inst_spec = with_defaults(copy.deepcopy(dict(instance.get("spec") or {})))
        names = Names(instance["metadata"]["name"])
        base_url = validation.get("baseURL") or (
            f"http://{names.service}.{instance['metadata']['namespace']}.svc:{inst_spec['service']['port']}")
        return ["validate", "--checks", ",".join(planner.validation_checks(spec)), "--base-url", base_url,
                "--health-path", str(inst_spec.get("healthPath") or "/health"),
                "--timeout", str(validation.get("timeoutSeconds") or 300),
                "--manifest", f"{location}/manifest.json",
                *(realjobs.validate_args(instance, target) if realjobs.applies(migration) else [])]
    raise ValueError(f"step {step} does not run a Job")


def build_job(migration: Mapping[str, Any], instance: Mapping[str, Any], step: str) -> Obj:
    spec = migration["spec"]
    meta = migration["metadata"]
    instance_name = spec["instanceRef"]["name"]
    template = spec.get("jobTemplate") or {}
    args = engine_args(migration, instance, step)

    env = [*database_env(instance.get("spec") or {}),
           {"name": "COAI_RESULT_FILE", "value": RESULT_FILE},
           {"name": "COAI_MIGRATION", "value": meta["name"]},
           {"name": "HOME", "value": "/tmp"}]  # noqa: S108  (an emptyDir)
    api_key = (spec.get("validation") or {}).get("apiKeySecretRef") or {}
    if step == planner.VALIDATE and realjobs.applies(migration):
        env += realjobs.validate_env(instance)
    if step == planner.VALIDATE and api_key.get("name"):
        env.append({"name": "TEST_API_KEY", "valueFrom": {"secretKeyRef": {
            "name": api_key["name"], "key": api_key.get("key") or "api-key", "optional": True}}})

    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[Obj] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108  (an emptyDir)
    if step in (planner.BACKUP, planner.RB_EXPORT, planner.RB_RESTORE, planner.VALIDATE):
        volumes.append({"name": "backup", "persistentVolumeClaim": {"claimName": backup_pvc_name(migration)}})
        mounts.append({"name": "backup", "mountPath": BACKUP_MOUNT, "readOnly": step == planner.VALIDATE})
    if step in (planner.BACKUP, planner.RB_EXPORT, planner.RB_RESTORE, planner.STORAGE):
        volumes.append({"name": "storage",
                        "persistentVolumeClaim": {"claimName": Names(instance_name).storage_pvc}})
        mounts.append({"name": "storage", "mountPath": STORAGE_MOUNT})
    if step in (planner.BACKUP, planner.RB_EXPORT, planner.RB_RESTORE):
        # /config/config.yaml: channels with their keys, settings (engine/configfile.py).
        volumes.append({"name": "config", "persistentVolumeClaim": {"claimName": Names(instance_name).config_pvc}})
        mounts.append({"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": step != planner.RB_RESTORE})
    bundle_ref = (spec.get("migrations") or {}).get("configMapRef") or {}
    if bundle_ref.get("name") and step in (planner.PREFLIGHT, planner.MIGRATE):
        volumes.append({"name": "bundle", "configMap": {"name": bundle_ref["name"]}})
        mounts.append({"name": "bundle", "mountPath": BUNDLE_MOUNT, "readOnly": True})

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
        "securityContext": {**RESTRICTED_POD_SECURITY, **(template.get("podSecurityContext") or {})},
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
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                     "ownerReferences": [owner_reference(migration)]},
        "spec": {
            "backoffLimit": int(spec.get("backoffLimit", 1)),
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
