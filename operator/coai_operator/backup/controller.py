"""CoaiBackup and CoaiBackupLocation reconcile: from the API objects to a status patch. No kopf here.

A CoaiBackup runs exactly once: Pending → (Job created) Running → Completed | Failed. Once
finished its status is final (the CRD refuses a phase change) and the controller never looks at
it again, so a finished backup is never re-run. Deleting one runs a deletion Job first (manifest
first, then the artifacts), unless spec.retainData.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coai_operator import constants
from coai_operator.backup import growth as growth_mod
from coai_operator.backup import jobs
from coai_operator.backup.jobs import Destination
from coai_operator.conditions import now_rfc3339, set_condition
from coai_operator.instance.upgrade import deployed_version
from coai_operator.kube import Kube, KubeError
from coai_operator.kube.jobpods import POD_START_SECONDS, exited_cleanly, job_result, pod_not_started, seconds_since
from coai_operator.migration import testfaults

Obj = dict[str, Any]
LOCATION_KIND = "CoaiBackupLocation"
BACKUP_KIND = "CoaiBackup"
SCHEDULE_KIND = "CoaiBackupSchedule"
RESTORE_KIND = "CoaiRestore"
TERMINAL = ("Completed", "Failed")
DELETE_ATTEMPT = f"{constants.GROUP}/delete-attempt"
MAX_DELETE_ATTEMPTS = 5
KEPT = "kept"
GROW_WAIT_SECONDS = 600  # how long a grown PVC may take to report its new size


@dataclass
class ProblemError(Exception):
    reason: str
    message: str


def resolve_destination(kube: Kube, namespace: str, spec: Mapping[str, Any]) -> Destination:
    """spec.destination, else spec.locationRef, else the namespace's default CoaiBackupLocation."""
    inline = spec.get("destination") or {}
    if inline:
        kind = "s3" if inline.get("s3") else "pvc"
        return Destination(kind, inline[kind])
    ref = (spec.get("locationRef") or {}).get("name")
    if ref:
        loc = kube.get(constants.API_VERSION, LOCATION_KIND, namespace, ref)
        if loc is None:
            raise ProblemError("LocationNotFound", f"CoaiBackupLocation {ref} does not exist in {namespace}")
    else:
        loc = default_location(kube, namespace)
        if loc is None:
            raise ProblemError("NoLocation", "set spec.locationRef or spec.destination, or mark a CoaiBackupLocation "
                                        "of this namespace with spec.default: true")
    lspec = loc.get("spec") or {}
    kind = "s3" if lspec.get("s3") else "pvc"
    return Destination(kind, lspec[kind], location=loc["metadata"]["name"])


def default_location(kube: Kube, namespace: str) -> Obj | None:
    """The namespace's default CoaiBackupLocation (spec.default: true; the first by name if several)."""
    defaults = [x for x in kube.list(constants.API_VERSION, LOCATION_KIND, namespace)
                if (x.get("spec") or {}).get("default")]
    return sorted(defaults, key=lambda x: x["metadata"]["name"])[0] if defaults else None


def app_version(instance: Mapping[str, Any]) -> str:
    """The version the instance runs (status.upgrade's deployed version), else the one Git asks for:
    with GitOps, spec.version may already name the target while the data is still at the old one."""
    return str(deployed_version(instance.get("status") or {}) or (instance.get("spec") or {}).get("version") or "")


def ensure_pvc(kube: Kube, namespace: str, dest: Destination, instance: str) -> bool:
    """Create a destination PVC that does not exist yet (not owned: backups outlive everything)."""
    if dest.kind != "pvc" or kube.get("v1", "PersistentVolumeClaim", namespace, dest.spec["name"]) is not None:
        return False
    size = dest.spec.get("size") or "20Gi"
    body: Obj = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if dest.spec.get("storageClassName"):
        body["storageClassName"] = dest.spec["storageClassName"]
    kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": dest.spec["name"], "namespace": namespace,
                              "labels": constants.labels(instance, "backup")}, "spec": body})
    return True


