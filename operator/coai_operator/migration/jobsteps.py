"""Running a Job step: create its Job once (deterministic name), read its outcome from the Job's
conditions, or from its pod once the engine has exited 0, and the engine's result line
(termination message, else the log tail)."""

from __future__ import annotations

from coai_operator.kube import KubeError
from coai_operator.kube.jobpods import (  # noqa: F401  (parse_result, pod_log_tail: re-exported)
    POD_START_SECONDS,
    exited_cleanly,
    job_result,
    parse_result,
    pod_log_tail,
    pod_not_started,
    seconds_since,
)
from coai_operator.migration import backupstep, jobs
from coai_operator.migration.context import Ctx
from coai_operator.migration.model import Obj, Outcome, Reason, StepName, StepOutcome
from coai_operator.migration.steps import Step

DONE, RUNNING, FAILED = Outcome.DONE, Outcome.RUNNING, Outcome.FAILED


def row_counts(ctx: Ctx) -> Obj | None:
    """The backup's row counts when this migration took a backup (Validate compares with them)."""
    if not any(s["name"] == StepName.BACKUP for s in ctx.status.get("steps") or []):
        return None
    return dict((ctx.status.get("backup") or {}).get("rowCounts") or {})


def run_job_step(ctx: Ctx, step: Step, deadline: int | None = None) -> StepOutcome:
    assert ctx.instance is not None
    name = jobs.job_name(ctx.migration, step.name)
    job = ctx.kube.get("batch/v1", "Job", ctx.namespace, name)
    if job is None:
        try:
            source = backupstep.restore_source(ctx.kube, ctx.migration) if "backup" in step.volumes else None
        except backupstep.BackupGone as gone:
            return StepOutcome(FAILED, str(gone))
        desired = jobs.build_job(ctx.migration, ctx.instance, step.name, row_counts(ctx), deadline, source)
        # Jobs are immutable: create once, never patch; the name makes a re-run find it.
        try:
            ctx.kube.create(desired)
        except KubeError as exc:
            if exc.status != 409:
                return StepOutcome(FAILED, f"cannot create Job {name}: {exc.message}", job=name)
        ctx.event("JobCreated", f"{step.name}: started Job {name}")
        return StepOutcome(RUNNING, f"Job {name} started", job=name)
    conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []
                  if c.get("status") == "True"}
    exited = None if conditions else exited_cleanly(ctx.kube, job)
    if "Complete" in conditions or exited is not None:
        result = job_result(ctx.kube, ctx.namespace, name, exited) or {}
        if result.get("ok") is False:
            return StepOutcome(FAILED, result.get("error") or f"Job {name} reported failure", job=name, data=result)
        return StepOutcome(DONE, step.summary(result), job=name, data=result)
    if "Failed" in conditions:
        result = job_result(ctx.kube, ctx.namespace, name) or {}
        reason = result.get("error") or conditions["Failed"].get("message") or "the Job failed"
        return StepOutcome(FAILED, f"Job {name} failed: {reason}", job=name, data=result)
    # From the Job's creation, not the step's start: a step may create its Job long after it
    # started (a retried API error, an operator restart), and that wait is not the pod's.
    created = (job.get("metadata") or {}).get("creationTimestamp")
    age = seconds_since(created) if created else 0.0
    cause = pod_not_started(ctx.kube, ctx.namespace, name, age, pod_start_seconds(ctx))
    if cause:
        # Nothing runs: deleting the Job is safe, and the step fails with the cause instead of waiting for ever.
        ctx.kube.delete("batch/v1", "Job", ctx.namespace, name)
        return StepOutcome(FAILED, f"Job {name} did not start within {pod_start_seconds(ctx)}s: {cause}", job=name,
                           reason=Reason.POD_NOT_STARTED)
    return StepOutcome(RUNNING, f"Job {name} running", job=name)


def pod_start_seconds(ctx: Ctx) -> int:
    return int((ctx.spec.get("deadlines") or {}).get("podStart") or POD_START_SECONDS)
