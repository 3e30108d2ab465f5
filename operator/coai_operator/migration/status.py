"""Reading and writing a migration's status: step records, phase and the conditions it implies."""

from __future__ import annotations

from coai_operator.conditions import set_condition
from coai_operator.kube.jobpods import seconds_since  # noqa: F401  (re-exported: the machine's clock)
from coai_operator.migration.context import Ctx
from coai_operator.migration.model import TERMINAL_PHASES, Obj, Phase, StepName, StepPhase

STATUS_KEYS = frozenset({
    "phase", "fromVersion", "toVersion", "path", "steps", "currentStep", "backup", "previous", "startedAt",
    "completedAt", "message", "observedGeneration", "conditions",
})


def step_record(status: Obj, name: str) -> Obj | None:
    return next((s for s in status.get("steps") or [] if s["name"] == name), None)


def started_steps(status: Obj) -> list[str]:
    return [s["name"] for s in status.get("steps") or []
            if s.get("phase") in (StepPhase.RUNNING, StepPhase.SUCCEEDED, StepPhase.FAILED)]


def backup_done(status: Obj) -> bool:
    backup = step_record(status, StepName.BACKUP)
    return bool(backup and backup["phase"] == StepPhase.SUCCEEDED)


def conditions_for(status: Obj, generation: int | None, reason: str, message: str) -> list[Obj]:
    phase = status.get("phase")
    conds = status.get("conditions")
    terminal = phase in TERMINAL_PHASES
    conds = set_condition(conds, "Ready", phase == Phase.SUCCEEDED, reason, message, generation)
    conds = set_condition(conds, "Progressing", not terminal and phase != Phase.PENDING, reason, message, generation)
    conds = set_condition(conds, "Failed", phase == Phase.FAILED, reason, message, generation)
    # kstatus (Flux, kpt, cli-utils) reads these "abnormal-true" conditions rather than Ready.
    conds = set_condition(conds, "Reconciling", not terminal, reason, message, generation)
    conds = set_condition(conds, "Stalled", phase == Phase.FAILED, reason, message, generation)
    return set_condition(conds, "RolledBack", phase == Phase.ROLLED_BACK, reason, message, generation)


def set_phase(ctx: Ctx, phase: str, reason: str, message: str) -> None:
    ctx.status["phase"] = str(phase)
    ctx.status["message"] = message
    ctx.status["conditions"] = conditions_for(ctx.status, ctx.migration["metadata"].get("generation"), str(reason),
                                              message)
