"""CoaiMigration handlers (registered by importing this module). Thin: the machine does the work."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from coai_operator import constants
from coai_operator.instance.reconcile import reconcile_named
from coai_operator.kube import Kube, KubeError
from coai_operator.migration import machine, planner

TICK_SECONDS = 1.0


def _needs_work(body: kopf.Body) -> bool:
    status = body.get("status") or {}
    if status.get("phase") not in planner.TERMINAL_PHASES:
        return True
    requested = ((body.get("spec") or {}).get("rollback") or {}).get("requested")
    rolled = any(s.get("name") in planner.ROLLBACK_STEPS for s in status.get("steps") or [])
    return bool(requested) and not rolled and status.get("phase") != "RolledBack"


@kopf.timer(constants.GROUP, constants.VERSION, constants.MIGRATION_PLURAL, interval=TICK_SECONDS,
            initial_delay=0, id="migration")
def migration_tick(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    """Advance one migration. Finished migrations cost nothing: no API call unless a rollback is requested."""
    if not _needs_work(body):
        return
    kube = Kube()
    try:
        # The watch may lag behind our own last status write: work from what the API has now.
        migration = kube.get(constants.API_VERSION, constants.MIGRATION_KIND, body["metadata"]["namespace"],
                             body["metadata"]["name"])
        if migration is None:
            return
        status, events, _ = machine.reconcile(kube, migration)
    except KubeError as exc:
        raise kopf.TemporaryError(f"API error: {exc.message}", delay=5) from exc
    old = {k: v for k, v in (migration.get("status") or {}).items() if k in machine.STATUS_KEYS}
    if status != old:
        patch = {k: status.get(k) for k in set(old) | set(status) if old.get(k) != status.get(k)}
        # resourceVersion: a concurrent writer (an older operator still shutting down) makes this a 409,
        # and the next tick starts again from what the API has.
        try:
            kube.patch(constants.API_VERSION, constants.MIGRATION_KIND, body["metadata"]["namespace"],
                       body["metadata"]["name"],
                       {"metadata": {"resourceVersion": migration["metadata"]["resourceVersion"]}, "status": patch},
                       subresource="status")
        except KubeError as exc:
            if exc.status != 409:
                raise kopf.TemporaryError(f"API error: {exc.message}", delay=5) from exc
            logger.info("status changed meanwhile; next tick continues from the stored state")
            return
    if status.get("phase") in planner.TERMINAL_PHASES and old.get("phase") not in planner.TERMINAL_PHASES:
        # The lock is released: a status change does not wake the instance controller (kopf reacts to
        # spec and metadata), so tell it now, or its phase would say Migrating until the drift check.
        reconcile_named(body["metadata"]["namespace"], migration["spec"]["instanceRef"]["name"],
                        f"CoaiMigration {body['metadata']['name']} {status['phase']}", coalesce=True)
    for type_, reason, message in events:
        kopf.event(migration, type=type_, reason=reason, message=message)
        log_fn = logger.warning if type_ == "Warning" else logger.info
        log_fn("%s: %s", reason, message)
    logger.debug("migration tick: %s", kube.stats)
