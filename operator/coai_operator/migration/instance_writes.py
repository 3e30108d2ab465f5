"""Every write the migration makes to the CoaiInstance, in one small module.

Today the migration drives the instance through its spec (version, config, maintenance); a later
change makes it act through the instance's status instead, and only this module changes then.
"""

from __future__ import annotations

from coai_operator import constants
from coai_operator.migration.context import Ctx
from coai_operator.migration.model import Obj


def patch_instance_spec(ctx: Ctx, patch: Obj) -> None:
    if patch:
        ctx.instance = ctx.kube.patch(constants.API_VERSION, constants.INSTANCE_KIND, ctx.namespace,
                                      ctx.instance_name, {"spec": patch})


def set_maintenance(ctx: Ctx, enabled: bool, message: str | None) -> bool:
    """Ask for maintenance on/off. True when this call changed something."""
    assert ctx.instance is not None
    current = (ctx.instance.get("spec") or {}).get("maintenance") or {}
    desired: Obj = {"enabled": enabled}
    if message:
        desired["message"] = message
    if current.get("enabled") != enabled or (message and current.get("message") != message):
        patch_instance_spec(ctx, {"maintenance": desired})
        return True
    return False
