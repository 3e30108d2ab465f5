"""CoaiInstance status, computed from what was observed (pure; no I/O).

The instance controller owns phase, version, image, readyReplicas, endpoint, observedGeneration
and the Ready/Progressing/Degraded conditions. schemaVersion and activeMigration belong to the
migration controller: they are read here, never written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coai_operator import constants
from coai_operator.conditions import Condition, get_condition, set_condition
from coai_operator.instance.adminpw import AdminState
from coai_operator.instance.spec import Problem

Obj = dict[str, Any]

OWNED_FIELDS = ("phase", "version", "image", "readyReplicas", "endpoint", "observedGeneration", "conditions")


@dataclass(frozen=True)
class Rollout:
    """What the CoAI Deployment says about itself."""

    exists: bool
    observed: bool = False  # the Deployment controller has seen the latest Deployment spec
    replicas: int = 0  # desired
    updated: int = 0
    ready: int = 0
    available: int = 0
    total: int = 0  # all pods, old ReplicaSets included
    deadline_exceeded: bool = False
    version: str | None = None
    image: str | None = None

    @property
    def complete(self) -> bool:
        return (self.exists and self.observed and self.updated == self.replicas and self.total == self.replicas
                and self.available == self.replicas)


def rollout(deployment: Mapping[str, Any] | None) -> Rollout:
    if not deployment:
        return Rollout(exists=False)
    meta, spec, st = deployment.get("metadata", {}), deployment.get("spec", {}), deployment.get("status") or {}
    template = spec.get("template", {})
    containers = template.get("spec", {}).get("containers") or [{}]
    progressing = get_condition(st.get("conditions"), "Progressing") or {}
    return Rollout(
        exists=True,
        observed=st.get("observedGeneration", -1) >= meta.get("generation", 0),
        replicas=int(spec.get("replicas", 1)),
        updated=int(st.get("updatedReplicas") or 0),
        ready=int(st.get("readyReplicas") or 0),
        available=int(st.get("availableReplicas") or 0),
        total=int(st.get("replicas") or 0),
        deadline_exceeded=(progressing.get("status") == "False"
                           and progressing.get("reason") == "ProgressDeadlineExceeded"),
        version=(template.get("metadata", {}).get("labels") or {}).get(constants.LABEL_VERSION),
        image=containers[0].get("image"),
    )


@dataclass(frozen=True)
class UpgradeView:
    """The UpgradePending condition: reason None when spec.version is what is deployed."""

    reason: str | None = None
    message: str = ""
    refused: bool = False  # cannot proceed without a change in Git (kstatus: Failed)


DEGRADED_REASONS = frozenset({"ProgressDeadlineExceeded", "PodsUnavailable", "AdminPasswordFailed"})
DEFAULT_PASSWORD_MESSAGE = (
    "root still has CoAI's public default password: anybody who can reach the app can "  # noqa: S105
                            "log in as administrator; set spec.admin.passwordSecretRef")


def _summary(r: Rollout) -> str:
    return f"{r.updated}/{r.replicas} pods updated, {r.available} available"


def _rollout_phase(r: Rollout, current: Mapping[str, Any]) -> tuple[str, str, str]:
    """(phase, reason, message) from the Deployment alone."""
    if not r.exists:
        return "Pending", "DeploymentMissing", "The CoAI Deployment does not exist yet"
    if r.deadline_exceeded:
        return ("Degraded", "ProgressDeadlineExceeded",
                f"The rollout of {r.image} made no progress within its deadline ({_summary(r)}); "
                "check the pods' events and logs")
    if not r.observed:
        return "Progressing", "RollingOut", f"Rolling out {r.image}: the Deployment controller has not acted yet"
    if r.complete:
        if r.replicas == 0:
            return "Pending", "ScaledToZero", "spec.replicas is 0: CoAI is stopped"
        return "Ready", "Available", f"{r.ready}/{r.replicas} pods ready, running {r.image}"
    settled = r.updated == r.replicas and r.total == r.replicas
    if settled and current.get("phase") in ("Ready", "Degraded") and current.get("version") == r.version:
        # This version was serving and its pods stopped being ready: crashing, OOM-killed, probes failing.
        return ("Degraded", "PodsUnavailable",
                f"{r.available}/{r.replicas} pods of {r.image} available; check the pods' events and logs")
    return "Progressing", "RollingOut", f"Rolling out {r.image}: {_summary(r)}"


def compute(
    *,
    current: Mapping[str, Any] | None,
    generation: int,
    endpoint: str,
    deployment: Mapping[str, Any] | None,
    problem: Problem | None = None,
    maintenance: bool = False,
    maintenance_message: str | None = None,
    now: str | None = None,
    upgrade: UpgradeView | None = None,
    admin: AdminState | None = None,
) -> Obj:
    """The owned status fields for what was observed.

    `problem` is a spec or apply failure (the children were left as they were). Values that need
    a finished rollout (version, image) keep their previous value until the rollout completes, so
    status.version is always the version that actually runs.
    """
    current = dict(current or {})
    r = rollout(deployment)
    migration = current.get("activeMigration")
    conditions: list[Condition] | None = current.get("conditions")

    def cond(type_: str, status: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, status, reason, message, generation, now)

    rolling = False
    upgrade = upgrade or UpgradeView()
    if problem is not None:
        phase, reason, message, available = "Degraded", problem.reason, problem.message, False
    else:
        phase, reason, message = _rollout_phase(r, current)
        if admin is not None and admin.configured and not admin.done and r.complete and r.replicas:
            # Not Ready while root still has the public default password.
            if admin.failed:
                phase, reason, message = "Degraded", "AdminPasswordFailed", admin.failed
            elif phase == "Ready":
                phase, reason, message = "Progressing", "SettingAdminPassword", admin.message
        available = phase == "Ready"
        rolling = reason == "RollingOut"
        if maintenance and r.exists and phase != "Degraded":
            phase, reason, available = "Maintenance", "Maintenance", False
            message = "Maintenance mode (spec.maintenance.enabled): CoAI is scaled to 0" + (
                f"; message: {maintenance_message}" if maintenance_message else "")
        if migration:
            phase = "Migrating"
            if not available:
                reason, message = "Migrating", f"CoaiMigration {migration} holds this instance ({message})"
    cond("Ready", available, "Available" if available else reason, message)
    if rolling:
        cond("Progressing", True, "RollingOut", message)
    elif problem is not None:
        cond("Progressing", False, reason, "Reconciliation is blocked: " + message)
    elif r.complete:
        cond("Progressing", False, "RolloutComplete", f"Rollout of {r.image} complete")
    else:
        cond("Progressing", False, reason, message)
    degraded = problem is not None or reason in DEGRADED_REASONS
    cond("Degraded", degraded, reason if degraded else "AsExpected", message if degraded else "No problem found")
    cond("UpgradePending", upgrade.reason is not None, upgrade.reason or "UpToDate",
         upgrade.message or "spec.version is the version deployed")
    # kstatus (Flux, kpt, cli-utils) reads these "abnormal-true" conditions rather than Ready: an
    # upgrade under way is InProgress, a refused or failed one is Failed.
    upgrading = upgrade.reason is not None and not upgrade.refused
    if rolling or not upgrading:
        cond("Reconciling", rolling, "RollingOut" if rolling else "AsExpected",
             message if rolling else "Nothing to do")
    else:
        cond("Reconciling", True, str(upgrade.reason), upgrade.message)
    if degraded or not upgrade.refused:
        cond("Stalled", degraded, reason if degraded else "AsExpected", message if degraded else "No problem found")
    else:
        cond("Stalled", True, str(upgrade.reason), upgrade.message)
    if admin is not None and admin.applies:
        if admin.configured:
            cond("DefaultAdminPassword", False, "AdminPasswordFromSecret", "root's password comes from "
                 "spec.admin.passwordSecretRef" + ("" if admin.done else " (not set yet)"))
        else:
            cond("DefaultAdminPassword", True, "NoAdminPasswordSecret", DEFAULT_PASSWORD_MESSAGE)

    status: Obj = {
        "phase": phase,
        "version": r.version if r.complete and r.version else current.get("version"),
        "image": r.image if r.complete and r.image else current.get("image"),
        "readyReplicas": r.ready,
        "endpoint": endpoint,
        "observedGeneration": generation,
        "conditions": conditions,
    }
    return status


def patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> Obj | None:
    """A merge patch of the owned fields that differ (None: nothing to write).

    Only OWNED_FIELDS ever appear, so schemaVersion and activeMigration are never touched.
    """
    current = current or {}
    changes = {k: desired.get(k) for k in OWNED_FIELDS if desired.get(k) != current.get(k)}
    return changes or None
