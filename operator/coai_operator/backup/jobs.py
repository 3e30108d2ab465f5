"""Engine Jobs for backups, restores and deletions. Pure: dicts in, dicts out.

Destinations (a PVC mounted at /backup, or S3 settings as env with credentials by secretKeyRef)
are in backup/destination.py. A backup lives at `<root>/<namespace>/<name>`
(PVC: `/backup/<prefix>/<name>`), so locations can be shared by namespaces and clusters.
Jobs reuse the migration's conventions (restricted pod security, database env from the
instance's spec, the engine's result in the termination message).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from coai_operator import constants
from coai_operator.backup.destination import (  # noqa: F401  (re-exported)
    BACKUP_MOUNT,
    CA_MOUNT,
    CONFIG_MOUNT,
    KEY_MOUNT,
    STORAGE_MOUNT,
    Destination,
    env_volumes,
    key_volume,
    tree_args,
)
from coai_operator.enginepod import (
    DEFAULT_RESOURCES,
    RESTRICTED_CONTAINER_SECURITY,
    database_env,
    engine_image,
    job_pod_security,
)
from coai_operator.instance.spec import Names

Obj = dict[str, Any]
RESULT_FILE = "/dev/termination-log"
JOB_TTL_SECONDS = 24 * 3600
LABEL_OWNER = f"{constants.GROUP}/owner"
LABEL_SCHEDULE = f"{constants.GROUP}/schedule"


def job_name(owner: Mapping[str, Any], action: str) -> str:
    meta = owner["metadata"]
    suffix = hashlib.sha256(f"{meta['uid']}/{action}".encode()).hexdigest()[:5]
    return f"{meta['name'][:40]}-{action}-{suffix}"


def owner_reference(owner: Mapping[str, Any]) -> Obj:
    return {"apiVersion": owner.get("apiVersion", constants.API_VERSION), "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": True,
            "blockOwnerDeletion": True}


def engine_job(owner: Mapping[str, Any], action: str, args: list[str], dest: Destination, *,
               instance: Mapping[str, Any] | None = None, trees: tuple[str, ...] = (), read_only_trees: bool = False,
               key_ref: Mapping[str, Any] | None = None, database: bool = True) -> Obj:
    """One `coai-operator engine ...` Job. `trees` names the instance volumes to mount (storage, config)."""
    spec = owner.get("spec") or {}
    template = spec.get("jobTemplate") or (spec.get("template") or {}).get("jobTemplate") or {}
    env: list[Obj] = [*(database_env((instance or {}).get("spec") or {}) if database and instance else []),
                      *dest.env(), {"name": "COAI_RESULT_FILE", "value": RESULT_FILE},
                      # a fixed mmap threshold: 8 MiB part buffers go back to the OS instead of
                      # fragmenting the heap (measured: peak RSS 89 -> 76 MiB; docs/backups.md)
                      {"name": "MALLOC_MMAP_THRESHOLD_", "value": "1048576"},
                      {"name": "HOME", "value": "/tmp"}]  # noqa: S108  (an emptyDir)
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[Obj] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108  (an emptyDir)
    dv, dm = dest.volumes()
    volumes += dv
    mounts += dm
    if instance is not None:
        names = Names(instance["metadata"]["name"])
        for tree in trees:
            claim, mount = (names.storage_pvc, STORAGE_MOUNT) if tree == "storage" else (names.config_pvc, CONFIG_MOUNT)
            volumes.append({"name": tree, "persistentVolumeClaim": {"claimName": claim}})
            mounts.append({"name": tree, "mountPath": mount, "readOnly": read_only_trees})
        if "config" in trees:
            ev, em = env_volumes(instance)
            volumes, mounts = volumes + ev, mounts + em
    kv, km, ke = key_volume(key_ref)
    volumes, mounts, env = volumes + kv, mounts + km, env + ke
    container: Obj = {
        "name": "engine", "image": engine_image({"jobTemplate": template}),
        "imagePullPolicy": "IfNotPresent", "args": ["engine", *args], "env": env, "volumeMounts": mounts,
        "resources": template.get("resources") or DEFAULT_RESOURCES,
        "securityContext": {**RESTRICTED_CONTAINER_SECURITY, **(template.get("securityContext") or {})},
        "terminationMessagePath": RESULT_FILE, "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: Obj = {"restartPolicy": "Never",
                     "securityContext": job_pod_security(instance, template),
                     "containers": [container], "volumes": volumes, "automountServiceAccountToken": False}
    for key in ("serviceAccountName", "nodeSelector", "tolerations", "imagePullSecrets"):
        if template.get(key):
            pod_spec[key] = template[key]
    instance_name = (instance or {}).get("metadata", {}).get("name") or "none"
    # the step label: the operator's Job-failure metric counts these Jobs too (metrics.py)
    labels = {**constants.labels(instance_name, "backup"), LABEL_OWNER: owner["metadata"]["name"],
              f"{constants.GROUP}/step": action}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name(owner, action), "namespace": owner["metadata"]["namespace"], "labels": labels,
                     "ownerReferences": [owner_reference(owner)]},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
                 "activeDeadlineSeconds": int(template.get("activeDeadlineSeconds") or 6 * 3600),
                 "template": {"metadata": {"labels": labels}, "spec": pod_spec}},
    }


def backup_args(backup: Mapping[str, Any], dest: Destination) -> tuple[list[str], tuple[str, ...]]:
    spec = backup["spec"]
    include = [i for i in ("database", "storage", "config") if i in (spec.get("include") or ["database", "storage",
                                                                                             "config"])]
    trees = tuple(i for i in include if i != "database")
    args = ["backup", "--dir", dest.url(folder(backup)), "--include", ",".join(include),
            "--compression", str(spec.get("compression") or "gzip"),
            "--label", f"CoaiBackup {backup['metadata']['namespace']}/{backup['metadata']['name']}"]
    args += tree_args(trees)
    if spec.get("verify", True) and "database" in include:
        args.append("--verify")
    return args, trees


def folder(backup: Mapping[str, Any]) -> str:
    """A backup's folder under its location: `<namespace>/<name>` (unique per cluster namespace)."""
    return f"{backup['metadata']['namespace']}/{backup['metadata']['name']}"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
