"""Planning a CoaiMigration: pure functions from (spec, instance, compatibility table) to the path,
the ordered steps and the rollback steps. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coai_operator.bundles import realline
from coai_operator.engine.errors import PlanError
from coai_operator.engine.versions import CompatTable, Version, plan_path

# Forward steps, in order. Each maps to the phase the migration reports while it runs.
PREFLIGHT = "Preflight"
BACKUP = "Backup"
MAINTENANCE_ON = "MaintenanceOn"
CONFIG = "ConfigMigration"
MIGRATE = "Migrate"
STORAGE = "StorageMigration"
ROLLOUT = "Rollout"
VALIDATE = "Validate"
# Rollback steps.
RB_MAINTENANCE = "RollbackMaintenanceOn"
RB_EXPORT = "RollbackExport"
RB_RESTORE = "RollbackRestore"
RB_CONFIG = "RollbackConfig"
RB_ROLLOUT = "RollbackRollout"

STEP_PHASE = {
    PREFLIGHT: "Planning",
    BACKUP: "BackingUp",
    MAINTENANCE_ON: "Migrating",
    CONFIG: "Migrating",
    MIGRATE: "Migrating",
    STORAGE: "Migrating",
    ROLLOUT: "Migrating",
    VALIDATE: "Validating",
}
ROLLBACK_STEPS = (RB_MAINTENANCE, RB_EXPORT, RB_RESTORE, RB_CONFIG, RB_ROLLOUT)
# Steps after which the database or files may differ from the backup.
DATA_CHANGING = (MIGRATE, STORAGE)
# Steps after which the CoaiInstance spec (config, version, maintenance) differs from the snapshot.
SPEC_CHANGING = (MAINTENANCE_ON, CONFIG, ROLLOUT)

TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "RolledBack"})
# Refusals that may clear up by themselves: the migration waits instead of failing.
TRANSIENT_REFUSALS = frozenset({"InstanceNotFound", "InstanceNotReady", "InstanceProgressing"})


class PlanRefused(PlanError):  # noqa: N818  (a refusal, reported as a condition reason)
    """The migration cannot run; `reason` is the condition reason, the message says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class MigrationPlan:
    from_version: str
    to_version: str
    path: tuple[str, ...]
    steps: tuple[str, ...]
    checks: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())


def _enabled(section: Mapping[str, Any] | None, default: bool) -> bool:
    if not section:
        return default
    return bool(section.get("enabled", default))


def current_version(instance: Mapping[str, Any]) -> str:
    """The version the instance runs now: what it reports, which the operator last observed."""
    status = instance.get("status") or {}
    spec = instance.get("spec") or {}
    running = status.get("schemaVersion") or status.get("version")
    if not running:
        raise PlanRefused("InstanceNotReady", f"CoaiInstance {instance['metadata']['name']} has not reported a "
                                              "running version yet; wait until it is Ready, then re-apply")
    if status.get("version") and spec.get("version") and status["version"] != spec["version"]:
        raise PlanRefused("InstanceProgressing",
                          f"CoaiInstance {instance['metadata']['name']} is changing version "
                          f"({status['version']} -> {spec['version']}); wait until it is Ready")
    return str(running)


def validation_checks(spec: Mapping[str, Any]) -> tuple[str, ...]:
    validation = spec.get("validation") or {}
    if not _enabled(validation, True):
        return ()
    return tuple(validation.get("checks") or ("database", "health", "dataIntegrity"))


def forward_steps(spec: Mapping[str, Any]) -> tuple[str, ...]:
    steps = [PREFLIGHT]
    if _enabled(spec.get("backup"), True):
        steps.append(BACKUP)
    if _enabled(spec.get("maintenance"), True):
        steps.append(MAINTENANCE_ON)
    steps += [CONFIG, MIGRATE]
    if _enabled(spec.get("storageMigration"), False):
        steps.append(STORAGE)
    steps.append(ROLLOUT)
    if validation_checks(spec):
        steps.append(VALIDATE)
    return tuple(steps)


def plan_migration(spec: Mapping[str, Any], instance: Mapping[str, Any] | None, table: CompatTable,
                   instance_name: str) -> MigrationPlan:
    """The path and steps for `spec`, or PlanRefused with a reason a person can act on."""
    if instance is None:
        raise PlanRefused("InstanceNotFound", f"CoaiInstance {instance_name} does not exist in this namespace; "
                                              "create it or fix spec.instanceRef.name")
    current = current_version(instance)
    target = str(spec["targetVersion"])
    if realline.is_real(current) or realline.is_real(target) or target.lower() in realline.FLOATING_TAGS:
        return plan_real_migration(spec, current, target, instance_name)
    try:
        path = plan_path(Version.parse(current), Version.parse(target), table, direct=True)
    except PlanError as exc:
        reason = {"DowngradeError": "Downgrade", "UnknownVersionError": "UnknownVersion"}.get(
            type(exc).__name__, "UnsupportedPath")
        raise PlanRefused(reason, str(exc)) from exc
    if path.noop and current == target:
        raise PlanRefused("AlreadyAtTarget", f"CoaiInstance {instance_name} already runs {target}; nothing to do")
    return MigrationPlan(
        from_version=current,
        to_version=target,
        path=tuple(h.id for h in path.hops),
        steps=forward_steps(spec),
        checks=validation_checks(spec),
        warnings=path.warnings,
    )


def plan_real_migration(spec: Mapping[str, Any], current: str, target: str, instance_name: str) -> MigrationPlan:
    """The real 3.x/4.x line (bundles/realline.py): measured pairs, either direction."""
    try:
        path = realline.plan_real(current, target)
    except PlanError as exc:
        raise PlanRefused(exc.reason, str(exc)) from exc
    if not path.hops:
        raise PlanRefused("AlreadyAtTarget", f"CoaiInstance {instance_name} already runs {target}; nothing to do")
    warnings = (f"{current} -> {target} is a downgrade: the older app ignores columns the newer one added",) \
        if path.downgrade else ()
    return MigrationPlan(from_version=current, to_version=target, path=path.hops, steps=forward_steps(spec),
                         checks=validation_checks(spec), warnings=warnings)


def rollback_steps(spec: Mapping[str, Any], started: Sequence[str], backup_done: bool) -> tuple[str, ...]:
    """What must be undone, given the forward steps that started. Empty: nothing was changed."""
    data_changed = any(s in started for s in DATA_CHANGING)
    spec_changed = any(s in started for s in SPEC_CHANGING)
    if not data_changed and not spec_changed:
        return ()
    steps: list[str] = []
    if data_changed:
        steps.append(RB_MAINTENANCE)
        graceful = (spec.get("rollback") or {}).get("mode") == "Graceful"
        if graceful and backup_done:
            steps.append(RB_EXPORT)
        if backup_done:
            steps.append(RB_RESTORE)
    steps += [RB_CONFIG, RB_ROLLOUT]
    return tuple(steps)


def phase_for(step: str | None, rolling_back: bool) -> str:
    if rolling_back:
        return "RollingBack"
    return STEP_PHASE.get(step or "", "Planning")
