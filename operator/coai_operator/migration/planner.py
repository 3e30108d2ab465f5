"""Planning a CoaiMigration: pure functions from (spec, instance, compatibility table) to the path,
the ordered steps and the rollback steps. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coai_operator.bundles import realline
from coai_operator.domain.errors import PlanError
from coai_operator.domain.versions import CompatTable, Version, plan_path
from coai_operator.instance.upgrade import deployed_version
from coai_operator.migration import model, steps
from coai_operator.migration.model import StepName

# Re-exported names: the steps themselves are declared in steps.py.
PREFLIGHT, BACKUP, MAINTENANCE_ON, CONFIG = StepName.PREFLIGHT, StepName.BACKUP, StepName.MAINTENANCE_ON, \
    StepName.CONFIG
MIGRATE, STORAGE, ROLLOUT, VALIDATE = StepName.MIGRATE, StepName.STORAGE, StepName.ROLLOUT, StepName.VALIDATE
RB_MAINTENANCE, RB_EXPORT, RB_RESTORE, RB_CONFIG, RB_ROLLOUT = (
    StepName.RB_MAINTENANCE, StepName.RB_EXPORT, StepName.RB_RESTORE, StepName.RB_CONFIG, StepName.RB_ROLLOUT)
ROLLBACK_STEPS = steps.ROLLBACK_STEPS
# Steps after which the database or files may differ from the backup / the spec from the snapshot.
DATA_CHANGING = tuple(s.name for s in steps.FORWARD if s.changes == "data")
SPEC_CHANGING = tuple(s.name for s in steps.FORWARD if s.changes == "spec")
TERMINAL_PHASES = model.TERMINAL_PHASES
# Refusals that may clear up by themselves: the migration waits instead of failing.
TRANSIENT_REFUSALS = frozenset({"InstanceNotFound", "InstanceNotReady", "InstanceProgressing"})
validation_checks = steps.validation_checks


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


def current_version(instance: Mapping[str, Any]) -> str:
    """The version the instance runs now: the one the operator deploys (status.upgrade.version). A
    spec.version ahead of it is what this migration is for (Git asks; the migration carries it out)."""
    running = deployed_version(instance.get("status") or {})
    if not running:
        raise PlanRefused("InstanceNotReady", f"CoaiInstance {instance['metadata']['name']} has not reported a "
                                              "running version yet; wait until it is Ready, then re-apply")
    return str(running)


def forward_steps(spec: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(s.name for s in steps.FORWARD if s.enabled(spec))


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
    warnings = list(path.warnings)
    checks = validation_checks(spec)
    if "dataIntegrity" in checks and StepName.BACKUP not in forward_steps(spec):
        warnings.append("validation check dataIntegrity is skipped: backup is disabled, so there are no row counts "
                        "to compare with")
    return MigrationPlan(
        from_version=current,
        to_version=target,
        path=tuple(h.id for h in path.hops),
        steps=forward_steps(spec),
        checks=checks,
        warnings=tuple(warnings),
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
    need = steps.RollbackNeed(data_changed=data_changed, backup_done=backup_done,
                              graceful=(spec.get("rollback") or {}).get("mode") == "Graceful")
    return tuple(s.name for s in steps.ROLLBACK if s.needed is not None and s.needed(need))


def phase_for(step: str | None, rolling_back: bool) -> str:
    if rolling_back:
        return model.Phase.ROLLING_BACK
    definition = steps.STEPS.get(step or "")
    return definition.phase if definition else model.Phase.PLANNING
