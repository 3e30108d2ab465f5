"""The names of a CoaiMigration's world: phases, steps, condition reasons, and a step's outcome.

Typed constants (StrEnum members compare equal to their strings, so status dicts stay plain JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Obj = dict[str, Any]


class Phase(StrEnum):
    PENDING = "Pending"
    PLANNING = "Planning"
    BACKING_UP = "BackingUp"
    MIGRATING = "Migrating"
    VALIDATING = "Validating"
    ROLLING_BACK = "RollingBack"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.ROLLED_BACK})


class StepName(StrEnum):
    PREFLIGHT = "Preflight"
    BACKUP = "Backup"
    MAINTENANCE_ON = "MaintenanceOn"
    CONFIG = "ConfigMigration"
    MIGRATE = "Migrate"
    STORAGE = "StorageMigration"
    ROLLOUT = "Rollout"
    VALIDATE = "Validate"
    RB_MAINTENANCE = "RollbackMaintenanceOn"
    RB_EXPORT = "RollbackExport"
    RB_RESTORE = "RollbackRestore"
    RB_CONFIG = "RollbackConfig"
    RB_ROLLOUT = "RollbackRollout"


class StepPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class Reason(StrEnum):
    """Condition and Event reasons the machine itself sets (step reasons are `<Step>Failed` etc.)."""

    PLANNED = "Planned"
    DRY_RUN = "DryRun"
    WAITING_FOR_LOCK = "WaitingForLock"
    WAITING_FOR_INSTANCE = "WaitingForInstance"
    LOCK_LOST = "LockLost"
    LOCK_ACQUIRED = "LockAcquired"
    ROLLING_BACK = "RollingBack"
    ROLLBACK_FAILED = "RollbackFailed"
    ROLLED_BACK = "RolledBack"
    SUCCEEDED = "Succeeded"
    INSTANCE_NOT_FOUND = "InstanceNotFound"
    VERSION_MISMATCH = "VersionMismatch"
    SNAPSHOT_INCOMPLETE = "SnapshotIncomplete"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    POD_NOT_STARTED = "PodNotStarted"
    DELETION_REQUESTED = "DeletionRequested"
    OPERATOR_ERROR = "OperatorError"


class Outcome(StrEnum):
    DONE = "done"
    RUNNING = "running"
    FAILED = "failed"


@dataclass
class StepOutcome:
    state: Outcome
    message: str = ""
    job: str | None = None
    data: Obj = field(default_factory=dict)
    reason: str | None = None  # a specific condition reason (default: `<Step>Failed`)
    changed: bool = True  # False: the step failed before it changed anything (nothing to roll back for it)
