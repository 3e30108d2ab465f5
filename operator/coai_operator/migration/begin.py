"""The start of a CoaiMigration: wait for the instance's lock and the instance itself, plan, take
the lock and lay out the steps (or stop at a dry run's plan, or at a refused one)."""

from __future__ import annotations

import os

from coai_operator import constants
from coai_operator.bundles import load_bundle
from coai_operator.conditions import now_rfc3339
from coai_operator.migration import planner
from coai_operator.migration.context import Ctx
from coai_operator.migration.lock import acquire_lock, lock_holder
from coai_operator.migration.model import Reason
from coai_operator.migration.status import seconds_since, set_phase

LOCK_RETRY_SECONDS = 5.0
INSTANCE_GRACE_SECONDS = float(os.environ.get("COAI_INSTANCE_GRACE_SECONDS", "60"))


def grace_expired(ctx: Ctx, reason: str) -> bool:
    """A missing instance is given a short grace (it may be applied in the same sync); an instance
    that is still starting or changing version is waited for as long as it takes."""
    if reason != "InstanceNotFound":
        return False
    created = ctx.migration["metadata"].get("creationTimestamp")
    return not created or seconds_since(created) > INSTANCE_GRACE_SECONDS


def wait_for_lock(ctx: Ctx, holder: str) -> float:
    message = (f"CoaiInstance {ctx.instance_name} is being migrated by {holder}; this migration starts when "
               "that one ends")
    if ctx.status.get("message") != message:
        ctx.event("WaitingForLock", message)
    set_phase(ctx, "Pending", "WaitingForLock", message)
    return LOCK_RETRY_SECONDS


def begin(ctx: Ctx) -> float | None:
    """Wait for the lock to be free, plan, take the lock, lay out the steps."""
    if ctx.deleting:
        ctx.status.update(startedAt=ctx.status.get("startedAt") or now_rfc3339(), completedAt=now_rfc3339())
        set_phase(ctx, "Failed", Reason.DELETION_REQUESTED, "deleted before it started. Nothing was changed.")
        return None
    holder = lock_holder(ctx.instance)
    if holder and holder != ctx.name and \
            ctx.kube.get(constants.API_VERSION, constants.MIGRATION_KIND, ctx.namespace, holder) is not None:
        # Planning against an instance another migration is changing would plan from a stale version.
        return wait_for_lock(ctx, holder)
    table = load_bundle().table
    try:
        plan = planner.plan_migration(ctx.spec, ctx.instance, table, ctx.instance_name)
    except planner.PlanRefused as exc:
        if exc.reason in planner.TRANSIENT_REFUSALS and not grace_expired(ctx, exc.reason):
            # GitOps applies an instance and its migration together: wait for the instance to settle.
            if ctx.status.get("message") != str(exc):
                ctx.event("WaitingForInstance", str(exc))
            set_phase(ctx, "Pending", "WaitingForInstance", str(exc))
            return LOCK_RETRY_SECONDS
        ctx.status.update(startedAt=ctx.status.get("startedAt") or now_rfc3339(), completedAt=now_rfc3339())
        set_phase(ctx, "Failed", exc.reason, f"refused: {exc}. Nothing was changed.")
        ctx.event(exc.reason, str(exc), warning=True)
        return None
    ctx.status.update(fromVersion=plan.from_version, toVersion=plan.to_version, path=list(plan.path))
    if ctx.spec.get("dryRun"):
        ctx.status.update(startedAt=now_rfc3339(), completedAt=now_rfc3339(),
                          steps=[{"name": s, "phase": "Skipped"} for s in plan.steps])
        checks = ", ".join(plan.checks) or "none"
        warnings = f"; warnings: {'; '.join(plan.warnings)}" if plan.warnings else ""
        set_phase(ctx, "Succeeded", "DryRun",
                  f"dry run: {plan.from_version} -> {plan.to_version} via {', '.join(plan.path)}; steps: "
                  f"{', '.join(plan.steps)}; checks: {checks}{warnings}. Nothing was changed.")
        ctx.event("DryRun", ctx.status["message"])
        return None
    holder = acquire_lock(ctx)
    if holder is not None:
        return wait_for_lock(ctx, holder)
    ctx.status.update(startedAt=now_rfc3339(), steps=[{"name": s, "phase": "Pending"} for s in plan.steps])
    for warning in plan.warnings:
        ctx.event("PlanWarning", warning, warning=True)
    ctx.event("Planned", f"{plan.from_version} -> {plan.to_version} via {', '.join(plan.path)}")
    set_phase(ctx, "Planning", "Planned", f"planned {plan.from_version} -> {plan.to_version}")
    return 0.0
