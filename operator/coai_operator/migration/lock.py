"""The instance lock: `status.activeMigration` on the CoaiInstance, taken with a resourceVersion
precondition so two migrations never both hold it. The same write claims status.upgrade
(instance/upgrade_state.py: lock_patch)."""

from __future__ import annotations

from coai_operator import constants
from coai_operator.instance import upgrade_state
from coai_operator.kube import KubeError
from coai_operator.migration.context import Ctx
from coai_operator.migration.model import Obj, Reason


def lock_holder(instance: Obj | None) -> str | None:
    return ((instance or {}).get("status") or {}).get("activeMigration") or None


def live_holder(ctx: Ctx) -> str | None:
    """The migration holding the lock, if it still exists (a deleted holder frees the lock)."""
    holder = lock_holder(ctx.instance)
    if holder and holder != ctx.name and \
            ctx.kube.get(constants.API_VERSION, constants.MIGRATION_KIND, ctx.namespace, holder) is not None:
        return holder
    return None


def acquire_lock(ctx: Ctx) -> str | None:
    """Take the lock atomically. None: we hold it; otherwise the name of the migration that does."""
    assert ctx.instance is not None
    holder = lock_holder(ctx.instance)
    if holder == ctx.name:
        return None
    if live_holder(ctx):
        return holder
    try:  # free, or held by a migration that no longer exists
        ctx.instance = upgrade_state.write(ctx.kube, ctx.instance, upgrade_state.lock_patch(ctx.name), wake=ctx.wake)
    except KubeError as exc:
        if exc.status == 409:  # somebody else was faster; look again next time
            return holder or "another migration"
        raise
    ctx.event(Reason.LOCK_ACQUIRED, f"took the lock on CoaiInstance {ctx.instance_name}")
    return None


def release_lock(ctx: Ctx, schema_version: str | None = None) -> None:
    instance = ctx.kube.get(constants.API_VERSION, constants.INSTANCE_KIND, ctx.namespace, ctx.instance_name)
    if instance is None:
        return
    patch: Obj = {}
    if lock_holder(instance) == ctx.name:
        patch["activeMigration"] = None
    if schema_version and (instance.get("status") or {}).get("schemaVersion") != schema_version:
        patch["schemaVersion"] = schema_version
    if patch:
        ctx.kube.patch(constants.API_VERSION, constants.INSTANCE_KIND, ctx.namespace, ctx.instance_name,
                       {"status": patch}, subresource="status")
