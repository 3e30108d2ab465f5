"""A migration's backups are CoaiBackups: one backup path (backup/controller.py runs every backup).

The Backup step creates the CoaiBackup `<migration>-pre-<5 hex of its uid>`, a child of the
migration (ownerReference: it goes when the migration goes; with spec.backup.retainData, the
default, its stored data stays), pinned (retention never prunes it), at spec.backup.locationRef,
else the PVC spec.backup.pvc.name, else the namespace's default CoaiBackupLocation, else the PVC
`<instance>-backup`. The step waits for it within its deadline (the backup's Job carries the same
activeDeadlineSeconds and the migration's podStart) and records it in status.backup. A Graceful
rollback's export is a second CoaiBackup, `<migration>-post-<hex>`. RollbackRestore reads the pre
backup back through the same destination and restore command line (backup/destination.py).
The name carries the uid: a migration re-created under the same name never finds its predecessor's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

from coai_operator import constants
from coai_operator.backup import controller
from coai_operator.backup.destination import BackupSource, Destination
from coai_operator.backup.jobs import folder
from coai_operator.conditions import now_rfc3339
from coai_operator.kube import KubeError
from coai_operator.kube.jobpods import POD_START_SECONDS
from coai_operator.migration import testfaults
from coai_operator.migration.context import Ctx
from coai_operator.migration.model import Obj, Outcome, StepName, StepOutcome
from coai_operator.migration.names import LABEL_MIGRATION, backup_pvc_name, owner_reference
from coai_operator.migration.status import seconds_since, step_record

PRE, POST = "pre", "post"
LOCATION_GRACE_SECONDS = float(os.environ.get("COAI_INSTANCE_GRACE_SECONDS", "60"))
DEFAULT_INCLUDE = ["database", "storage", "config"]


def backup_name(migration: Mapping[str, Any], kind: str = PRE) -> str:
    meta = migration["metadata"]
    suffix = hashlib.sha256(f"{meta['uid']}/{kind}".encode()).hexdigest()[:5]
    return f"{meta['name']}-{kind}-{suffix}"


def destination(kube: Any, migration: Mapping[str, Any]) -> Obj:
    """The CoaiBackup's `locationRef` or `destination`, fixed when the backup is created."""
    section = migration["spec"].get("backup") or {}
    if (section.get("locationRef") or {}).get("name"):
        return {"locationRef": {"name": section["locationRef"]["name"]}}
    pvc = section.get("pvc") or {}
    if not pvc.get("name"):
        default = controller.default_location(kube, migration["metadata"]["namespace"])
        if default is not None:
            return {"locationRef": {"name": default["metadata"]["name"]}}
    body: Obj = {"name": backup_pvc_name(migration), "size": pvc.get("size") or "20Gi"}
    if pvc.get("storageClassName"):
        body["storageClassName"] = pvc["storageClassName"]
    return {"destination": {"pvc": body}}


def desired(kube: Any, migration: Mapping[str, Any], kind: str, deadline: int) -> Obj:
    meta, spec = migration["metadata"], migration["spec"]
    section = spec.get("backup") or {}
    instance = spec["instanceRef"]["name"]
    pod_start = int((spec.get("deadlines") or {}).get("podStart") or POD_START_SECONDS)
    body: Obj = {
        "instanceRef": {"name": instance}, "include": list(section.get("include") or DEFAULT_INCLUDE),
        "verify": True, "pinned": kind == PRE, "retainData": bool(section.get("retainData", True)),
        "jobTemplate": {**(spec.get("jobTemplate") or {}), "activeDeadlineSeconds": int(deadline),
                        "podStartSeconds": pod_start},
        **destination(kube, migration),
    }
    if (section.get("encryption") or {}).get("keySecretRef"):
        body["encryption"] = {"keySecretRef": dict(section["encryption"]["keySecretRef"])}
    # the fault-matrix hook (inert unless COAI_TEST_FAULTS=1): the backup controller applies it to the Job
    fault = testfaults.fault_for(migration, StepName.BACKUP if kind == PRE else StepName.RB_EXPORT)
    annotations = {testfaults.ANNOTATION: f"Backup={fault}"} if fault else {}
    return {"apiVersion": constants.API_VERSION, "kind": controller.BACKUP_KIND,
            "metadata": {"name": backup_name(migration, kind), "namespace": meta["namespace"],
                         "labels": {**constants.labels(instance, "backup"), LABEL_MIGRATION: meta["name"],
                                    f"{constants.GROUP}/backup-of": kind},
                         "annotations": annotations, "ownerReferences": [owner_reference(migration)]},
            "spec": body}


