"""The CoaiMigration state machine, driven by Job outcomes and the instance's observed state.

Level-based: every call reads the migration, its instance and its Jobs, runs the current step as
far as it can without waiting, and writes the status only when it changed. Everything it creates
has a deterministic name (Jobs, snapshot, backup PVC), so a restarted operator continues where the
last one stopped; every in-operator step computes its patch from the snapshot, so repeating it is
harmless. A migration in a terminal phase is never run again (only a requested rollback moves a
Succeeded or Failed one).

The steps are declared in steps.py; the start (lock, plan) in begin.py; the lock in lock.py; Job
steps in jobsteps.py; in-operator steps in opsteps.py. This module is the loop: `tick` is the
entry point. Two read-only steps may run at once (steps.runs_beside); nothing after them starts
before both have succeeded.
"""

from __future__ import annotations

import copy
import logging

from coai_operator import constants
from coai_operator.conditions import now_rfc3339
from coai_operator.kube import Kube, KubeError
from coai_operator.migration import backupstep, planner, testfaults
from coai_operator.migration.begin import LOCK_RETRY_SECONDS, begin
from coai_operator.migration.context import Ctx
from coai_operator.migration.jobsteps import run_job_step
from coai_operator.migration.lock import acquire_lock, lock_holder, release_lock
from coai_operator.migration.model import Obj, Outcome, Reason, StepOutcome
from coai_operator.migration.opsteps import SnapshotIncomplete
from coai_operator.migration.status import (
    STATUS_KEYS,
    backup_done,
    seconds_since,
    set_phase,
    started_steps,
    step_record,
)
from coai_operator.migration.steps import STEPS, deadline_seconds, runs_beside

log = logging.getLogger("coai_operator.migration")

# HTTP statuses worth retrying (0: the request never got an answer: timeout, refused, reset).
TEMPORARY_STATUSES = frozenset({0, 409, 429, 500, 502, 503, 504})
RUNNING_DELAY = 2.0  # a Job, backup or rollout step in progress: its watch wakes the machine sooner
DONE, RUNNING, FAILED = Outcome.DONE, Outcome.RUNNING, Outcome.FAILED
__all__ = ["STATUS_KEYS", "reconcile", "tick"]


# --- the machine -------------------------------------------------------------------------------

def fail(ctx: Ctx, reason: str, message: str, unchanged: str | None = None, policy: str | None = None) -> None:
    """A forward step failed: roll back per policy, or stop. `unchanged`: a step that failed before it
    changed anything."""
    policy = policy or (ctx.spec.get("rollback") or {}).get("policy", "Automatic")
    stop_waiting_beside(ctx, message)
    started = [s for s in started_steps(ctx.status) if s != unchanged]
    todo = planner.rollback_steps(ctx.spec, started, backup_done(ctx.status))
    ctx.event(reason, message, warning=True)
    if not todo:
        set_phase(ctx, "Failed", reason, f"{message}. Nothing was changed.")
        ctx.status["completedAt"] = now_rfc3339()
        release_lock(ctx)
        return
    if policy == "Automatic":
        start_rollback(ctx, todo, f"{message}; rolling back automatically")
        return
    ctx.status["completedAt"] = now_rfc3339()
    if policy == "Manual":
        set_phase(ctx, "Failed", reason, f"{message}. The instance is left as it is (lock held); set "
                                         "spec.rollback.requested: true to roll back.")
    else:
        set_phase(ctx, "Failed", reason, f"{message}. rollback.policy is Never: nothing is rolled back.")
        release_lock(ctx)


def stop_waiting_beside(ctx: Ctx, why: str) -> None:
    """A read-only step still running beside the one that failed (steps.runs_beside) is no longer
    waited for: it changes nothing, and its Job or CoaiBackup finishes on its own."""
    for record in ctx.status.get("steps") or []:
        if record.get("phase") == "Running" and STEPS[record["name"]].changes is None and \
                record["name"] not in planner.ROLLBACK_STEPS:
            record.update(phase="Skipped", finishedAt=now_rfc3339(),
                          message=f"not waited for: {why[:300]}; it changes nothing and finishes on its own")


def start_rollback(ctx: Ctx, todo: tuple[str, ...], message: str) -> None:
    steps = [s for s in ctx.status.get("steps") or [] if s["name"] not in planner.ROLLBACK_STEPS]
    ctx.status["steps"] = steps + [{"name": s, "phase": "Pending"} for s in todo]
    ctx.status.pop("completedAt", None)
    set_phase(ctx, "RollingBack", "RollingBack", message)
    ctx.event("RollingBack", message, warning=True)


