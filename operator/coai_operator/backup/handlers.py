"""kopf handlers for the backup kinds (registered by importing this module). Thin: the
controller, schedule and restore modules compute the status; here it is written and events posted.

Finished CoaiBackups and CoaiRestores cost nothing: a CoaiBackup's daemon runs only while it is
running (kopf's filter), and the restore timer returns before any API call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import kopf

from coai_operator import constants
from coai_operator.backup import controller, restore, schedule
from coai_operator.backup.jobs import LABEL_OWNER
from coai_operator.kube import Kube, KubeError
from coai_operator.migration.wakeup import BACKUP_WAKEUPS, sleep_or_wake

G, V = constants.GROUP, constants.VERSION
BACKUP_TICK_SECONDS = 2.0  # the fallback look; the watches wake the daemon sooner
Reconcile = Callable[[Kube, dict], tuple[dict, list[tuple[str, str, str]]]]


def _write_status(kind: str, body: kopf.Body, fn: Reconcile, logger: logging.Logger) -> None:
    kube = Kube()
    try:
        obj = kube.get(constants.API_VERSION, kind, body["metadata"]["namespace"], body["metadata"]["name"])
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        status, events = fn(kube, obj)
        old = obj.get("status") or {}
        patch = {k: status.get(k) for k in set(old) | set(status) if old.get(k) != status.get(k)}
        if patch:
            kube.patch(constants.API_VERSION, kind, obj["metadata"]["namespace"], obj["metadata"]["name"],
                       {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": patch},
                       subresource="status")
    except KubeError as exc:
        if exc.status == 409:
            return  # changed meanwhile: the next tick starts from what the API has
        raise kopf.TemporaryError(f"API error: {exc.message}", delay=5) from exc
    for type_, reason, message in events:
        kopf.event(obj, type=type_, reason=reason, message=message)
        (logger.warning if type_ == "Warning" else logger.info)("%s: %s", reason, message)


def _running(body: kopf.Body) -> bool:
    return (body.get("status") or {}).get("phase") not in controller.TERMINAL


def _backup_running(body: kopf.Body, **_: Any) -> bool:
    return _running(body) and not (body.get("metadata") or {}).get("deletionTimestamp")


@kopf.daemon(G, V, "coaibackups", id="backup", when=_backup_running, cancellation_timeout=None)
async def backup_daemon(body: kopf.Body, stopped: kopf.DaemonStopped, logger: logging.Logger, **_: Any) -> None:
    """One per running CoaiBackup (kopf stops it once the phase is final): a tick every
    BACKUP_TICK_SECONDS, sooner when its Job or pod changes (BACKUP_WAKEUPS, woken by the Job and
    pod watches), so a migration's Backup step ends when the engine exits, not on the next tick."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    woken = BACKUP_WAKEUPS.register(namespace, name)
    try:
        while True:
            try:
                await asyncio.to_thread(_write_status, controller.BACKUP_KIND, body, controller.reconcile_backup,
                                        logger)
            except kopf.TemporaryError as exc:
                logger.warning("%s", exc)
            if await sleep_or_wake(stopped.wait, woken, BACKUP_TICK_SECONDS):
                return
    finally:
        BACKUP_WAKEUPS.forget(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_OWNER: kopf.PRESENT}, id="wake-backup")
async def backup_job_changed(body: kopf.Body, **_: Any) -> None:
    meta = body.get("metadata") or {}
    BACKUP_WAKEUPS.wake(meta.get("namespace"), (meta.get("labels") or {}).get(LABEL_OWNER))


@kopf.on.delete(G, V, "coaibackups", id="backup-data")
def backup_deleted(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    """Pruning (or a person) deleted the CoaiBackup: delete its stored data first."""
    outcome = controller.delete_backup_data(Kube(), dict(body))
    if outcome == "running":
        raise kopf.TemporaryError("deleting the stored backup data", delay=2)
    if outcome == controller.KEPT:
        where = (body.get("status") or {}).get("location")
        logger.warning("namespace %s is being deleted: the stored data of CoaiBackup %s stays at %s",
                       body["metadata"]["namespace"], body["metadata"]["name"], where)
        return
    if outcome != "done":
        kopf.event(body, type="Warning", reason="DataNotDeleted", message=outcome)
        raise kopf.TemporaryError(outcome, delay=30)
    logger.info("stored data of CoaiBackup %s deleted", body["metadata"]["name"])


@kopf.timer(G, V, "coaibackupschedules", interval=5.0, initial_delay=0, id="schedule")
def schedule_tick(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    _write_status(controller.SCHEDULE_KIND, body, schedule.reconcile_schedule, logger)


@kopf.timer(G, V, "coairestores", interval=2.0, initial_delay=0, id="restore")
def restore_tick(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    if _running(body):
        _write_status(controller.RESTORE_KIND, body, restore.reconcile_restore, logger)


@kopf.timer(G, V, "coaibackuplocations", interval=60.0, initial_delay=0, id="location")
def location_tick(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    _write_status(controller.LOCATION_KIND, body, lambda kube, obj: (controller.check_location(kube, obj), []),
                  logger)
