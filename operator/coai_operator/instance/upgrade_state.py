"""What a CoaiMigration calls to act on its instance: through status.upgrade, never the spec.

Each writer is a pure `*_patch` (a status merge patch, None when there is nothing to change) and
`write`, which sends it to the /status subresource with the instance's resourceVersion as a
precondition: a 409 means the instance changed since it was read; read it again and repeat (every
patch is computed from the wanted end state, so repeating one is harmless).

Every patch also sets status.upgrade.migration, which tells the instance controller that this
migration works through status (instance/upgrade.py: legacy_migration). kopf wakes the instance
controller on spec and metadata changes only, so `write` runs its reconcile right away.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from coai_operator import constants
from coai_operator.bundles.config_migration import ConfigRules
from coai_operator.instance import reconcile
from coai_operator.kube import Kube, KubeError

Obj = dict[str, Any]

WRITE_ATTEMPTS = 3


def _upgrade(instance: Mapping[str, Any]) -> Mapping[str, Any]:
    return (instance.get("status") or {}).get("upgrade") or {}


def _patch(instance: Mapping[str, Any], migration: str, fields: Obj) -> Obj | None:
    current = _upgrade(instance)
    changes = {k: v for k, v in fields.items() if current.get(k) != v}
    if not changes:
        return None
    if current.get("migration") != migration:
        changes["migration"] = migration
    return {"upgrade": changes}


def lock_patch(migration: str) -> Obj:
    """The upgrade lock and the claim on status.upgrade in ONE write: between two writes the
    instance would still treat the holder as a migration that drives it through spec.version."""
    return {"activeMigration": migration, "upgrade": {"migration": migration}}


def hold_maintenance_patch(instance: Mapping[str, Any], migration: str, message: str) -> Obj | None:
    """Scale the app to 0 for the migration, whatever spec.maintenance (Git) says."""
    return _patch(instance, migration, {"maintenance": {"migration": migration, "message": message}})


def release_maintenance_patch(instance: Mapping[str, Any], migration: str) -> Obj | None:
    """Give maintenance back to spec.maintenance (on if Git has it on)."""
    if not _upgrade(instance).get("maintenance"):
        return None
    return _patch(instance, migration, {"maintenance": None})


def deployed_version_patch(instance: Mapping[str, Any], migration: str, version: str) -> Obj | None:
    """Deploy `version` (the rollout after a migration, or the old version on rollback)."""
    return _patch(instance, migration, {"version": str(version)})


def config_rules_patch(instance: Mapping[str, Any], migration: str,
                       rules: Sequence[ConfigRules | Mapping[str, Any]]) -> Obj | None:
    """The env rules of the migration's path (already merged with its configMigration overrides),
    applied to the rendered env on top of spec.config. An empty list removes them (rollback)."""
    data = [r.to_dict() if isinstance(r, ConfigRules) else dict(r) for r in rules]
    return _patch(instance, migration, {"configRules": data or None})


def certs_patch(instance: Mapping[str, Any], migration: str, certs: Mapping[str, Any] | None) -> Obj | None:
    """The key pair Secret the migration generated ({secretRef: {name}}), mounted at /certs unless
    spec.certs (Git) names one. None removes it (rollback)."""
    return _patch(instance, migration, {"certs": dict(certs) if certs else None})


def image_digest_patch(instance: Mapping[str, Any], migration: str, digest: str | None) -> Obj | None:
    """Pin the deployed version's image to `digest` (a rollback to what ran before: tags can be
    re-pushed); None removes the pin (the rollout of the new version)."""
    return _patch(instance, migration, {"imageDigest": digest or None})


def merge(*patches: Obj | None) -> Obj | None:
    """Several of the patches above as one write (e.g. the rollout: version + maintenance off)."""
    upgrade: Obj = {}
    for p in patches:
        upgrade.update((p or {}).get("upgrade") or {})
    return {"upgrade": upgrade} if upgrade else None


def write(kube: Kube, instance: Mapping[str, Any], patch: Obj | None, *, wake: bool = True) -> Obj:
    """Send `patch` to the instance's status (409 if it changed since `instance` was read), then
    let the instance controller render it (`wake`). Returns the instance as the write left it."""
    if patch is None:
        return dict(instance)
    meta = instance["metadata"]
    body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch}
    written = kube.patch(constants.API_VERSION, constants.INSTANCE_KIND, meta["namespace"], meta["name"], body,
                         subresource="status")
    if wake:
        reconcile.reconcile_named(meta["namespace"], meta["name"], "status.upgrade written", coalesce=True)
    return written


def write_rebuilt(kube: Kube, instance: Mapping[str, Any], build: Callable[[Obj], Obj | None], *,
                  wake: bool = True) -> tuple[Obj, bool]:
    """`write(build(instance))`; on a 409 read the instance again and rebuild the patch (at most
    WRITE_ATTEMPTS writes). Returns the instance as last read or written, and whether it changed."""
    namespace, name = instance["metadata"]["namespace"], instance["metadata"]["name"]
    current: Mapping[str, Any] | None = instance
    for attempt in range(WRITE_ATTEMPTS):
        if current is None:
            raise KubeError(404, "NotFound", f"CoaiInstance {namespace}/{name} was deleted")
        patch = build(dict(current))
        if patch is None:
            return dict(current), False
        try:
            return write(kube, current, patch, wake=wake), True
        except KubeError as exc:
            if exc.status != 409 or attempt == WRITE_ATTEMPTS - 1:
                raise
        current = kube.get(constants.API_VERSION, constants.INSTANCE_KIND, namespace, name)
    raise AssertionError("unreachable: the last attempt returns or raises")
