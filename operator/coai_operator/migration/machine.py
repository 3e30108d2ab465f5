"""The CoaiMigration state machine, driven by Job outcomes and the instance's observed state.

Level-based: every call reads the migration, its instance and its Jobs, runs the current step as
far as it can without waiting, and writes the status only when it changed. Everything it creates
has a deterministic name (Jobs, snapshot, backup PVC), so a restarted operator continues where the
last one stopped; every in-operator step computes its patch from the snapshot, so repeating it is
harmless. A migration in a terminal phase is never run again (only a requested rollback moves a
Succeeded or Failed one).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coai_operator import constants
from coai_operator.bundles import load_bundle
from coai_operator.bundles.config_migration import ConfigRulesError, merge_rules
from coai_operator.conditions import now_rfc3339, set_condition
from coai_operator.engine.versions import Hop, Version
from coai_operator.kube import Kube, KubeError
from coai_operator.migration import digest, jobs, planner, realjobs
from coai_operator.migration.snapshot import (
    Snapshot,
    encode_secret,
    map_merge_patch,
    migrated_config,
    snapshot_name,
    snapshot_objects,
    take_snapshot,
)

Obj = dict[str, Any]
log = logging.getLogger("coai_operator.migration")

ROLLOUT_TIMEOUT_SECONDS = int(os.environ.get("COAI_ROLLOUT_TIMEOUT_SECONDS", "900"))
LOCK_RETRY_SECONDS = 5.0
INSTANCE_GRACE_SECONDS = float(os.environ.get("COAI_INSTANCE_GRACE_SECONDS", "60"))


@dataclass
class StepOutcome:
    state: str  # "done" | "running" | "failed"
    message: str = ""
    job: str | None = None
    data: Obj = field(default_factory=dict)


DONE, RUNNING, FAILED = "done", "running", "failed"


@dataclass
class Ctx:
    kube: Kube
    migration: Obj
    instance: Obj | None
    status: Obj
    events: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.migration["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.migration["metadata"]["namespace"]

    @property
    def spec(self) -> Obj:
        return self.migration["spec"]

    @property
    def instance_name(self) -> str:
        return self.spec["instanceRef"]["name"]

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(("Warning" if warning else "Normal", reason, message))


# --- the instance lock -------------------------------------------------------------------------

def lock_holder(instance: Obj | None) -> str | None:
    return ((instance or {}).get("status") or {}).get("activeMigration") or None


def acquire_lock(ctx: Ctx) -> str | None:
    """Take the instance lock atomically (resourceVersion precondition). None: we hold it;
    otherwise the name of the migration that does."""
    assert ctx.instance is not None
    holder = lock_holder(ctx.instance)
    if holder == ctx.name:
        return None
    if holder and ctx.kube.get(constants.API_VERSION, constants.MIGRATION_KIND, ctx.namespace, holder) is not None:
        return holder
    try:  # free, or held by a migration that no longer exists
        ctx.instance = ctx.kube.patch(
            constants.API_VERSION, constants.INSTANCE_KIND, ctx.namespace, ctx.instance_name,
            {"metadata": {"resourceVersion": ctx.instance["metadata"]["resourceVersion"]},
             "status": {"activeMigration": ctx.name}}, subresource="status")
    except KubeError as exc:
        if exc.status == 409:  # somebody else was faster; look again next time
            return holder or "another migration"
        raise
    ctx.event("LockAcquired", f"took the lock on CoaiInstance {ctx.instance_name}")
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


# --- jobs ----------------------------------------------------------------------------------------

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


def job_result(ctx: Ctx, job_name: str) -> Obj | None:
    pods = ctx.kube.list("v1", "Pod", ctx.namespace, label_selector=f"job-name={job_name}")
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
    for pod in pods:
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
            query_params=[("tailLines", str(lines))], header_params={"Accept": "text/plain"},
            auth_settings=["BearerToken"])
        kube.stats.reads += 1
        response = api.call_api(method, url, header_params=headers, body=body, _request_timeout=10)
        return response.read().decode(errors="replace") if response.status == 200 else ""
    except Exception:  # logs are a convenience; the termination message is the contract
        return ""


def run_job_step(ctx: Ctx, step: str) -> StepOutcome:
    assert ctx.instance is not None
    desired = jobs.build_job(ctx.migration, ctx.instance, step)
    name = desired["metadata"]["name"]
    if step in (planner.BACKUP, planner.RB_EXPORT) and \
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
        ctx.event("JobCreated", f"{step}: started Job {name}")
        return StepOutcome(RUNNING, f"Job {name} started", job=name)
    conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []
                  if c.get("status") == "True"}
    if "Complete" in conditions:
        result = job_result(ctx, name) or {}
        if result.get("ok") is False:
            return StepOutcome(FAILED, result.get("error") or f"Job {name} reported failure", job=name, data=result)
        return StepOutcome(DONE, summarize(step, result), job=name, data=result)
    if "Failed" in conditions:
        result = job_result(ctx, name) or {}
        reason = result.get("error") or conditions["Failed"].get("message") or "the Job failed"
        return StepOutcome(FAILED, f"Job {name} failed: {reason}", job=name, data=result)
    return StepOutcome(RUNNING, f"Job {name} running", job=name)


def summarize(step: str, result: Obj) -> str:
    if step == planner.PREFLIGHT:
        return f"database at {result.get('current')}, path {' -> '.join(result.get('path') or []) or 'none'}"
    if step in (planner.BACKUP, planner.RB_EXPORT):
        total = sum(int(a.get("bytes") or 0) for a in result.get("artifacts") or [])
        return f"backup verified at {result.get('location')}: {len(result.get('artifacts') or [])} artifacts, " \
               f"{total} bytes"
    if step == planner.RB_RESTORE:
        return "database and files restored from the backup; row counts verified"
    if step == planner.VALIDATE:
        checks = result.get("checks") or []
        if isinstance(checks, list):
            return "checks: " + ", ".join(f"{c.get('name')}={c.get('status')}" for c in checks if isinstance(c, dict))
    return "done"


# --- in-operator steps -------------------------------------------------------------------------

def load_snapshot(ctx: Ctx) -> Snapshot:
    cm = ctx.kube.get("v1", "ConfigMap", ctx.namespace, snapshot_name(ctx.migration))
    if cm is None:
        raise KubeError(404, "SnapshotMissing", f"the config snapshot ConfigMap {snapshot_name(ctx.migration)} is gone")
    secret = ctx.kube.get("v1", "Secret", ctx.namespace, snapshot_name(ctx.migration))
    return Snapshot.from_objects(cm, secret)


def ensure_snapshot(ctx: Ctx) -> Snapshot:
    """Create the snapshot once; later calls read it back (it must never capture a migrated state)."""
    existing = ctx.kube.get("v1", "ConfigMap", ctx.namespace, snapshot_name(ctx.migration))
    snap = load_snapshot(ctx) if existing is not None else _create_snapshot(ctx)
    ctx.status["previous"] = {
        "version": snap.version,
        "image": snap.image or "",
        "configSnapshot": {"configMap": snapshot_name(ctx.migration),
                           "secret": snapshot_name(ctx.migration) if snap.secret_name else ""},
    }
    if snap.image_digest:
        ctx.status["previous"]["imageDigest"] = snap.image_digest
    return snap


def _create_snapshot(ctx: Ctx) -> Snapshot:
    assert ctx.instance is not None
    secret_name = ((ctx.instance.get("spec") or {}).get("secretRef") or {}).get("name")
    secret = ctx.kube.get("v1", "Secret", ctx.namespace, secret_name) if secret_name else None
    snap = take_snapshot(ctx.instance, ctx.status.get("fromVersion") or "", secret,
                         digest.running_digest(ctx.kube, ctx.namespace, ctx.instance_name))
    configmap, secret_copy = snapshot_objects(ctx.migration, snap)
    if secret_copy is not None:  # the Secret first: the ConfigMap's presence means "snapshot complete"
        with contextlib.suppress(KubeError):
            ctx.kube.create(secret_copy)
    ctx.kube.create(configmap)
    ctx.event("ConfigSnapshotTaken", f"snapshot of CoaiInstance {ctx.instance_name} config kept in "
                                     f"ConfigMap/Secret {snapshot_name(ctx.migration)}")
    return snap


def patch_instance_spec(ctx: Ctx, patch: Obj) -> None:
    if patch:
        ctx.instance = ctx.kube.patch(constants.API_VERSION, constants.INSTANCE_KIND, ctx.namespace,
                                      ctx.instance_name, {"spec": patch})


def set_maintenance(ctx: Ctx, enabled: bool, message: str | None) -> StepOutcome:
    assert ctx.instance is not None
    current = (ctx.instance.get("spec") or {}).get("maintenance") or {}
    desired: Obj = {"enabled": enabled}
    if message:
        desired["message"] = message
    if current.get("enabled") != enabled or (message and current.get("message") != message):
        patch_instance_spec(ctx, {"maintenance": desired})
        ctx.event("MaintenanceOn", f"CoaiInstance {ctx.instance_name} in maintenance: app scaled down")
    return wait_scaled_down(ctx)


def wait_scaled_down(ctx: Ctx) -> StepOutcome:
    deployment = ctx.kube.get("apps/v1", "Deployment", ctx.namespace, ctx.instance_name)
    if deployment is None:
        return StepOutcome(DONE, "no Deployment: nothing serves traffic")
    spec_replicas = (deployment.get("spec") or {}).get("replicas", 1)
    status = deployment.get("status") or {}
    if spec_replicas == 0 and not status.get("replicas") and not status.get("readyReplicas"):
        return StepOutcome(DONE, "app scaled to 0: no writes during the migration")
    return StepOutcome(RUNNING, f"waiting for Deployment {ctx.instance_name} to scale down")


def step_maintenance_on(ctx: Ctx) -> StepOutcome:
    ensure_snapshot(ctx)
    message = (ctx.spec.get("maintenance") or {}).get("message") or \
        f"Upgrading to {ctx.spec['targetVersion']} (CoaiMigration {ctx.name})"
    return set_maintenance(ctx, True, message)


def config_rules(ctx: Ctx) -> list:
    if realjobs.applies(ctx.migration):  # the real line has no env renames of its own: the user's only
        return merge_rules([], ctx.spec.get("configMigration"))
    bundle = load_bundle()
    path = [Hop(Version.parse(a), Version.parse(b)) for a, b in (h.split("-to-") for h in ctx.status.get("path", []))]
    return bundle.config_rules(path, ctx.spec.get("configMigration"))


def step_config(ctx: Ctx) -> StepOutcome:
    snap = ensure_snapshot(ctx)
    assert ctx.instance is not None
    try:
        plan = migrated_config(snap, config_rules(ctx))
    except ConfigRulesError as exc:
        return StepOutcome(FAILED, f"spec.configMigration: {exc}")
    config_patch = map_merge_patch((ctx.instance.get("spec") or {}).get("config") or {}, plan.config)
    patch_instance_spec(ctx, {"config": config_patch} if config_patch else {})
    if snap.secret_name:
        live = ctx.kube.get("v1", "Secret", ctx.namespace, snap.secret_name)
        desired = encode_secret(plan.secret)
        if live is not None and (live.get("data") or {}) != desired:
            secret_patch = map_merge_patch(live.get("data") or {}, desired)
            ctx.kube.patch("v1", "Secret", ctx.namespace, snap.secret_name, {"data": secret_patch})
    message = "; ".join(plan.changes) if plan.changes else "no config changes on this path"
    if config_patch or plan.changes:
        ctx.event("ConfigMigrated", message[:1000])
    return StepOutcome(DONE, message[:1000])


def wait_instance_ready(ctx: Ctx, version: str, started_at: str | None) -> StepOutcome:
    inst = ctx.kube.get(constants.API_VERSION, constants.INSTANCE_KIND, ctx.namespace, ctx.instance_name)
    ctx.instance = inst
    if inst is None:
        return StepOutcome(FAILED, f"CoaiInstance {ctx.instance_name} was deleted")
    status = inst.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    current = status.get("observedGeneration") == inst["metadata"].get("generation")
    if ready and current and status.get("version") == version:
        return StepOutcome(DONE, f"CoaiInstance {ctx.instance_name} Ready at {version}")
    if started_at and seconds_since(started_at) > ROLLOUT_TIMEOUT_SECONDS:
        return StepOutcome(FAILED, f"CoaiInstance {ctx.instance_name} not Ready at {version} after "
                                   f"{ROLLOUT_TIMEOUT_SECONDS}s: {status.get('phase')}")
    return StepOutcome(RUNNING, f"waiting for CoaiInstance {ctx.instance_name} to be Ready at {version}")


def step_rollout(ctx: Ctx) -> StepOutcome:
    snap = ensure_snapshot(ctx)
    assert ctx.instance is not None
    spec = ctx.instance.get("spec") or {}
    target = str(ctx.spec["targetVersion"])
    patch: Obj = {}
    if spec.get("version") != target:
        patch["version"] = target
    if spec.get("imageDigest"):
        patch["imageDigest"] = None  # a pin from an earlier rollback would keep the old image
    maintenance = maintenance_patch(spec, snap)
    if maintenance:
        patch["maintenance"] = maintenance
    if patch:
        patch_instance_spec(ctx, patch)
        ctx.event("RolloutStarted", f"CoaiInstance {ctx.instance_name} -> {target}; maintenance off")
    return wait_instance_ready(ctx, target, step_started_at(ctx, planner.ROLLOUT))


def maintenance_patch(spec: Obj, snap: Snapshot) -> Obj | None:
    """The merge patch that puts spec.maintenance back as the snapshot has it (keys we added go)."""
    return map_merge_patch(spec.get("maintenance") or {}, snap.maintenance or {"enabled": False})


def step_rollback_maintenance(ctx: Ctx) -> StepOutcome:
    return set_maintenance(ctx, True, f"Rolling back CoaiMigration {ctx.name}")


def step_rollback_config(ctx: Ctx) -> StepOutcome:
    snap = load_snapshot(ctx)
    inst = ctx.kube.get(constants.API_VERSION, constants.INSTANCE_KIND, ctx.namespace, ctx.instance_name)
    if inst is None:
        return StepOutcome(FAILED, f"CoaiInstance {ctx.instance_name} was deleted")
    ctx.instance = inst
    spec = inst.get("spec") or {}
    patch: Obj = {}
    config_patch = map_merge_patch(spec.get("config") or {}, snap.config)
    if config_patch:
        patch["config"] = config_patch
    if spec.get("version") != snap.version:
        patch["version"] = snap.version
    if snap.image and spec.get("image") != snap.image:
        patch["image"] = snap.image
    if spec.get("imageDigest") != snap.image_digest:
        patch["imageDigest"] = snap.image_digest  # what ran before, not whatever the tag means now
    maintenance = maintenance_patch(spec, snap)
    if maintenance:
        patch["maintenance"] = maintenance
    patch_instance_spec(ctx, patch)
    if snap.secret_name:
        live = ctx.kube.get("v1", "Secret", ctx.namespace, snap.secret_name)
        desired = encode_secret(snap.secret)
        if live is not None and (live.get("data") or {}) != desired:
            ctx.kube.patch("v1", "Secret", ctx.namespace, snap.secret_name,
                           {"data": map_merge_patch(live.get("data") or {}, desired)})
    ctx.event("ConfigRestored", f"CoaiInstance {ctx.instance_name} config, Secret and version {snap.version} "
                                "restored from the snapshot")
    return StepOutcome(DONE, f"config, secret and version {snap.version} restored")


def step_rollback_rollout(ctx: Ctx) -> StepOutcome:
    snap = load_snapshot(ctx)
    if (snap.maintenance or {}).get("enabled"):
        return StepOutcome(DONE, "instance was in maintenance before the migration; left in maintenance")
    return wait_instance_ready(ctx, snap.version, step_started_at(ctx, planner.RB_ROLLOUT))


IN_OPERATOR_STEPS: dict[str, Callable[[Ctx], StepOutcome]] = {
    planner.MAINTENANCE_ON: step_maintenance_on,
    planner.CONFIG: step_config,
    planner.ROLLOUT: step_rollout,
    planner.RB_MAINTENANCE: step_rollback_maintenance,
    planner.RB_CONFIG: step_rollback_config,
    planner.RB_ROLLOUT: step_rollback_rollout,
}


# --- status helpers ----------------------------------------------------------------------------

def seconds_since(timestamp: str) -> float:
    import datetime as dt

    when = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (dt.datetime.now(dt.UTC) - when).total_seconds()


def step_record(status: Obj, name: str) -> Obj | None:
    return next((s for s in status.get("steps") or [] if s["name"] == name), None)


def step_started_at(ctx: Ctx, name: str) -> str | None:
    record = step_record(ctx.status, name)
    return record.get("startedAt") if record else None


def started_steps(status: Obj) -> list[str]:
    return [s["name"] for s in status.get("steps") or [] if s.get("phase") in ("Running", "Succeeded", "Failed")]


def conditions_for(status: Obj, generation: int | None, reason: str, message: str) -> list[Obj]:
    phase = status.get("phase")
    conds = status.get("conditions")
    terminal = phase in planner.TERMINAL_PHASES
    conds = set_condition(conds, "Ready", phase == "Succeeded", reason, message, generation)
    conds = set_condition(conds, "Progressing", not terminal and phase != "Pending",
                          reason, message, generation)
    conds = set_condition(conds, "Failed", phase == "Failed", reason, message, generation)
    # kstatus (Flux, kpt, cli-utils) reads these "abnormal-true" conditions rather than Ready.
    conds = set_condition(conds, "Reconciling", not terminal, reason, message, generation)
    conds = set_condition(conds, "Stalled", phase == "Failed", reason, message, generation)
    return set_condition(conds, "RolledBack", phase == "RolledBack", reason, message, generation)


def set_phase(ctx: Ctx, phase: str, reason: str, message: str) -> None:
    ctx.status["phase"] = phase
    ctx.status["message"] = message
    ctx.status["conditions"] = conditions_for(ctx.status, ctx.migration["metadata"].get("generation"), reason,
                                              message)


# --- the machine -------------------------------------------------------------------------------

def fail(ctx: Ctx, reason: str, message: str) -> None:
    """A forward step failed: roll back per policy, or stop."""
    policy = (ctx.spec.get("rollback") or {}).get("policy", "Automatic")
    backup = step_record(ctx.status, planner.BACKUP)
    todo = planner.rollback_steps(ctx.spec, started_steps(ctx.status), bool(backup and backup["phase"] == "Succeeded"))
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


def start_rollback(ctx: Ctx, todo: tuple[str, ...], message: str) -> None:
    steps = [s for s in ctx.status.get("steps") or [] if s["name"] not in planner.ROLLBACK_STEPS]
    ctx.status["steps"] = steps + [{"name": s, "phase": "Pending"} for s in todo]
    ctx.status.pop("completedAt", None)
    set_phase(ctx, "RollingBack", "RollingBack", message)
    ctx.event("RollingBack", message, warning=True)


def run_step(ctx: Ctx, name: str) -> StepOutcome:
    if name in jobs.STEP_SLUGS:
        return run_job_step(ctx, name)
    return IN_OPERATOR_STEPS[name](ctx)


def advance(ctx: Ctx) -> float | None:
    """Run steps until one has to wait. Returns seconds until the next look, None when finished."""
    rolling_back = ctx.status.get("phase") == "RollingBack"
    for record in ctx.status.get("steps") or []:
        if record.get("phase") in ("Succeeded", "Skipped"):
            continue
        if rolling_back != (record["name"] in planner.ROLLBACK_STEPS):
            continue
        name = record["name"]
        if record.get("phase") != "Running":
            record.update(phase="Running", startedAt=now_rfc3339())
        ctx.status["currentStep"] = name
        if not rolling_back:
            set_phase(ctx, planner.phase_for(name, False), name, f"{name} running")
        try:
            outcome = run_step(ctx, name)
        except KubeError as exc:
            if exc.status in (409, 429, 500, 503, 504):
                return LOCK_RETRY_SECONDS
            outcome = StepOutcome(FAILED, f"{name}: {exc.message}")
        if outcome.job:
            record["job"] = outcome.job
        record["message"] = outcome.message[:1000]
        if outcome.state == RUNNING:
            return 2.0
        record["finishedAt"] = now_rfc3339()
        if outcome.state == FAILED:
            record["phase"] = "Failed"
            if rolling_back:
                ctx.status["completedAt"] = now_rfc3339()
                set_phase(ctx, "Failed", "RollbackFailed",
                          f"rollback failed at {name}: {outcome.message}. The backup is at "
                          f"{jobs.backup_pvc_name(ctx.migration)}:{jobs.backup_location(ctx.migration)}; the lock on "
                          f"{ctx.instance_name} is kept until this migration is deleted.")
                ctx.event("RollbackFailed", ctx.status["message"], warning=True)
                return None
            fail(ctx, f"{name}Failed", f"{name} failed: {outcome.message}")
            return 1.0 if ctx.status.get("phase") == "RollingBack" else None
        record["phase"] = "Succeeded"
        ctx.event(f"{name}Succeeded", outcome.message[:1000])
        if name == planner.BACKUP:
            ctx.status["backup"] = {
                "location": f"pvc/{jobs.backup_pvc_name(ctx.migration)}{jobs.backup_location(ctx.migration)}",
                "artifacts": outcome.data.get("artifacts") or [],
                "rowCounts": outcome.data.get("rowCounts") or {},
                "completedAt": outcome.data.get("completedAt") or now_rfc3339(),
            }
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


def reconcile(kube: Kube, migration: Obj) -> tuple[Obj, list[tuple[str, str, str]], float | None]:
    """One look at a migration. Returns (new status, events to post, seconds until the next look)."""
    status = copy.deepcopy(migration.get("status") or {})
    for key in [k for k in status if k not in STATUS_KEYS]:
        status.pop(key)  # kopf's own bookkeeping lives elsewhere
    spec = migration["spec"]
    instance = kube.get(constants.API_VERSION, constants.INSTANCE_KIND, migration["metadata"]["namespace"],
                        spec["instanceRef"]["name"])
    ctx = Ctx(kube=kube, migration=migration, instance=instance, status=status)
    phase = status.get("phase")
    status["observedGeneration"] = migration["metadata"].get("generation")

    if phase in planner.TERMINAL_PHASES:
        requested = (spec.get("rollback") or {}).get("requested")
        rolled = any(s["name"] in planner.ROLLBACK_STEPS for s in status.get("steps") or [])
        if not requested or rolled or phase == "RolledBack" or spec.get("dryRun") or instance is None:
            return status, ctx.events, None
        holder = acquire_lock(ctx)
        if holder is not None:
            ctx.event("WaitingForLock", f"rollback waits for {holder} to release {ctx.instance_name}")
            return status, ctx.events, LOCK_RETRY_SECONDS
        backup = step_record(status, planner.BACKUP)
        todo = planner.rollback_steps(spec, started_steps(status), bool(backup and backup["phase"] == "Succeeded"))
        start_rollback(ctx, todo or (planner.RB_CONFIG, planner.RB_ROLLOUT), "rollback requested by spec.rollback")
        return status, ctx.events, 0.0

    if not status.get("steps"):
        delay = begin(ctx)
        if delay is None or delay > 0:
            return status, ctx.events, delay
    if instance is None:
        fail(ctx, "InstanceNotFound", f"CoaiInstance {ctx.instance_name} disappeared during the migration")
        return status, ctx.events, None
    if lock_holder(ctx.instance) != ctx.name:
        holder = acquire_lock(ctx)
        if holder is not None:
            set_phase(ctx, status.get("phase") or "Pending", "LockLost",
                      f"the lock on {ctx.instance_name} is held by {holder}; waiting")
            return status, ctx.events, LOCK_RETRY_SECONDS
    return status, ctx.events, advance(ctx)


STATUS_KEYS = frozenset({
    "phase", "fromVersion", "toVersion", "path", "steps", "currentStep", "backup", "previous", "startedAt",
    "completedAt", "message", "observedGeneration", "conditions"
})