def run_step(ctx: Ctx, name: str) -> StepOutcome:
    step = STEPS[name]
    if testfaults.api_error(ctx.migration, name):
        raise KubeError(503, "ServiceUnavailable", f"{name}: injected API error (test hook)")
    deadline = deadline_seconds(ctx.spec, step)
    started = step_started_at(ctx, name)
    elapsed = seconds_since(started) if started else 0.0
    if step.runs_job:
        outcome = run_job_step(ctx, step, deadline)
    else:
        assert step.action is not None
        try:
            outcome = step.action(ctx)
        except SnapshotIncomplete as exc:
            # Taking the snapshot is the first thing a spec-changing step does: if no change succeeded
            # before, this failure changed nothing either.
            changed = name in planner.ROLLBACK_STEPS or any(
                s.get("phase") == "Succeeded" and s["name"] in (*planner.DATA_CHANGING, *planner.SPEC_CHANGING)
                for s in ctx.status.get("steps") or [])
            return StepOutcome(FAILED, str(exc), reason=Reason.SNAPSHOT_INCOMPLETE, changed=changed)
    if outcome.state == RUNNING and elapsed > deadline:
        return StepOutcome(FAILED, f"{name} did not finish within its deadline of {deadline}s "
                                   f"(spec.deadlines.{step.deadline_key}): {outcome.message}", job=outcome.job)
    return outcome


def step_started_at(ctx: Ctx, name: str) -> str | None:
    record = step_record(ctx.status, name)
    return record.get("startedAt") if record else None


def run_record(ctx: Ctx, record: Obj, rolling_back: bool) -> tuple[bool, float | None]:
    """Run one step as far as it goes now. Returns (succeeded: go on to the next, seconds until the
    next look when not, None when the migration ended)."""
    name = record["name"]
    if ctx.deleting and not rolling_back and record.get("phase") != "Running":
        # Deleted while running: the step that ran has ended; undo what was changed, then let it go.
        fail(ctx, Reason.DELETION_REQUESTED, f"CoaiMigration {ctx.name} was deleted before {name}",
             policy="Automatic")
        return False, 0.0 if ctx.status.get("phase") == "RollingBack" else None
    if record.get("phase") != "Running":
        record.update(phase="Running", startedAt=now_rfc3339())
    ctx.status["currentStep"] = name
    if not rolling_back:
        set_phase(ctx, planner.phase_for(name, False), name, f"{name} running")
    try:
        outcome = run_step(ctx, name)
    except KubeError as exc:
        if exc.status in TEMPORARY_STATUSES:
            return False, LOCK_RETRY_SECONDS
        outcome = StepOutcome(FAILED, f"{name}: {exc.message}")
    if outcome.job:
        record["job"] = outcome.job
    record["message"] = outcome.message[:1000]
    if outcome.state == RUNNING:
        return False, RUNNING_DELAY
    record["finishedAt"] = now_rfc3339()
    if outcome.state == FAILED:
        record["phase"] = "Failed"
        if rolling_back:
            ctx.status["completedAt"] = now_rfc3339()
            set_phase(ctx, "Failed", "RollbackFailed",
                      f"rollback failed at {name}: {outcome.message}. {backupstep.whereabouts(ctx.status)}; "
                      f"the lock on {ctx.instance_name} is kept until this migration is deleted.")
            ctx.event("RollbackFailed", ctx.status["message"], warning=True)
            return False, None
        fail(ctx, outcome.reason or f"{name}Failed", f"{name} failed: {outcome.message}",
             unchanged=None if outcome.changed else name)
        return False, 1.0 if ctx.status.get("phase") == "RollingBack" else None
    if name == planner.PREFLIGHT and outcome.data.get("current") and \
            str(outcome.data["current"]) != ctx.status.get("fromVersion"):
        record["phase"] = "Failed"
        fail(ctx, Reason.VERSION_MISMATCH,
             f"the database is at {outcome.data['current']}, but CoaiInstance {ctx.instance_name} reports "
             f"{ctx.status.get('fromVersion')} (the plan's fromVersion); fix status.schemaVersion or the "
             "database before migrating")
        return False, None
    record["phase"] = "Succeeded"
    ctx.event(f"{name}Succeeded", outcome.message[:1000])
    if name == planner.BACKUP:  # the CoaiBackup the rollback restores (migration/backupstep.py)
        ctx.status["backup"] = {k: outcome.data[k] for k in ("name", "location", "artifacts", "rowCounts",
                                                              "completedAt") if k in outcome.data}
    return True, None


