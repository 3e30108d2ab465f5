"""Every step of a CoaiMigration, declared once: its name, the phase it reports, what it runs (the
engine command and volumes of its Job, or an in-operator action), how its result reads, its default
deadline, whether it runs at all, and which rollback step undoes it. Adding a step touches this file.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from coai_operator.backup.destination import BackupSource, restore_args
from coai_operator.instance.spec import Names, with_defaults
from coai_operator.migration import backupstep, opsteps, realjobs
from coai_operator.migration.context import Ctx
from coai_operator.migration.model import Obj, Phase, StepName, StepOutcome
from coai_operator.migration.names import BUNDLE_MOUNT, STORAGE_MOUNT

# "backup": the pre-migration backup's destination (PVC read-only, or S3 settings), and its key.
Volume = Literal["backup", "storage", "config", "bundle"]
ROW_COUNTS_ENV = "COAI_EXPECTED_ROW_COUNTS"


@dataclass(frozen=True)
class JobInput:
    """What a step's Job arguments are computed from."""

    migration: Mapping[str, Any]
    instance: Mapping[str, Any]
    # The backup's row counts (status.backup.rowCounts), None without a backup: Validate compares with them.
    row_counts: Mapping[str, int] | None = None
    # The pre-migration CoaiBackup as a Job reads it (RollbackRestore); pure builds use the default PVC.
    source: BackupSource | None = None

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.migration["spec"]

    @property
    def target(self) -> str:
        return str(self.spec["targetVersion"])

    @property
    def has_backup(self) -> bool:
        return self.row_counts is not None

    @property
    def backup(self) -> BackupSource:
        return self.source or backupstep.default_source(self.migration)

    @property
    def bundle(self) -> list[str]:
        return ["--bundle-dir", BUNDLE_MOUNT] if (self.spec.get("migrations") or {}).get("configMapRef") else []

    @property
    def include(self) -> list[str]:
        wanted = (self.spec.get("backup") or {}).get("include") or ["database", "storage", "config"]
        return [i for i in ("database", "storage", "config") if i in wanted]

    @property
    def real(self) -> bool:
        """The real 3.x/4.x line (migration/realjobs.py): its own preflight, migrate and validation."""
        return realjobs.applies(self.migration)


@dataclass(frozen=True)
class RollbackNeed:
    """What the rollback has to undo, from the forward steps that started."""

    data_changed: bool
    backup_done: bool
    graceful: bool


@dataclass(frozen=True)
class Step:
    name: StepName
    phase: Phase
    deadline: int  # seconds; spec.deadlines.<key> overrides
    summary: Callable[[Obj], str] = lambda result: "done"
    # A Job step: the engine command line and the volumes it mounts.
    slug: str | None = None
    args: Callable[[JobInput], list[str]] | None = None
    volumes: tuple[Volume, ...] = ()
    env: Callable[[JobInput], list[Obj]] | None = None  # besides the database's
    # An in-operator step.
    action: Callable[[Ctx], StepOutcome] | None = None
    # Forward: runs when enabled(spec); `changes` says what it changes, `undone_by` which step undoes it.
    enabled: Callable[[Mapping[str, Any]], bool] = lambda spec: True
    changes: Literal["data", "spec"] | None = None
    undone_by: StepName | None = None
    # Rollback: runs when needed(spec, need).
    needed: Callable[[RollbackNeed], bool] | None = field(default=None)
    # Read-only, and the next step too: that one starts while this one runs (no pod start waited for
    # in between). A step after both starts when both have succeeded.
    overlaps_next: bool = False

    @property
    def runs_job(self) -> bool:
        return self.slug is not None

    @property
    def deadline_key(self) -> str:
        return self.name[0].lower() + self.name[1:]


def _enabled(section: Mapping[str, Any] | None, default: bool) -> bool:
    return bool(section.get("enabled", default)) if section else default


def validation_checks(spec: Mapping[str, Any]) -> tuple[str, ...]:
    validation = spec.get("validation") or {}
    if not _enabled(validation, True):
        return ()
    return tuple(validation.get("checks") or ("database", "health", "dataIntegrity"))


def _validate_args(job: JobInput) -> list[str]:
    validation = job.spec.get("validation") or {}
    inst_spec = with_defaults(copy.deepcopy(dict(job.instance.get("spec") or {})))
    names = Names(job.instance["metadata"]["name"])
    base_url = validation.get("baseURL") or (
        f"http://{names.service}.{job.instance['metadata']['namespace']}.svc:{inst_spec['service']['port']}")
    return ["validate", "--checks", ",".join(validation_checks(job.spec)), "--base-url", base_url,
            "--health-path", str(inst_spec.get("healthPath") or "/health"),
            "--timeout", str(validation.get("timeoutSeconds") or 300),
            # The backup's row counts come in the environment (from status.backup), so the Job needs no
            # access to the backup's store. Without a backup dataIntegrity is skipped (the plan says so).
            *(["--row-counts-env", ROW_COUNTS_ENV] if job.has_backup else []),
            *(realjobs.validate_args(job.instance, job.target) if job.real else [])]


