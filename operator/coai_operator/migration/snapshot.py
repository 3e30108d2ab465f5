"""The pre-migration snapshot of an instance's config, and the patches that migrate or restore it.

Pure functions. The snapshot is taken once (create-if-absent) before anything changes, and every
later computation starts from it, never from the live objects: a step re-run after a crash
computes exactly what the first run did.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coai_operator import constants
from coai_operator.bundles.config_migration import ConfigRules, migrate_config_and_secret
from coai_operator.migration.names import owner_reference

Obj = dict[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """What the instance looked like before the migration touched it."""

    version: str
    image: str | None
    maintenance: Obj | None
    config: dict[str, str]
    secret_name: str | None
    secret: dict[str, str]  # decoded values
    certs: Obj | None = None  # the certs the instance mounted (spec.certs, else status.upgrade.certs)
    upgrade: Obj | None = None  # status.upgrade as it was: what the rollback puts back
    image_digest: str | None = None  # what the pods ran (migration/digest.py); a rollback pins it

    def to_configmap_data(self) -> dict[str, str]:
        return {
            "instance.json": json.dumps({"version": self.version, "image": self.image,
                                         "maintenance": self.maintenance, "secretName": self.secret_name,
                                         "certs": self.certs, "upgrade": self.upgrade,
                                         **({"imageDigest": self.image_digest} if self.image_digest else {})},
                                        sort_keys=True),
            "config.json": json.dumps(self.config, sort_keys=True),
        }

    @classmethod
    def from_objects(cls, configmap: Mapping[str, Any], secret: Mapping[str, Any] | None) -> Snapshot:
        data = configmap.get("data") or {}
        meta = json.loads(data["instance.json"])
        return cls(
            version=meta["version"],
            image=meta.get("image"),
            maintenance=meta.get("maintenance"),
            config=json.loads(data.get("config.json") or "{}"),
            secret_name=meta.get("secretName"),
            secret=decode_secret((secret or {}).get("data") or {}),
            certs=meta.get("certs"),
            upgrade=meta.get("upgrade"),
            image_digest=meta.get("imageDigest"),
        )


def snapshot_name(migration: Mapping[str, Any]) -> str:
    return f"{migration['metadata']['name']}-snapshot"


def decode_secret(data: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode("utf-8", errors="surrogateescape") for k, v in data.items()}


def encode_secret(data: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode("utf-8", errors="surrogateescape")).decode() for k, v in data.items()}


def take_snapshot(instance: Mapping[str, Any], version: str, secret: Mapping[str, Any] | None,
                  image_digest: str | None = None) -> Snapshot:
    spec = instance.get("spec") or {}
    upgrade = dict((instance.get("status") or {}).get("upgrade") or {})
    upgrade.pop("migration", None)
    return Snapshot(
        image_digest=image_digest or spec.get("imageDigest"),
        version=version,
        image=spec.get("image"),
        maintenance=spec.get("maintenance"),
        config={str(k): str(v) for k, v in (spec.get("config") or {}).items()},
        secret_name=(spec.get("secretRef") or {}).get("name"),
        secret=decode_secret((secret or {}).get("data") or {}),
        certs=spec.get("certs") or upgrade.get("certs"),
        upgrade=upgrade,
    )


def snapshot_objects(migration: Mapping[str, Any], snap: Snapshot) -> tuple[Obj, Obj | None]:
    """A ConfigMap (instance fields + config) and a Secret copy, both owned by the migration."""
    meta = migration["metadata"]
    instance = migration["spec"]["instanceRef"]["name"]
    common = {
        "name": snapshot_name(migration),
        "namespace": meta["namespace"],
        "labels": {**constants.labels(instance, "config-snapshot"), f"{constants.GROUP}/migration": meta["name"]},
        "ownerReferences": [owner_reference(migration)],
    }
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": dict(common),
                 "data": snap.to_configmap_data()}
    secret = None
    if snap.secret_name:
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": dict(common), "type": "Opaque",
                  "data": encode_secret(snap.secret)}
    return configmap, secret


def map_merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """RFC 7386 patch turning map `current` into `desired` (None: already equal)."""
    patch: dict[str, Any] = {k: None for k in current if k not in desired}
    patch.update({k: v for k, v in desired.items() if current.get(k) != v})
    return patch or None


@dataclass(frozen=True)
class ConfigPlan:
    config: dict[str, str]
    secret: dict[str, str]
    changes: list[str]  # "rename JWT_SECRET -> SECRET (secret)": names only, never values


def migrated_config(snap: Snapshot, rules: list[ConfigRules]) -> ConfigPlan:
    result = migrate_config_and_secret(snap.config, snap.secret, rules)
    changes = []
    for change in result.changes:
        side = "secret" if change.secret else "config"
        target = f" -> {change.new_key}" if getattr(change, "new_key", None) else ""
        changes.append(f"{change.op} {change.key}{target} ({side})")
    return ConfigPlan(config=result.config, secret=result.secret if snap.secret_name else {}, changes=changes)