def advance(ctx: Ctx) -> float | None:
    """Run steps until one has to wait. Returns seconds until the next look, None when finished."""
    rolling_back = ctx.status.get("phase") == "RollingBack"
    records = [r for r in ctx.status.get("steps") or [] if rolling_back == (r["name"] in planner.ROLLBACK_STEPS)]
    for index, record in enumerate(records):
        if record.get("phase") in ("Succeeded", "Skipped"):
            continue
        went_on, delay = run_record(ctx, record, rolling_back)
        if went_on:
            continue
        following = records[index + 1] if index + 1 < len(records) else None
        if following is None or record.get("phase") != "Running" or ctx.deleting or \
                following.get("phase") not in ("Pending", "Running") or \
                not runs_beside(record["name"], following["name"]):
            return delay
        # The next step runs beside this one; whatever it does, the steps after both wait for both.
        went_on, delay = run_record(ctx, following, rolling_back)
        return RUNNING_DELAY if went_on else delay
    # Every step of this direction is done.
    ctx.status["completedAt"] = now_rfc3339()
    ctx.status.pop("currentStep", None)
    if rolling_back:
        set_phase(ctx, "RolledBack", "RolledBack",
                  f"rolled back to {ctx.status.get('fromVersion')}: database, files, config and image restored")
        release_lock(ctx, schema_version=ctx.status.get("fromVersion"))
    else:
        set_phase(ctx, "Succeeded", "Succeeded",
                  f"upgraded {ctx.status.get('fromVersion')} -> {ctx.status.get('toVersion')}")
        release_lock(ctx, schema_version=ctx.status.get("toVersion"))
    ctx.event(ctx.status["phase"], ctx.status["message"])
    return None


def reconcile(kube: Kube, migration: Obj, wake: bool = True) -> tuple[Obj, list[tuple[str, str, str]], float | None]:
    """One look at a migration. Returns (new status, events to post, seconds until the next look)."""
    status = copy.deepcopy(migration.get("status") or {})
    for key in [k for k in status if k not in STATUS_KEYS]:
        status.pop(key)  # kopf's own bookkeeping lives elsewhere
    spec = migration["spec"]
    instance = kube.get(constants.API_VERSION, constants.INSTANCE_KIND, migration["metadata"]["namespace"],
                        spec["instanceRef"]["name"])
    ctx = Ctx(kube=kube, migration=migration, instance=instance, status=status, wake=wake)
    phase = status.get("phase")
    status["observedGeneration"] = migration["metadata"].get("generation")

    if phase in planner.TERMINAL_PHASES:
        requested = (spec.get("rollback") or {}).get("requested")
        rolled = any(s["name"] in planner.ROLLBACK_STEPS for s in status.get("steps") or [])
        if not requested or rolled or phase == "RolledBack" or spec.get("dryRun") or instance is None:
            return status, ctx.events, None
        holder = acquire_lock(ctx)
        if holder is not None:
            message = f"rollback requested; it waits for {holder} to release {ctx.instance_name}"
            if status.get("message") != message:  # an Event on the transition, not on every look
                ctx.event(Reason.WAITING_FOR_LOCK, message)
                set_phase(ctx, phase, Reason.WAITING_FOR_LOCK, message)
            return status, ctx.events, LOCK_RETRY_SECONDS
        todo = planner.rollback_steps(spec, started_steps(status), backup_done(status))
        start_rollback(ctx, todo or (planner.RB_CONFIG, planner.RB_ROLLOUT), "rollback requested by spec.rollback")
        return status, ctx.events, 0.0

    if not status.get("steps"):
        delay = begin(ctx)
        if delay is None or delay > 0:
            return status, ctx.events, delay
    if instance is None:
        # Nothing can be rolled back without it (the Jobs take the database settings from it).
        ctx.status["completedAt"] = now_rfc3339()
        set_phase(ctx, "Failed", Reason.INSTANCE_NOT_FOUND,
                  f"CoaiInstance {ctx.instance_name} disappeared during the migration; nothing is rolled back. "
                  f"{backupstep.whereabouts(ctx.status)}.")
        ctx.event(Reason.INSTANCE_NOT_FOUND, ctx.status["message"], warning=True)
        return status, ctx.events, None
    if lock_holder(ctx.instance) != ctx.name:
        holder = acquire_lock(ctx)
        if holder is not None:
            set_phase(ctx, status.get("phase") or "Pending", "LockLost",
                      f"the lock on {ctx.instance_name} is held by {holder}; waiting")
            return status, ctx.events, LOCK_RETRY_SECONDS
    return status, ctx.events, advance(ctx)



def tick(kube: Kube, namespace: str, name: str, wake: bool = True) -> tuple[list[tuple[str, str, str]], float | None]:
    """Read one migration, advance it, write its status if it changed. Returns (events, next delay)."""
    migration = kube.get(constants.API_VERSION, constants.MIGRATION_KIND, namespace, name)
    if migration is None:
        return [], None
    status, events, delay = reconcile(kube, migration, wake)
    old = {k: v for k, v in (migration.get("status") or {}).items() if k in STATUS_KEYS}
    if status != old:
        patch = {k: status.get(k) for k in set(old) | set(status) if old.get(k) != status.get(k)}
        # resourceVersion: a concurrent writer (an older operator still shutting down) makes this a 409,
        # and the next tick starts again from what the API has.
        try:
            kube.patch(constants.API_VERSION, constants.MIGRATION_KIND, namespace, name,
                       {"metadata": {"resourceVersion": migration["metadata"]["resourceVersion"]}, "status": patch},
                       subresource="status")
        except KubeError as exc:
            if exc.status != 409:
                raise
            return [], LOCK_RETRY_SECONDS
        return events, delay
    return [], delay  # nothing changed: nothing to announce