def _validate_env(job: JobInput) -> list[Obj]:
    env = realjobs.validate_env(job.instance) if job.real else []
    if job.row_counts is not None:
        env.append({"name": ROW_COUNTS_ENV, "value": json.dumps(dict(job.row_counts), sort_keys=True)})
    api_key = (job.spec.get("validation") or {}).get("apiKeySecretRef") or {}
    if api_key.get("name"):
        env.append({"name": "TEST_API_KEY", "valueFrom": {"secretKeyRef": {
            "name": api_key["name"], "key": api_key.get("key") or "api-key", "optional": True}}})
    return env


def _preflight_args(job: JobInput) -> list[str]:
    return realjobs.preflight_args(job.migration, job.instance) if job.real else \
        ["plan", "--target", job.target, *job.bundle]


def _migrate_args(job: JobInput) -> list[str]:
    return realjobs.migrate_args(job.migration, job.instance) if job.real else \
        ["migrate", "--target", job.target, *job.bundle]


def _plan_summary(result: Obj) -> str:
    return f"database at {result.get('current')}, path {' -> '.join(result.get('path') or []) or 'none'}"


def _restore_args(job: JobInput) -> list[str]:
    from_version = str((job.migration.get("status") or {}).get("fromVersion") or "")
    return restore_args(job.backup.url, job.include, from_version)[0]


def _validate_summary(result: Obj) -> str:
    checks = result.get("checks") or []
    if isinstance(checks, list):
        return "checks: " + ", ".join(f"{c.get('name')}={c.get('status')}" for c in checks if isinstance(c, dict))
    return "done"


ROLLOUT_DEADLINE = int(os.environ.get("COAI_ROLLOUT_TIMEOUT_SECONDS", "900"))

FORWARD: tuple[Step, ...] = (
    # The backup, read-only too, starts beside it: the plan is a pod start and a second, the backup
    # far longer. A plan that fails has cost a backup that finishes on its own, nothing else.
    Step(StepName.PREFLIGHT, Phase.PLANNING, 600, _plan_summary, slug="plan",
         args=_preflight_args, volumes=("bundle",), overlaps_next=True),
    Step(StepName.BACKUP, Phase.BACKING_UP, 3600, action=backupstep.backup_step,
         enabled=lambda spec: _enabled(spec.get("backup"), True)),
    Step(StepName.MAINTENANCE_ON, Phase.MIGRATING, 600, action=opsteps.maintenance_on,
         enabled=lambda spec: _enabled(spec.get("maintenance"), True), changes="spec",
         undone_by=StepName.RB_CONFIG),
    Step(StepName.CONFIG, Phase.MIGRATING, 120, action=opsteps.config_migration, changes="spec",
         undone_by=StepName.RB_CONFIG),
    Step(StepName.MIGRATE, Phase.MIGRATING, 3600, slug="migrate",
         args=_migrate_args, volumes=("bundle",), changes="data",
         undone_by=StepName.RB_RESTORE),
    Step(StepName.STORAGE, Phase.MIGRATING, 3600, slug="storage",
         args=lambda j: ["migrate-storage", "--storage", STORAGE_MOUNT], volumes=("storage",),
         enabled=lambda spec: _enabled(spec.get("storageMigration"), False), changes="data",
         undone_by=StepName.RB_RESTORE),
    Step(StepName.ROLLOUT, Phase.MIGRATING, ROLLOUT_DEADLINE, action=opsteps.rollout, changes="spec",
         undone_by=StepName.RB_CONFIG),
    Step(StepName.VALIDATE, Phase.VALIDATING, 900, _validate_summary, slug="validate", args=_validate_args,
         env=_validate_env, enabled=lambda spec: bool(validation_checks(spec))),
)

ROLLBACK: tuple[Step, ...] = (
    Step(StepName.RB_MAINTENANCE, Phase.ROLLING_BACK, 600, action=opsteps.rollback_maintenance,
         needed=lambda need: need.data_changed),
    Step(StepName.RB_EXPORT, Phase.ROLLING_BACK, 3600, action=backupstep.export_step,
         needed=lambda need: need.data_changed and need.graceful and need.backup_done),
    Step(StepName.RB_RESTORE, Phase.ROLLING_BACK, 3600,
         lambda result: "database and files restored from the backup; row counts verified", slug="restore",
         args=_restore_args, volumes=("backup", "storage", "config"),
         needed=lambda need: need.data_changed and need.backup_done),
    Step(StepName.RB_CONFIG, Phase.ROLLING_BACK, 120, action=opsteps.rollback_config, needed=lambda need: True),
    Step(StepName.RB_ROLLOUT, Phase.ROLLING_BACK, ROLLOUT_DEADLINE, action=opsteps.rollback_rollout,
         needed=lambda need: True),
)

STEPS: dict[str, Step] = {s.name: s for s in (*FORWARD, *ROLLBACK)}


def runs_beside(running: str, following: str) -> bool:
    """May `following` start while `running` still runs? Only two read-only steps, the first one
    declaring it."""
    first, second = STEPS[running], STEPS[following]
    return first.overlaps_next and first.changes is None and second.changes is None and \
        second.needed is None and first.needed is None
ROLLBACK_STEPS = tuple(s.name for s in ROLLBACK)
JOB_STEPS = tuple(s.name for s in STEPS.values() if s.runs_job)


def deadline_seconds(spec: Mapping[str, Any], step: Step) -> int:
    """The step's deadline: spec.deadlines.<step> when set, else the default."""
    return int((spec.get("deadlines") or {}).get(step.deadline_key) or step.deadline)
