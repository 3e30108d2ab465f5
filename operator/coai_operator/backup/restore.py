"""CoaiRestore reconcile: a small state machine kept in status.step, one API step per tick.

Steps: Target (the CoaiInstance and its volumes exist; a new instance is applied by the user
together with the CoaiRestore) → Maintenance (held in the instance's status.upgrade, never its spec;
wait for the app to scale to 0) → Restore (the engine Job: it verifies every checksum and the
app version BEFORE it changes anything, so a refused restore leaves the target as it was) →
Version (status.upgrade deploys the backup's app version) → Release (the hold is dropped) →
Ready (the instance reports Running). Any failure after Maintenance still runs Release.
A finished CoaiRestore is never run again (final status, immutable spec).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from coai_operator import constants
from coai_operator.backup import jobs
from coai_operator.backup.controller import (
    BACKUP_KIND,
    TERMINAL,
    ProblemError,
    app_version,
    job_state,
    resolve_destination,
)
from coai_operator.backup.destination import INCLUDE, restore_args
from coai_operator.conditions import now_rfc3339, set_condition
from coai_operator.instance import upgrade_state as us
from coai_operator.instance.spec import Names
from coai_operator.kube import Kube

Obj = dict[str, Any]
Events = list[tuple[str, str, str]]
READY_DEADLINE_MINUTES = 15
STEPS = ("Target", "Maintenance", "Restore", "Version", "Release", "Ready")


def _source(kube: Kube, restore: Obj) -> tuple[jobs.Destination, str, Obj | None, str]:
    """(destination, folder or file base, encryption key ref, app version known up front)."""
    spec, ns = restore["spec"], restore["metadata"]["namespace"]
    if spec.get("backupRef"):
        name = spec["backupRef"]["name"]
        backup = kube.get(constants.API_VERSION, BACKUP_KIND, ns, name)
        if backup is None or (backup.get("status") or {}).get("phase") != "Completed":
            raise ProblemError("BackupNotReady", f"CoaiBackup {name} does not exist or is not Completed")
        dest = resolve_destination(kube, ns, backup["spec"])
        return dest, jobs.folder(backup), (backup["spec"].get("encryption") or {}).get("keySecretRef"), \
            str(backup["status"].get("appVersion") or "")
    src = spec.get("source") or spec.get("import") or {}
    dest = resolve_destination(kube, ns, {"locationRef": src["locationRef"]})
    return dest, str(src.get("backupName") or ""), (src.get("encryption") or {}).get("keySecretRef"), ""


def _target_name(restore: Obj) -> str:
    return str(restore["spec"]["target"]["instanceRef"]["name"])


def _claims(instance: Obj, restore: Obj) -> list[str]:
    names = Names(instance["metadata"]["name"])
    spec = restore["spec"]
    include = spec.get("include") or ["database", "storage", "config"]
    if spec.get("import"):
        include = ["storage"] if spec["import"].get("storageTar") else []
    return [c for kind, c in (("storage", names.storage_pvc), ("config", names.config_pvc)) if kind in include]


def _restore_args(restore: Obj, dest: jobs.Destination, folder: str, instance: Obj) -> tuple[list[str], tuple]:
    spec = restore["spec"]
    target_version = app_version(instance)  # what it runs, not what Git may already ask for
    if spec.get("import"):
        imp = spec["import"]
        args = ["import"]
        if imp.get("dump"):
            args += ["--dump", dest.url(imp["dump"])]
        if imp.get("storageTar"):
            args += ["--tar", dest.url(imp["storageTar"]), "--storage", jobs.STORAGE_MOUNT]
        return args, ("storage",) if imp.get("storageTar") else ()
    return restore_args(dest.url(folder), spec.get("include") or INCLUDE, target_version, bool(spec.get("force")))


def env_drift(env: Obj) -> str:
    """What differs between the backup's env copies and the instance now, by key NAME. Not written
    back: the ConfigMap is rendered from the instance's spec (Git), the Secret is the user's."""
    parts = []
    for kind, what in (("configMap", "spec.config (the env ConfigMap)"), ("secret", "Secret")):
        d = env.get(kind) or {}
        keys = [*d.get("differ", []), *(f"-{k}" for k in d.get("missing", [])), *(f"+{k}" for k in d.get("added", []))]
        if keys:
            parts.append(f"{what} {d.get('name')}: {', '.join(keys[:20])}")
    if not parts:
        return ""
    return ("the instance's env differs from the backup's copies (" + "; ".join(parts) + "); restore them from "
            "Git, or with `coai-operator engine env-export` and the backup's key")


def _deployment_scaled_down(kube: Kube, ns: str, name: str) -> bool:
    dep = kube.get("apps/v1", "Deployment", ns, name)
    return dep is None or int((dep.get("status") or {}).get("replicas") or 0) == 0


def reconcile_restore(kube: Kube, restore: Obj) -> tuple[Obj, Events]:
    meta, spec = restore["metadata"], restore["spec"]
    ns = meta["namespace"]
    status: Obj = dict(restore.get("status") or {})
    if status.get("phase") in TERMINAL:
        return status, []
    events: Events = []
    step = status.get("step") or "Target"
    name = _target_name(restore)
    holder = f"restore/{meta['name']}"  # who holds status.upgrade's maintenance and version
    status.setdefault("startTime", now_rfc3339())
    status.update(phase="Running", instance=name)

    def fail(reason: str, message: str) -> tuple[Obj, Events]:
        if step in ("Maintenance", "Restore", "Version") and status.get("maintenanceTaken"):
            status.update(step="Release", failedReason=reason, message=message)  # put maintenance back first
            return status, [("Warning", reason, message)]
        status.update(phase="Failed", message=message, completionTime=now_rfc3339())
        status["conditions"] = set_condition(status.get("conditions"), "Complete", "False", reason, message)
        return status, [*events, ("Warning", reason, message)]

    try:
        dest, folder, key_ref, backup_version = _source(kube, restore)
    except ProblemError as problem:
        return fail(problem.reason, problem.message)
    status.update(location=dest.url(folder), where=dest.where(folder))
    instance = kube.get(constants.API_VERSION, constants.INSTANCE_KIND, ns, name)
    if step == "Target":
        if instance is None:
            status["message"] = f"waiting for CoaiInstance {name} (apply it with this CoaiRestore)"
            return status, events
        missing = [claim for claim in _claims(instance, restore)
                   if kube.get("v1", "PersistentVolumeClaim", ns, claim) is None]
        if missing:
            status["message"] = f"waiting for the volumes of {name}: {', '.join(missing)}"
            return status, events
        status["step"] = "Maintenance"
        return status, events
    if instance is None:
        return fail("InstanceNotFound", f"CoaiInstance {name} disappeared during the restore")
    if step == "Maintenance":
        # Held through the instance's status.upgrade, like a migration: Git owns the spec.
        hold = us.hold_maintenance_patch(instance, holder, f"restore {meta['name']} running")
        if hold is not None:
            us.write(kube, instance, hold)
            status["maintenanceTaken"] = True
            events.append(("Normal", "MaintenanceOn", f"CoaiInstance {name} in maintenance for the restore"))
            return status, events
        status["maintenanceTaken"] = True
        if not _deployment_scaled_down(kube, ns, name):
            status["message"] = f"waiting for {name} to scale down"
            return status, events
        status["step"] = "Restore"
        return status, events
    if step == "Restore":
        job = jobs.job_name(restore, "restore")
        state, result = job_state(kube, ns, job)
        if state == "missing":
            args, trees = _restore_args(restore, dest, folder, instance)
            kube.create(jobs.engine_job(restore, "restore", args, dest, instance=instance, trees=trees,
                                        key_ref=key_ref))
            status.update(job=job, message=f"Job {job} restoring from {status['where']}")
            return status, [("Normal", "RestoreStarted", status["message"])]
        if state == "running":
            return status, events
        if state == "failed":
            return fail(str(result.get("reason") or "RestoreFailed"), str(result.get("error") or f"Job {job} failed"))
        total = sum(int(a.get("bytes") or 0) for a in result.get("artifacts") or [])
        drift = env_drift(result.get("env") or {})
        status["conditions"] = set_condition(status.get("conditions"), "EnvDiffers", "True" if drift else "False",
                                             "EnvDiffers" if drift else "EnvMatches", drift or "the env ConfigMap "
                                             "and Secret hold what the backup recorded")
        if drift:
            events.append(("Warning", "EnvDiffers", drift))
        status.update(step="Version", artifacts=result.get("artifacts") or [], rowCounts=result.get("rowCounts") or {},
                      appVersion=str(result.get("appVersion") or backup_version), size=jobs.human_bytes(total))
        return status, [("Normal", "Restored", f"database and files restored from {status['where']}")]
    if step == "Version":
        version = status.get("appVersion")
        patch = us.deployed_version_patch(instance, holder, str(version)) if version and not spec.get("import") \
            else None
        if patch is not None:
            instance = us.write(kube, instance, patch)
            events.append(("Normal", "VersionSet", f"CoaiInstance {name} runs {version}, the backup's version"))
        status["step"] = "Release"
        return status, events
    if step == "Release":
        us.write(kube, instance, us.release_maintenance_patch(instance, holder))
        if status.get("failedReason"):
            step = "Done"
            return fail(status["failedReason"], status.get("message") or "restore failed")
        status["step"] = "Ready"
        return status, [("Normal", "MaintenanceOff", f"CoaiInstance {name} maintenance back as before")]
    phase = (instance.get("status") or {}).get("phase")
    if phase in ("Running", "Ready") or ((instance.get("spec") or {}).get("maintenance") or {}).get("enabled"):
        message = f"restored {name} from {status['where']}; the instance is {phase}"
        status.update(phase="Completed", step="Done", message=message, completionTime=now_rfc3339())
        status["conditions"] = set_condition(status.get("conditions"), "Complete", "True", "Restored", message)
        return status, [("Normal", "RestoreCompleted", message)]
    status.setdefault("readyWaitStart", now_rfc3339())
    if _minutes_since(status["readyWaitStart"]) > READY_DEADLINE_MINUTES:
        return fail("NotReady", f"data restored, but CoaiInstance {name} was not Running within "
                                f"{READY_DEADLINE_MINUTES} minutes (now {phase}): see its status")
    status["message"] = f"waiting for CoaiInstance {name} to be Running (now {phase})"
    return status, events


def _minutes_since(stamp: str) -> float:
    started = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - started).total_seconds() / 60
