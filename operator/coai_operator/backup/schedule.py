"""CoaiBackupSchedule reconcile: create the CoaiBackup that is due, then apply retention.

Backups of a schedule carry the label coai.dev/schedule=<name> and no ownerReference (deleting
a schedule keeps its backups, as Velero does). At most one backup of a schedule runs at a time;
missed runs while the operator was down produce one backup, not a burst. Pruning deletes the
CoaiBackup; its finalizer deletes the stored data first (controller.delete_backup_data).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from coai_operator import constants
from coai_operator.backup import jobs
from coai_operator.backup.controller import BACKUP_KIND, TERMINAL
from coai_operator.backup.cron import Cron, CronError
from coai_operator.backup.retention import Candidate, Policy, plan
from coai_operator.conditions import set_condition
from coai_operator.kube import Kube, KubeError

Obj = dict[str, Any]


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def backup_for(schedule: Obj, at: datetime) -> Obj:
    meta, spec = schedule["metadata"], schedule["spec"]
    template = {k: v for k, v in (spec.get("template") or {}).items()}
    return {
        "apiVersion": constants.API_VERSION, "kind": BACKUP_KIND,
        "metadata": {"name": f"{meta['name'][:40]}-{at.strftime('%Y%m%d%H%M')}", "namespace": meta["namespace"],
                     "labels": {**constants.labels(spec["instanceRef"]["name"], "backup"),
                                jobs.LABEL_SCHEDULE: meta["name"]}},
        "spec": {"instanceRef": {"name": spec["instanceRef"]["name"]}, **template},
    }


def candidates(backups: list[Obj]) -> list[Candidate]:
    out = []
    for b in backups:
        status = b.get("status") or {}
        if status.get("phase") not in TERMINAL or b["metadata"].get("deletionTimestamp"):
            continue
        created = _parse_time(status.get("startTime")) or _parse_time(b["metadata"]["creationTimestamp"])
        assert created is not None
        out.append(Candidate(b["metadata"]["name"], created, status.get("phase") == "Completed",
                             bool((b.get("spec") or {}).get("pinned"))))
    return out


Events = list[tuple[str, str, str]]


def reconcile_schedule(kube: Kube, schedule: Obj, now: datetime | None = None) -> tuple[Obj, Events]:
    now = now or datetime.now(UTC)
    meta, spec = schedule["metadata"], schedule["spec"]
    ns = meta["namespace"]
    status: Obj = dict(schedule.get("status") or {})
    events: list[tuple[str, str, str]] = []
    try:
        cron = Cron.parse(spec["schedule"], spec.get("timeZone") or "UTC")
    except CronError as exc:
        status["message"] = f"invalid schedule: {exc}"
        status["conditions"] = set_condition(status.get("conditions"), "Scheduled", "False", "InvalidSchedule",
                                             status["message"])
        return status, events
    backups = kube.list(constants.API_VERSION, BACKUP_KIND, ns, label_selector=f"{jobs.LABEL_SCHEDULE}={meta['name']}")
    active = sorted(b["metadata"]["name"] for b in backups if (b.get("status") or {}).get("phase") not in TERMINAL
                    and not b["metadata"].get("deletionTimestamp"))
    last = _parse_time(status.get("lastScheduleTime"))
    created = _parse_time(meta["creationTimestamp"]) or now
    due = created if last is None and spec.get("runImmediately") else cron.next_after(last or created)
    if due <= now and not spec.get("suspend") and not active:
        # the latest missed slot, not every one of them
        slot = due
        while (following := cron.next_after(slot)) <= now:
            slot = following
        body = backup_for(schedule, slot)
        try:
            kube.create(body)
            events.append(("Normal", "BackupCreated", f"created CoaiBackup {body['metadata']['name']}"))
        except KubeError as exc:
            if exc.status != 409:
                raise
        active.append(body["metadata"]["name"])
        status["lastScheduleTime"] = _fmt(slot)
        last = slot
    status["nextScheduleTime"] = _fmt(cron.next_after(max(last or created, now)))
    status["active"] = active
    finished = candidates(backups)
    good = sorted((c for c in finished if c.good), key=lambda c: c.created, reverse=True)
    if good:
        status["lastSuccessfulBackup"] = good[0].name
    keep, prune = plan(finished, Policy.from_spec(spec.get("retention")))
    for name in prune:
        if kube.delete(constants.API_VERSION, BACKUP_KIND, ns, name):
            events.append(("Normal", "BackupPruned", f"retention pruned CoaiBackup {name} (stored data deleted)"))
    status["kept"] = keep
    if prune:
        status["pruned"] = prune
    status["message"] = ("suspended" if spec.get("suspend") else f"next backup at {status['nextScheduleTime']}") + \
        f"; keeping {len(keep)} backups"
    suspended = bool(spec.get("suspend"))
    status["conditions"] = set_condition(status.get("conditions"), "Scheduled", "False" if suspended else "True",
                                         "Suspended" if suspended else "Scheduled", status["message"])
    return status, events
