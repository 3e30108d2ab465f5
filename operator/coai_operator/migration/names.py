"""Names of what a migration creates: deterministic, so a restarted operator finds them again."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from coai_operator import constants

Obj = dict[str, Any]

STORAGE_MOUNT = "/storage"
CONFIG_MOUNT = "/config"
BUNDLE_MOUNT = "/bundle"
CERTS_MOUNT = "/certs"
LABEL_MIGRATION = f"{constants.GROUP}/migration"


def job_name(migration: Mapping[str, Any], slug: str) -> str:
    """`<migration>-<step>-<5 hex of the uid>`: stable across operator restarts, unique per migration."""
    meta = migration["metadata"]
    suffix = hashlib.sha256(f"{meta['uid']}/{slug}".encode()).hexdigest()[:5]
    return f"{meta['name'][:45]}-{slug}-{suffix}"


def backup_pvc_name(migration: Mapping[str, Any]) -> str:
    pvc = ((migration.get("spec") or {}).get("backup") or {}).get("pvc") or {}
    return str(pvc.get("name") or f"{migration['spec']['instanceRef']['name']}-backup")


def owner_reference(obj: Mapping[str, Any]) -> Obj:
    return {
        "apiVersion": obj.get("apiVersion", constants.API_VERSION),
        "kind": obj.get("kind", constants.MIGRATION_KIND),
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
