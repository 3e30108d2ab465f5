"""Every write the migration makes to the CoaiInstance, in one small module.

Git owns the spec: the migration acts through status.upgrade only (instance/upgrade_state.py), with
the instance's resourceVersion as a precondition, and wakes the instance controller to render it.
"""

from __future__ import annotations

from collections.abc import Callable

from coai_operator import constants
from coai_operator.instance import upgrade_state
from coai_operator.kube import KubeError
from coai_operator.migration.context import Ctx
from coai_operator.migration.model import Obj

ATTEMPTS = 3


def write_upgrade(ctx: Ctx, build: Callable[[Obj], Obj | None]) -> bool:
    """Send `build(instance)` to the instance's status. A 409 (it changed since it was read) reads it
    again and rebuilds the patch, which is computed from the wanted end state. True: it changed something."""
    instance = ctx.instance
    for attempt in range(ATTEMPTS):
        if instance is None:
            raise KubeError(404, "NotFound", f"CoaiInstance {ctx.instance_name} was deleted")
        patch = build(instance)
        if patch is None:
            ctx.instance = instance
            return False
        try:
            ctx.instance = upgrade_state.write(ctx.kube, instance, patch, wake=ctx.wake)
            return True
        except KubeError as exc:
            if exc.status != 409 or attempt == ATTEMPTS - 1:
                raise
        instance = ctx.kube.get(constants.API_VERSION, constants.INSTANCE_KIND, ctx.namespace, ctx.instance_name)
    return False


def hold_maintenance(ctx: Ctx, message: str) -> bool:
    return write_upgrade(ctx, lambda inst: upgrade_state.hold_maintenance_patch(inst, ctx.name, message))