def _deadline(ctx: Ctx, step: StepName) -> int:
    from coai_operator.migration.steps import STEPS, deadline_seconds  # steps -> this module

    return deadline_seconds(ctx.spec, STEPS[step])


def run(ctx: Ctx, kind: str) -> StepOutcome:
    """Create the CoaiBackup once, then report its state: Completed is done, Failed fails the step
    with the backup's reason (nothing was changed by a backup)."""
    step = StepName.BACKUP if kind == PRE else StepName.RB_EXPORT
    name = backup_name(ctx.migration, kind)
    backup = ctx.kube.get(constants.API_VERSION, controller.BACKUP_KIND, ctx.namespace, name)
    if backup is None:
        try:
            ctx.kube.create(desired(ctx.kube, ctx.migration, kind, _deadline(ctx, step)))
        except KubeError as exc:
            if exc.status != 409:
                return StepOutcome(Outcome.FAILED, f"cannot create CoaiBackup {name}: {exc.message}", changed=False)
        ctx.event("BackupCreated", f"{step}: created CoaiBackup {name}")
        return StepOutcome(Outcome.RUNNING, f"CoaiBackup {name} created")
    status = backup.get("status") or {}
    job = status.get("job")
    if status.get("phase") == "Completed":
        data = {"name": name, "location": status.get("where") or status.get("location"),
                "artifacts": status.get("artifacts") or [], "rowCounts": status.get("rowCounts") or {},
                "completedAt": status.get("completionTime") or now_rfc3339()}
        total = sum(int(a.get("bytes") or 0) for a in data["artifacts"])
        message = f"CoaiBackup {name} {'verified' if status.get('verified') else 'complete'} at {data['location']}: " \
                  f"{len(data['artifacts'])} artifacts, {total} bytes"
        return StepOutcome(Outcome.DONE, message, job=job, data=data)
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == "Complete"), {})
    if status.get("phase") == "Failed":
        return StepOutcome(Outcome.FAILED, f"CoaiBackup {name} failed: {status.get('message') or 'see its status'}",
                           job=job, reason=cond.get("reason") or f"{step}Failed", changed=False)
    record = step_record(ctx.status, step) or {}
    if cond.get("reason") in ("LocationNotFound", "NoLocation") and record.get("startedAt") and \
            seconds_since(record["startedAt"]) > LOCATION_GRACE_SECONDS:
        # A location applied in the same sync has had its chance; the backup cannot start without one.
        return StepOutcome(Outcome.FAILED, f"CoaiBackup {name}: {status.get('message')}", reason=cond["reason"],
                           changed=False)
    return StepOutcome(Outcome.RUNNING, f"CoaiBackup {name} {status.get('phase') or 'Pending'}: "
                                        f"{status.get('message') or 'waiting for the backup controller'}", job=job)


def whereabouts(status: Mapping[str, Any]) -> str:
    """Where a person finds the backup, for the messages of a migration that stops."""
    backup = status.get("backup") or {}
    if not backup:
        return "No backup was taken"
    return f"The backup is CoaiBackup {backup.get('name')} at {backup.get('location')}"


def backup_step(ctx: Ctx) -> StepOutcome:
    return run(ctx, PRE)


def export_step(ctx: Ctx) -> StepOutcome:
    return run(ctx, POST)


class BackupGone(Exception):  # noqa: N818  (a step failure with a message)
    """The CoaiBackup a rollback restores from is missing or unreadable."""


def restore_source(kube: Any, migration: Mapping[str, Any]) -> BackupSource:
    """The pre-migration backup, as the restore Job reads it (destination, folder, key)."""
    ns, name = migration["metadata"]["namespace"], backup_name(migration)
    backup = kube.get(constants.API_VERSION, controller.BACKUP_KIND, ns, name)
    where = ((migration.get("status") or {}).get("backup") or {}).get("location") or "its location"
    if backup is None or (backup.get("status") or {}).get("phase") != "Completed":
        raise BackupGone(f"CoaiBackup {name} no longer exists or is not Completed; the stored data may still be at "
                         f"{where} (restore it with a CoaiRestore or `coai-operator engine restore`)")
    try:
        dest = controller.resolve_destination(kube, ns, backup["spec"])
    except controller.ProblemError as problem:
        raise BackupGone(f"CoaiBackup {name}: {problem.message}") from problem
    return BackupSource(dest, folder(backup), (backup["spec"].get("encryption") or {}).get("keySecretRef"), name)


def default_source(migration: Mapping[str, Any]) -> BackupSource:
    """Where the pre backup is when nothing else is known (pure builds): the default backup PVC."""
    return BackupSource(Destination("pvc", {"name": backup_pvc_name(migration)}),
                        f"{migration['metadata']['namespace']}/{backup_name(migration)}", None, backup_name(migration))
