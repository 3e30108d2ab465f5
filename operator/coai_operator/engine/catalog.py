"""`engine list` / `engine delete`: the backups at a location, and deleting one (retention).

`list --dir ROOT` reads every `<ROOT>/<name>/manifest.json` (a backup written by this or another
cluster) and reports name, completedAt, sizes and whether it is encrypted; children without a
manifest are reported as incomplete. `delete --dir ROOT/<name>` removes the manifest first, then
the artifacts, so a deletion cut short never leaves something that looks like a good backup.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from coai_operator.engine.manifest import MANIFEST_NAME, ManifestError, load_manifest
from coai_operator.engine.store import delete_tree, open_store

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True, help="a location root (list) or one backup (delete)")
    parser.add_argument("--delete", action="store_true", help="delete the backup at --dir (manifest first)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    store = open_store(args.dir)
    if args.delete:
        count = delete_tree(store)
        log.info("deleted %d objects of %s", count, store.where)
        return {"location": store.where, "deleted": count}
    backups: list[dict[str, Any]] = []
    for name in store.children():
        child = store.child(name)
        if child.size(MANIFEST_NAME) is None:
            backups.append({"name": name, "complete": False})
            continue
        try:
            m = load_manifest(child)
        except ManifestError as exc:
            backups.append({"name": name, "complete": False, "error": str(exc)})
            continue
        backups.append({"name": name, "complete": True, "completedAt": m.completed_at, "label": m.label,
                        "include": m.include, "bytes": sum(a.bytes for a in m.artifacts),
                        "encrypted": m.encryption is not None,
                        "schemaVersion": (m.database or {}).get("schemaVersion")})
    return {"location": store.where, "backups": backups}
