"""Where a backup is stored, as a Job sees it, and how a Job reads one back. Pure.

A destination is a PVC (mounted at /backup) or S3 (settings as env, credentials by
secretKeyRef, a CA bundle mounted from a Secret). The encryption key is always a mounted file.
Shared by the CoaiBackup/CoaiRestore Jobs (backup/jobs.py) and the CoaiMigration's rollback
restore (migration/jobs.py), so there is one way to reach a backup and one restore command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
BACKUP_MOUNT = "/backup"
STORAGE_MOUNT = "/storage"
CONFIG_MOUNT = "/config"
KEY_MOUNT = "/var/run/coai-backup-key"
CA_MOUNT = "/var/run/coai-s3-ca"
ENV_MOUNT = "/var/run/coai-env"  # the env ConfigMap and Secret, read-only (engine/envcopy.py)
INCLUDE = ("database", "storage", "config")


@dataclass(frozen=True)
class Destination:
    kind: str  # "pvc" | "s3"
    spec: Mapping[str, Any]
    location: str = ""  # the CoaiBackupLocation it came from ("" for an inline destination)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def url(self, folder: str) -> str:
        prefix = str(self.spec.get("prefix") or "").strip("/")
        path = "/".join(p for p in (prefix, folder) if p)
        if self.kind == "s3":
            return f"s3://{self.spec['bucket']}/{path}"
        return f"{BACKUP_MOUNT}/{path}"

    def where(self, folder: str) -> str:
        if self.kind == "s3":
            return self.url(folder)
        return f"pvc/{self.spec['name']}/{self.url(folder).removeprefix(BACKUP_MOUNT + '/')}"

    def env(self) -> list[Obj]:
        if self.kind != "s3":
            return []
        s3 = self.spec
        creds = s3.get("credentialsSecretRef") or {}
        env: list[Obj] = [
            {"name": "COAI_S3_ENDPOINT", "value": str(s3["endpoint"]).rstrip("/")},
            {"name": "COAI_S3_REGION", "value": str(s3.get("region") or "us-east-1")},
            {"name": "COAI_S3_PATH_STYLE", "value": "true" if s3.get("pathStyle", True) else "false"},
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {
                "name": creds["name"], "key": creds.get("accessKeyIdKey") or "AWS_ACCESS_KEY_ID"}}},
            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {
                "name": creds["name"], "key": creds.get("secretAccessKeyKey") or "AWS_SECRET_ACCESS_KEY"}}},
        ]
        if (s3.get("caBundleSecretRef") or {}).get("name"):
            env.append({"name": "COAI_S3_CA_FILE", "value": f"{CA_MOUNT}/ca.crt"})
        return env

    def volumes(self, read_only: bool = False) -> tuple[list[Obj], list[Obj]]:
        if self.kind == "pvc":
            return ([{"name": "backup", "persistentVolumeClaim": {"claimName": self.spec["name"]}}],
                    [{"name": "backup", "mountPath": BACKUP_MOUNT, **({"readOnly": True} if read_only else {})}])
        ca = self.spec.get("caBundleSecretRef") or {}
        if not ca.get("name"):
            return [], []
        return ([{"name": "s3-ca", "secret": {"secretName": ca["name"],
                                              "items": [{"key": ca.get("key") or "ca.crt", "path": "ca.crt"}]}}],
                [{"name": "s3-ca", "mountPath": CA_MOUNT, "readOnly": True}])


@dataclass(frozen=True)
class BackupSource:
    """One stored backup a Job reads: where it is, and the key Secret if it is encrypted."""

    dest: Destination
    folder: str  # `<namespace>/<CoaiBackup name>` under the destination
    key_ref: Mapping[str, Any] | None = None
    name: str = ""  # the CoaiBackup

    @property
    def url(self) -> str:
        return self.dest.url(self.folder)

    @property
    def where(self) -> str:
        return self.dest.where(self.folder)


def key_volume(key_ref: Mapping[str, Any] | None) -> tuple[list[Obj], list[Obj], list[Obj]]:
    """(volumes, mounts, env) for the encryption key: a file from the Secret, never an env value."""
    if not key_ref or not key_ref.get("name"):
        return [], [], []
    item = {"key": key_ref.get("key") or "key", "path": "key"}
    return ([{"name": "backup-key", "secret": {"secretName": key_ref["name"], "items": [item]}}],
            [{"name": "backup-key", "mountPath": KEY_MOUNT, "readOnly": True}],
            [{"name": "COAI_BACKUP_KEY_FILE", "value": f"{KEY_MOUNT}/key"}])


def tree_args(trees: tuple[str, ...]) -> list[str]:
    """The instance trees' flags; with config, also the env copies (--env-dir, see env_volumes)."""
    return [f"--{t}={STORAGE_MOUNT if t == 'storage' else CONFIG_MOUNT}" for t in trees] + \
        ([f"--env-dir={ENV_MOUNT}"] if "config" in trees else [])


def env_volumes(instance: Mapping[str, Any]) -> tuple[list[Obj], list[Obj]]:
    """The instance's env ConfigMap and Secret as read-only volumes (optional: a missing one is
    recorded as absent, it does not keep the pod from starting). Files, never env values: the Job
    reads them without any API access or Role."""
    name = instance["metadata"]["name"]
    secret = ((instance.get("spec") or {}).get("secretRef") or {}).get("name")
    volumes: list[Obj] = [{"name": "env-configmap", "configMap": {"name": f"{name}-env", "optional": True}}]
    mounts: list[Obj] = [{"name": "env-configmap", "mountPath": f"{ENV_MOUNT}/configmap.{name}-env", "readOnly": True}]
    if secret:
        volumes.append({"name": "env-secret", "secret": {"secretName": secret, "optional": True}})
        mounts.append({"name": "env-secret", "mountPath": f"{ENV_MOUNT}/secret.{secret}", "readOnly": True})
    return volumes, mounts


def restore_args(url: str, include: list[str] | tuple[str, ...], target_version: str = "",
                 force: bool = False) -> tuple[list[str], tuple[str, ...]]:
    """`engine restore` of the backup at `url`, and the instance trees the Job mounts: the one
    restore command line of CoaiRestore and of a migration's rollback."""
    wanted = [i for i in INCLUDE if i in include]
    trees = tuple(i for i in wanted if i != "database")
    args = ["restore", "--dir", url, "--include", ",".join(wanted),
            *(["--target-version", target_version] if target_version else []),
            *(["--force"] if force else []), *tree_args(trees)]
    return args, trees
