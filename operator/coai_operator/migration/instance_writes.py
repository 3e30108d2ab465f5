"""Every write the migration makes to the CoaiInstance, in one small module.

Git owns the spec: the migration acts through status.upgrade only (instance/upgrade_state.py), with
the instance's resourceVersion as a precondition, and wakes the instance controller to render it.
"""

from __future__ import annotations

from collections.abc import Callable

from coai_operator.instance import upgrade_state
from coai_operator.kube import KubeError
from coai_operator.migration.context import Ctx
from coai_operator.migration.model import Obj


def write_upgrade(ctx: Ctx, build: Callable[[Obj], Obj | None]) -> bool:
    """Send `build(instance)` to the instance's status, rebuilt from a fresh read on a 409 (the patch
    is computed from the wanted end state). True: it changed something."""
    if ctx.instance is None:
        raise KubeError(404, "NotFound", f"CoaiInstance {ctx.instance_name} was deleted")
    ctx.instance, changed = upgrade_state.write_rebuilt(ctx.kube, ctx.instance, build, wake=ctx.wake)
    return changed


def hold_maintenance(ctx: Ctx, message: str) -> bool:
    return write_upgrade(ctx, lambda inst: upgrade_state.hold_maintenance_patch(inst, ctx.name, message))