def job_state(kube: Kube, namespace: str, name: str) -> tuple[str, Obj]:
    """("missing" | "running" | "complete" | "failed", the engine's result or {})."""
    job = kube.get("batch/v1", "Job", namespace, name)
    if job is None:
        return "missing", {}
    done = {c.get("type") for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
    exited = None if done else exited_cleanly(kube, job)
    if not done & {"Complete", "Failed"} and exited is None:
        return "running", {}
    result = job_result(kube, namespace, name, exited) or {}
    if ("Complete" in done or exited is not None) and result.get("ok") is not False:
        return "complete", result
    return "failed", result


def pod_start_seconds(spec: Mapping[str, Any]) -> int:
    """How long the Job's pod may take to start (spec.jobTemplate.podStartSeconds; a migration passes
    its spec.deadlines.podStart)."""
    return int((spec.get("jobTemplate") or {}).get("podStartSeconds") or POD_START_SECONDS)


def _fail(status: Obj, reason: str, message: str) -> Obj:
    status.update(phase="Failed", message=message, completionTime=now_rfc3339())
    status["conditions"] = set_condition(status.get("conditions"), "Complete", "False", reason, message)
    return status


def reconcile_backup(kube: Kube, backup: Obj) -> tuple[Obj, list[tuple[str, str, str]]]:
    """The new status and events (type, reason, message) for one CoaiBackup."""
    meta, spec = backup["metadata"], backup.get("spec") or {}
    ns = meta["namespace"]
    status: Obj = dict(backup.get("status") or {})
    if status.get("phase") in TERMINAL:
        return status, []
    events: list[tuple[str, str, str]] = []
    instance_name = spec["instanceRef"]["name"]
    instance = kube.get(constants.API_VERSION, constants.INSTANCE_KIND, ns, instance_name)
    if instance is None:
        return _fail(status, "InstanceNotFound", f"CoaiInstance {instance_name} does not exist in {ns}"), \
            [("Warning", "InstanceNotFound", f"CoaiInstance {instance_name} does not exist")]
    try:
        dest = resolve_destination(kube, ns, spec)
    except ProblemError as problem:
        status.update(phase="Pending", message=problem.message)
        status["conditions"] = set_condition(status.get("conditions"), "Complete", "False", problem.reason,
                                             problem.message)
        return status, []
    growth = status.get("volumeGrowth") or {}
    action = "backup-grown" if growth else "backup"  # after the PVC grew, the backup runs in a new Job
    name = jobs.job_name(backup, action)
    state, result = job_state(kube, ns, name)
    key_ref = (spec.get("encryption") or {}).get("keySecretRef")
    version = app_version(instance)
    # set with the Job, and again on every later tick: a status write lost to a conflict is redone
    started = {"job": name, "location": dest.url(jobs.folder(backup)), "where": dest.where(jobs.folder(backup)),
               "encrypted": bool(key_ref), "startTime": status.get("startTime") or now_rfc3339(),
               "appVersion": status.get("appVersion") or version}
    if state == "missing":
        if status.get("phase") == "Running" and status.get("job") == name:  # vanished (by hand): never re-run
            return _fail(status, "JobLost", f"Job {name} disappeared before it finished"), []
        if growth:
            if not growth_mod.grown(kube.get("v1", "PersistentVolumeClaim", ns, growth["pvc"]), growth["to"]):
                if seconds_since(growth["requestedAt"]) > GROW_WAIT_SECONDS:
                    return _fail(status, "InsufficientSpace", f"{growth['refusal']}; PVC {growth['pvc']} was asked "
                                 f"to grow from {growth['from']} to {growth['to']} but did not within "
                                 f"{GROW_WAIT_SECONDS}s"), []
                status["message"] = f"waiting for PVC {growth['pvc']} to grow from {growth['from']} to {growth['to']}"
                return status, []
            started["startTime"] = now_rfc3339()  # the new Job's (its pod-start deadline counts from here)
        if ensure_pvc(kube, ns, dest, instance_name):
            events.append(("Normal", "BackupVolumeCreated", f"created PVC {dest.spec['name']} for backups"))
        args, trees = jobs.backup_args(backup, dest)
        args += ["--app-version", version] if version else []
        job = jobs.engine_job(backup, action, args, dest, instance=instance, trees=trees, read_only_trees=True,
                              key_ref=key_ref)
        kube.create(testfaults.apply_fault(job, backup, "Backup"))
        status.update(phase="Running", message=f"Job {name} running", **started)
        status["conditions"] = set_condition(status.get("conditions"), "Complete", "False", "Running",
                                             f"Job {name} running")
        events.append(("Normal", "BackupStarted", f"Job {name} backs up {instance_name} to {status['where']}"))
        return status, events
    status.update(started)
    if state == "running":
        status["phase"] = "Running"
        cause = pod_not_started(kube, ns, name, seconds_since(status["startTime"]), pod_start_seconds(spec))
        if cause:  # nothing runs: the Job goes, so it cannot start later, and the backup fails with the cause
            kube.delete("batch/v1", "Job", ns, name)
            message = f"Job {name} did not start within {pod_start_seconds(spec)}s: {cause}"
            return _fail(status, "PodNotStarted", message), [("Warning", "PodNotStarted", message)]
        return status, []
    if state == "failed":
        reason = str(result.get("reason") or "BackupFailed")
        message = str(result.get("error") or f"Job {name} failed")
        if reason == "InsufficientSpace" and dest.kind == "pvc" and not growth:  # refused before writing
            grew = growth_mod.grow(kube, ns, dest.spec["name"], result)
            if grew.size:
                text = f"{message}; growing PVC {grew.pvc} from {grew.current} to {grew.size} (its storage class " \
                       "allows it), then the backup runs again"
                status.update(phase="Running", message=text, volumeGrowth={
                    "pvc": grew.pvc, "from": grew.current, "to": grew.size, "requestedAt": now_rfc3339(),
                    "refusal": message[:500]})
                status["conditions"] = set_condition(status.get("conditions"), "Complete", "False", "GrowingVolume",
                                                     text)
                return status, [("Normal", "VolumeGrowing", text)]
            message = f"{message} (the PVC was not grown: {grew.why_not})"
        return _fail(status, reason, message), [("Warning", reason, message)]
    artifacts = [{k: a.get(k) for k in ("name", "bytes", "sha256")} for a in result.get("artifacts") or []]
    total = sum(int(a.get("bytes") or 0) for a in artifacts)
    verify = result.get("verify") or {}
    status.update(phase="Completed", completionTime=now_rfc3339(), artifacts=artifacts, bytes=total,
                  size=jobs.human_bytes(total), rowCounts=result.get("rowCounts") or {},
                  schemaVersion=str(result.get("schemaVersion") or ""), verified=bool(verify.get("verified")),
                  encrypted=bool(result.get("encrypted")), skippedEntries=result.get("skippedEntries") or [],
                  message=f"backup complete: {len(artifacts)} artifacts, {jobs.human_bytes(total)}"
                          + (", verified by a scratch restore" if verify.get("verified") else ""))
    status["conditions"] = set_condition(status.get("conditions"), "Complete", "True",
                                         "Verified" if verify.get("verified") else "Completed", status["message"])
    if status["skippedEntries"]:
        status["conditions"] = set_condition(
            status["conditions"], "EntriesSkipped", "True", "UnsupportedEntries",
            f"{len(status['skippedEntries'])} entries (sockets, FIFOs, devices, links leaving the volume) "
            "could not be backed up: see status.skippedEntries")
    return status, [("Normal", "BackupCompleted", status["message"])]


def delete_backup_data(kube: Kube, backup: Obj) -> str:
    """Run (or look at) the deletion Job; returns "done", "running", KEPT (the namespace is being
    deleted: no Job can run, the data stays) or an error message."""
    spec, status = backup.get("spec") or {}, backup.get("status") or {}
    if spec.get("retainData") or not status.get("location"):
        return "done"
    ns = backup["metadata"]["namespace"]
    try:
        dest = resolve_destination(kube, ns, spec)
    except ProblemError as problem:
        return f"cannot delete the stored data: {problem.message}"
    # one Job per attempt (the operator may not delete Jobs): attempt n runs as "<name>-delete<n>-..."
    attempt = int((backup.get("metadata", {}).get("annotations") or {}).get(DELETE_ATTEMPT, "0"))
    action = f"delete{attempt}"
    name = jobs.job_name(backup, action)
    state, result = job_state(kube, ns, name)
    if state == "missing":
        try:
            kube.create(jobs.engine_job(backup, action, ["catalog", "--dir", dest.url(jobs.folder(backup)),
                                                         "--delete"], dest, database=False))
        except KubeError as exc:
            if exc.status == 409:  # created by an earlier call whose answer was lost
                return "running"
            if exc.status == 403 and "terminat" in exc.message:
                # the namespace is going away and can run no Job: keep the data rather than block it
                return KEPT
            raise
        return "running"
    if state == "running":
        return "running"
    if state == "failed":
        if attempt < MAX_DELETE_ATTEMPTS:  # the next call starts the next attempt
            kube.patch(constants.API_VERSION, BACKUP_KIND, ns, backup["metadata"]["name"],
                       {"metadata": {"annotations": {DELETE_ATTEMPT: str(attempt + 1)}}})
        return f"deleting {status['location']} failed: {result.get('error') or 'see the Job log'}"
    return "done"


def check_location(kube: Kube, location: Obj) -> Obj:
    """Reachability of a location, checked from the operator (S3: the bucket exists; PVC: it exists)."""
    spec, ns = location.get("spec") or {}, location["metadata"]["namespace"]
    kind = "s3" if spec.get("s3") else "pvc"
    dest = Destination(kind, spec.get(kind) or {}, location=location["metadata"]["name"])
    status: Obj = {"where": dest.where("").rstrip("/"), "lastCheckTime": now_rfc3339()}
    try:
        if kind == "s3":
            from coai_operator.backup.s3check import bucket_reachable

            bucket_reachable(kube, ns, dest.spec)
            message = f"bucket {dest.spec['bucket']} reachable at {dest.spec['endpoint']}"
        else:
            pvc = kube.get("v1", "PersistentVolumeClaim", ns, dest.spec["name"])
            message = (f"PVC {dest.spec['name']} is {((pvc or {}).get('status') or {}).get('phase', 'Pending')}"
                       if pvc else f"PVC {dest.spec['name']} will be created by the first backup")
        status.update(phase="Available", message=message)
        status["conditions"] = set_condition((location.get("status") or {}).get("conditions"), "Reachable", "True",
                                             "Reachable", message)
    except ProblemError as problem:
        status.update(phase="Unavailable", message=problem.message)
        status["conditions"] = set_condition((location.get("status") or {}).get("conditions"), "Reachable", "False",
                                             problem.reason, problem.message)
    return status
