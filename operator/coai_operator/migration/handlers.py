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
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    old_phase = (body.get("status") or {}).get("phase")
    try:
        events, _ = machine.tick(kube, namespace, name)
    except KubeError as exc:
        raise kopf.TemporaryError(f"API error: {exc.message}", delay=5) from exc
    migration = kube.get(constants.API_VERSION, constants.MIGRATION_KIND, namespace, name) or dict(body)
    phase = (migration.get("status") or {}).get("phase")
    if phase in planner.TERMINAL_PHASES and old_phase not in planner.TERMINAL_PHASES:
        # The lock is released: a status change does not wake the instance controller (kopf reacts to
        # spec and metadata), so tell it now, or its phase would say Migrating until the drift check.
        reconcile_named(namespace, migration["spec"]["instanceRef"]["name"], f"CoaiMigration {name} {phase}",
                        coalesce=True)
    for type_, reason, message in events:
        kopf.event(migration, type=type_, reason=reason, message=message)
        log_fn = logger.warning if type_ == "Warning" else logger.info
        log_fn("%s: %s", reason, message)
    logger.debug("migration tick: %s", kube.stats)
