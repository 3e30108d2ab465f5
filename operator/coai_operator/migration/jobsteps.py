"""Running a Job step: create its Job once (deterministic name), read its outcome from the Job's
conditions and the engine's result line (termination message, else the log tail)."""

from __future__ import annotations

import contextlib
import json
import os

from coai_operator.kube import Kube, KubeError
from coai_operator.migration import jobs
from coai_operator.migration.context import Ctx
from coai_operator.migration.model import Obj, Outcome, Reason, StepName, StepOutcome
from coai_operator.migration.steps import Step

DONE, RUNNING, FAILED = Outcome.DONE, Outcome.RUNNING, Outcome.FAILED


def parse_result(text: str | None) -> Obj | None:
    """The engine's final JSON line, from a termination message or a log tail."""
    for line in reversed((text or "").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    return value
    return None


def job_pods(ctx: Ctx, job_name: str) -> list[Obj]:
    pods = ctx.kube.list("v1", "Pod", ctx.namespace, label_selector=f"job-name={job_name}")
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
    return pods


def job_result(ctx: Ctx, job_name: str) -> Obj | None:
    for pod in job_pods(ctx, job_name):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated") or {}
            result = parse_result(terminated.get("message"))
            if result is not None:
                return result
        result = parse_result(pod_log_tail(ctx.kube, ctx.namespace, pod["metadata"]["name"]))
        if result is not None:
            return result
    return None


def pod_log_tail(kube: Kube, namespace: str, pod: str, lines: int = 5) -> str:
    """The last lines of a pod's log ('' when unavailable): the fallback when the termination
    message was cut or the runtime does not support it."""
    api = kube.api
    try:
        method, url, headers, body, _ = api.param_serialize(
            method="GET", resource_path=Kube.path("v1", "Pod", namespace, pod, "log"),
            query_params=[("tailLines", str(lines))],
            # A real apiserver answers 406 to `Accept: text/plain` here; the log comes as text anyway.
            header_params={"Accept": "*/*"},
            auth_settings=["BearerToken"])
        kube.stats.reads += 1
        response = api.call_api(method, url, header_params=headers, body=body, _request_timeout=10)
        return response.read().decode(errors="replace") if response.status == 200 else ""
    except Exception:  # logs are a convenience; the termination message is the contract
        return ""


def has_backup(ctx: Ctx) -> bool:
    return any(s["name"] == StepName.BACKUP for s in ctx.status.get("steps") or [])


# Pod waiting reasons that mean the container cannot be created as specified.
START_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                            "CreateContainerError", "ErrImageNeverPull"})
POD_START_SECONDS = int(os.environ.get("COAI_POD_START_SECONDS", "90"))


def _started(pod: Obj) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") in ("Running", "Succeeded", "Failed"):
        return True
    return any((cs.get("state") or {}).get("running") or (cs.get("state") or {}).get("terminated")
               for cs in status.get("containerStatuses") or [])


def start_failure(pods: list[Obj]) -> str:
    """Why a Job's pod has not started, from its conditions and container statuses."""
    if not pods:
        return "the Job created no pod (quota, admission or the Job controller; see `kubectl describe job`)"
    pod = pods[0]
    status = pod.get("status") or {}
    name = pod["metadata"]["name"]
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in START_FAILURES:
            return f"pod {name}: {waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"pod {name} cannot be scheduled ({cond.get('reason')}): {cond.get('message') or ''}"
    waiting = [((cs.get("state") or {}).get("waiting") or {}).get("reason") for cs in status.get("containerStatuses")
               or []]
    detail = ", ".join(w for w in waiting if w) or status.get("phase") or "Pending"
    return f"pod {name} has not started ({detail}; a missing volume or Secret shows as FailedMount in its events)"


def run_job_step(ctx: Ctx, step: Step, deadline: int | None = None, elapsed: float = 0.0) -> StepOutcome:
    assert ctx.instance is not None
    desired = jobs.build_job(ctx.migration, ctx.instance, step.name, has_backup(ctx), deadline)
    name = desired["metadata"]["name"]
    if "backup" in step.volumes and \
            ctx.kube.get("v1", "PersistentVolumeClaim", ctx.namespace, jobs.backup_pvc_name(ctx.migration)) is None:
        ctx.kube.create(jobs.backup_pvc(ctx.migration))
        ctx.event("BackupVolumeCreated", f"created PVC {jobs.backup_pvc_name(ctx.migration)} for backups")
    job = ctx.kube.get("batch/v1", "Job", ctx.namespace, name)
    if job is None:
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
    if "Complete" in conditions:
        result = job_result(ctx, name) or {}
        if result.get("ok") is False:
            return StepOutcome(FAILED, result.get("error") or f"Job {name} reported failure", job=name, data=result)
        return StepOutcome(DONE, step.summary(result), job=name, data=result)
    if "Failed" in conditions:
        result = job_result(ctx, name) or {}
        reason = result.get("error") or conditions["Failed"].get("message") or "the Job failed"
        return StepOutcome(FAILED, f"Job {name} failed: {reason}", job=name, data=result)
    pods = job_pods(ctx, name)
    if elapsed > pod_start_seconds(ctx) and not any(_started(p) for p in pods):
        # Nothing runs: deleting the Job is safe, and the step fails with the cause instead of waiting for ever.
        cause = start_failure(pods)
        ctx.kube.delete("batch/v1", "Job", ctx.namespace, name)
        return StepOutcome(FAILED, f"Job {name} did not start within {pod_start_seconds(ctx)}s: {cause}", job=name,
                           reason=Reason.POD_NOT_STARTED)
    return StepOutcome(RUNNING, f"Job {name} running", job=name)


def pod_start_seconds(ctx: Ctx) -> int:
    return int((ctx.spec.get("deadlines") or {}).get("podStart") or POD_START_SECONDS)
