"""CoaiMigration handlers (registered by importing this module). Thin: the machine does the work.

One kopf daemon per migration that still has work (filter `needs_work`): it calls `machine.tick`
and sleeps for as long as the machine asks. Why a daemon and not a timer: a timer logs "Timer
succeeded" on every tick, and a timer or daemon that always matches makes kopf keep a finalizer on
every migration, so deleting even a finished one waits for the operator. With the filter, kopf
stops the daemon and drops its finalizer as soon as the migration is finished; a requested rollback
makes it match (and run) again.

Deleting a running migration cancels it: the operator finishes the step that is running, rolls
back what was changed, and only then lets the object go (the `on.delete` handler, filtered the same
way, holds the deletion until then, also across operator restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from coai_operator import constants
from coai_operator.backup.jobs import LABEL_OWNER
from coai_operator.instance.index import CACHE, CHILDREN, HANDOFF
from coai_operator.instance.reconcile import owner_of, reconcile_named
from coai_operator.kube import Kube, KubeError
from coai_operator.kube.informer import Obj
from coai_operator.kube.jobpods import POD_EXITS
from coai_operator.migration import machine, planner
from coai_operator.migration.names import LABEL_MIGRATION
from coai_operator.migration.wakeup import BACKUP_WAKEUPS, WAKEUPS, sleep_or_wake

MIN_DELAY = 0.5  # never spin, whatever the machine says
IDLE_SECONDS = 60.0  # finished: the filter stops the daemon long before this
ERROR_DELAY = 5.0
RESOURCE = (constants.GROUP, constants.VERSION, constants.MIGRATION_PLURAL)


def needs_work(body: kopf.Body, **_: Any) -> bool:
    status = body.get("status") or {}
    if status.get("phase") not in planner.TERMINAL_PHASES:
        return True
    requested = ((body.get("spec") or {}).get("rollback") or {}).get("requested")
    rolled = any(s.get("name") in planner.ROLLBACK_STEPS for s in status.get("steps") or [])
    return bool(requested) and not rolled and status.get("phase") != "RolledBack" and \
        not (body.get("metadata") or {}).get("deletionTimestamp")


def next_wait(delay: float | None) -> float:
    """How long to sleep after a tick that asked for `delay` (None: the migration is finished)."""
    return max(MIN_DELAY, delay) if delay is not None else IDLE_SECONDS


async def drive(step: Callable[[], Awaitable[float | None]], wait: Callable[[float], Awaitable[Any]]) -> None:
    """Call `step` until `wait` says stop, sleeping as long as each step asks."""
    while True:
        if await wait(next_wait(await step())):
            return


def advance_once(namespace: str, name: str, logger: logging.Logger | logging.LoggerAdapter,
                 kube: Kube | None = None) -> float | None:
    """One tick: advance, post the Events of what changed, wake the instance when the lock is released."""
    kube = kube or Kube()
    try:
        before = kube.get(constants.API_VERSION, constants.MIGRATION_KIND, namespace, name)
        if before is None:
            return None
        events, delay = machine.tick(kube, namespace, name)
        after = kube.get(constants.API_VERSION, constants.MIGRATION_KIND, namespace, name) or before
    except KubeError as exc:
        logger.warning("API error, retrying in %.0fs: %s", ERROR_DELAY, exc.message)
        return ERROR_DELAY
    old_phase = (before.get("status") or {}).get("phase")
    phase = (after.get("status") or {}).get("phase")
    if phase in planner.TERMINAL_PHASES and old_phase not in planner.TERMINAL_PHASES:
        # The lock is released: a status change does not wake the instance controller (kopf reacts to
        # spec and metadata), so tell it now, or its phase would say Migrating until the drift check.
        reconcile_named(namespace, after["spec"]["instanceRef"]["name"], f"CoaiMigration {name} {phase}",
                        coalesce=True)
    for type_, reason, message in events:
        with contextlib.suppress(LookupError):  # no kopf context: not running inside the operator
            kopf.event(after, type=type_, reason=reason, message=message)
        (logger.warning if type_ == "Warning" else logger.info)("%s: %s", reason, message)
    if events:
        logger.debug("migration tick: %s", kube.stats)
    return delay


@kopf.daemon(*RESOURCE, id="migration", when=needs_work, cancellation_timeout=None)
async def migration_daemon(body: kopf.Body, stopped: kopf.DaemonStopped, logger: logging.Logger, **_: Any) -> None:
    # Async, so a waiting migration holds no thread of kopf's small executor; each tick runs in a
    # thread of its own (asyncio.to_thread copies the context kopf.event needs).
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    woken = WAKEUPS.register(namespace, name)
    try:
        await drive(lambda: asyncio.to_thread(advance_once, namespace, name, logger),
                    lambda seconds: sleep_or_wake(stopped.wait, woken, seconds))
    finally:
        WAKEUPS.forget(namespace, name)


# What a step waits for changes: look now, not at the next tick (migration/wakeup.py). On watches
# the operator runs anyway (Jobs, CoaiBackups: kopf, async, so never queued behind the reconciles
# in kopf's thread pool; the instances' Deployments: index.CHILDREN).
@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MIGRATION: kopf.PRESENT}, id="wake-migration")
async def job_changed(body: kopf.Body, **_: Any) -> None:
    WAKEUPS.wake_labelled(body)


@kopf.on.event(constants.GROUP, constants.VERSION, "coaibackups", labels={LABEL_MIGRATION: kopf.PRESENT},
               id="wake-migration")
async def backup_changed(body: kopf.Body, **_: Any) -> None:
    WAKEUPS.wake_labelled(body)


# The operator's Job pods: the handler's filter, and the same as a server-side selector (main.py).
JOB_POD_LABELS = {"job-name": kopf.PRESENT, constants.LABEL_MANAGED_BY: constants.MANAGED_BY}
JOB_POD_SELECTOR = ",".join(k if v is kopf.PRESENT else f"{k}={v}" for k, v in JOB_POD_LABELS.items())


@kopf.on.event("", "v1", "pods", labels=JOB_POD_LABELS, id="job-pod-exit")
async def job_pod_changed(body: kopf.Body, **_: Any) -> None:
    """An engine pod exited 0: its Job says so about a second later (kube/jobpods.exited_cleanly);
    record it and wake the migration, or the CoaiBackup, that waits on that Job now."""
    if POD_EXITS.note(body):
        meta = body.get("metadata") or {}
        WAKEUPS.wake_labelled(body)
        BACKUP_WAKEUPS.wake(meta.get("namespace"), (meta.get("labels") or {}).get(LABEL_OWNER))


def rollout_changed(type_: str, deployment: Obj) -> None:
    """An instance's Deployment changed (index.CHILDREN's watch): wake the migration that waits on
    its rollout. Runs on the informer's thread; the wake-ups live on kopf's event loop."""
    HANDOFF.to_loop(_wake_rollout, deployment)


def _wake_rollout(deployment: Obj) -> None:
    if not WAKEUPS.any_waiting():  # the usual case: no migration running, no cache read
        return
    namespace = str((deployment.get("metadata") or {}).get("namespace"))
    instance = CACHE.get(constants.INSTANCE_KIND, namespace, str(owner_of(deployment, "Deployment")))
    WAKEUPS.wake(namespace, ((instance or {}).get("status") or {}).get("activeMigration"))


CHILDREN.listen("Deployment", rollout_changed)


def _running(body: kopf.Body, **_: Any) -> bool:
    return (body.get("status") or {}).get("phase") not in planner.TERMINAL_PHASES


@kopf.on.delete(*RESOURCE, id="migration-deletion", when=_running)
def migration_deleted(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    """Hold the deletion of a running migration until it has rolled back (or finished)."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    delay = advance_once(namespace, name, logger)
    live = Kube().get(constants.API_VERSION, constants.MIGRATION_KIND, namespace, name)
    if live is not None and (live.get("status") or {}).get("phase") not in planner.TERMINAL_PHASES:
        raise kopf.TemporaryError("deletion waits for the rollback of this running migration",
                                  delay=max(MIN_DELAY, delay or MIN_DELAY))
