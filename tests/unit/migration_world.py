"""A CoaiMigration's surroundings on the in-memory API: an instance, its Deployment and Secret, and
stand-ins for what other controllers do (the Job controller finishing Jobs with an engine result,
the instance controller scaling the app and reporting Ready). Each `settle()` is one such round."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coai_operator import constants
from coai_operator.backup import controller
from coai_operator.instance import render, upgrade
from coai_operator.migration import machine
from coai_operator.migration.jobs import LABEL_STEP, STEP_SLUGS
from tests.unit.fakekube import FakeKube

Obj = dict[str, Any]
NS = "apps"

PLAN_RESULT = {"ok": True, "current": "1.8.0", "path": ["1.8.0-to-1.9.0", "1.9.0-to-2.0.0"]}
BACKUP_RESULT = {"ok": True, "location": "/backup/x", "artifacts": [{"name": "database.sql.gz", "bytes": 10}],
                 "rowCounts": {"users": 40}}


def default_result(args: list[str]) -> Obj:
    command = args[1]
    if command == "plan":
        return dict(PLAN_RESULT)
    if command == "backup":
        return dict(BACKUP_RESULT)
    return {"ok": True, "checks": [{"name": "database", "status": "passed"}]}


@dataclass
class World:
    kube: FakeKube = field(default_factory=FakeKube)
    # engine command ("plan", "migrate", ...) -> the result JSON its Job reports, or "pending" (never starts)
    results: dict[str, Any] = field(default_factory=dict)
    instance_ready: bool = True
    ran: list[str] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    hooks: list[Callable[[World], None]] = field(default_factory=list)
    # As on the real node: a round in which the engine container has exited but the Job has no
    # condition yet (active 1, ready 0), before the round that brings Complete / Failed.
    exit_lag: bool = False

    def setup(self, version: str = "1.8.0", **spec: Any) -> World:
        self.kube.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "coai-app", "namespace": NS},
                       "data": {"JWT_SECRET": "ampq", "OPENAI_KEY": "c2s="}})
        self.kube.put({"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance",
                       "metadata": {"name": "chat", "namespace": NS},
                       "spec": {"version": version, "secretRef": {"name": "coai-app"},
                                "config": {"LEGACY_AUTH_ENABLED": "true", "OLD_API_FORMAT": "1"},
                                "database": {"host": "db", "passwordSecretRef": {"name": "coai-db"}}},
                       "status": {"version": version, "schemaVersion": version, "observedGeneration": 1,
                                  "conditions": [{"type": "Ready", "status": "True"}]}})
        for claim in ("chat-storage", "chat-config"):  # the instance controller's PVCs
            self.kube.put({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": claim, "namespace": NS}, "spec": {}})
        self.kube.put({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "chat", "namespace": NS},
                       "spec": {"replicas": 1, "selector": {"matchLabels": constants.selector_labels(
                           "chat", render.APP_COMPONENT)}},
                       "status": {"replicas": 1, "readyReplicas": 1}})
        self.migration("to-2", "2.0.0", **spec)
        return self

    def migration(self, name: str, target: str, **spec: Any) -> None:
        self.kube.put({"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiMigration",
                       "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                                    "creationTimestamp": "2099-01-01T00:00:00Z"},
                       "spec": {"instanceRef": {"name": "chat"}, "targetVersion": target, **spec}})

    def get(self, kind: str, name: str) -> Obj | None:
        return self.kube.objects.get((kind, NS, name))

    def status(self, name: str = "to-2") -> Obj:
        return (self.get("CoaiMigration", name) or {}).get("status") or {}

    def steps(self, name: str = "to-2") -> dict[str, str]:
        return {s["name"]: s["phase"] for s in self.status(name).get("steps") or []}

    # --- one round of the other controllers ----------------------------------------------------
    def settle(self) -> None:
        self._backup_controller()
        for (kind, _, name), job in list(self.kube.objects.items()):
            status = job.get("status") or {}
            if kind != "Job" or status.get("conditions"):
                continue
            if "lagging" in status:
                job["status"] = {"conditions": status["lagging"]}
                continue
            self._finish_job(name, job)
            if self.exit_lag and (job.get("status") or {}).get("conditions"):
                job["status"] = {"active": 1, "ready": 0, "lagging": job["status"]["conditions"]}
        self._backup_controller()
        self._instance_controller()
        for hook in self.hooks:
            hook(self)

    def _finish_job(self, name: str, job: Obj) -> None:
        pod_spec = job["spec"]["template"]["spec"]
        args = pod_spec["containers"][0]["args"]
        result = self.results.get(args[1], default_result(args))
        missing = [v["persistentVolumeClaim"]["claimName"] for v in pod_spec["volumes"]
                   if "persistentVolumeClaim" in v and not self.get("PersistentVolumeClaim",
                                                                    v["persistentVolumeClaim"]["claimName"])]
        if missing:  # what the scheduler does with a pod whose claim does not exist
            self.pending_pod(name, conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": f'persistentvolumeclaim "{missing[0]}" not found'}])
            return
        if result == "image-pull":
            self.pending_pod(name, waiting={"reason": "ImagePullBackOff",
                                            "message": 'Back-off pulling image "nope:1"'})
            return
        if result == "pending":
            return
        self.ran.append(args[1])
        ok = result.get("ok", True)
        job["status"] = {"conditions": [{"type": "Complete" if ok else "Failed", "status": "True"}]}
        self.kube.put({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": f"{name}-pod", "namespace": NS, "labels": {"job-name": name}},
                       "status": {"containerStatuses": [{"name": "engine", "state": {"terminated": {
                           "exitCode": 0 if ok else 1, "message": json.dumps(result)}}}]}})

    def _backup_controller(self) -> None:
        """One look of the real CoaiBackup controller at every unfinished CoaiBackup (backup/controller.py)."""
        for (kind, _, _), backup in list(self.kube.objects.items()):
            if kind == "CoaiBackup" and (backup.get("status") or {}).get("phase") not in ("Completed", "Failed"):
                status, events = controller.reconcile_backup(self.kube, copy.deepcopy(backup))
                backup["status"] = status
                self.events += events

    def pending_pod(self, job: str, conditions: list[Obj] | None = None, waiting: Obj | None = None) -> None:
        status: Obj = {"phase": "Pending", "conditions": conditions or []}
        if waiting:
            status["containerStatuses"] = [{"name": "engine", "state": {"waiting": waiting}}]
        self.kube.put({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": f"{job}-pod", "namespace": NS, "labels": {"job-name": job}},
                       "status": status})

    def age_step(self, step: str, seconds: float, name: str = "to-2") -> None:
        """Move a running step's start into the past, as if `seconds` had gone by."""
        import datetime as dt

        def earlier(stamp: str) -> str:
            when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            return (when - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")

        for record in self.status(name).get("steps") or []:
            if record["name"] == step and record.get("startedAt"):
                record["startedAt"] = earlier(record["startedAt"])
        slug = STEP_SLUGS.get(step)
        for (kind, _, _), job in self.kube.objects.items():  # and the step's Job, created when it started
            if kind == "Job" and (job["metadata"].get("labels") or {}).get(LABEL_STEP) == slug:
                job["metadata"]["creationTimestamp"] = earlier(job["metadata"]["creationTimestamp"])
        for (kind, _, _), backup in self.kube.objects.items():  # the CoaiBackups a step waits for, too
            if kind == "CoaiBackup" and (backup.get("status") or {}).get("startTime"):
                backup["status"]["startTime"] = earlier(backup["status"]["startTime"])

    def run_until_step(self, step: str, name: str = "to-2", rounds: int = 40) -> None:
        for _ in range(rounds):
            if self.steps(name).get(step) == "Running":
                return
            self.tick(name)
            self.settle()
        raise AssertionError(f"{step} never started: {self.steps(name)}")

    def _instance_controller(self) -> None:
        instance = self.get("CoaiInstance", "chat")
        deployment = self.get("Deployment", "chat")
        if instance is None or deployment is None:
            return
        status = instance["status"]
        spec = self.rendered
        down = bool((spec.get("maintenance") or {}).get("enabled"))
        replicas = 0 if down else 1
        deployment["spec"]["replicas"] = replicas
        deployment["status"] = {"replicas": replicas, "readyReplicas": replicas}
        status["conditions"] = [{"type": "Ready", "status": "True" if self.instance_ready else "False"}]
        if self.instance_ready:
            status.update(version=spec["version"], observedGeneration=instance["metadata"]["generation"])

    @property
    def rendered(self) -> Obj:
        """The spec the instance controller renders the children from (Git's spec + status.upgrade)."""
        instance = self.get("CoaiInstance", "chat") or {}
        status = instance.get("status") or {}
        version = upgrade.deployed_version(status) or instance["spec"]["version"]
        return upgrade.effective_spec(instance["spec"], status, version)

    # --- the operator --------------------------------------------------------------------------
    def tick(self, name: str = "to-2") -> float | None:
        events, delay = machine.tick(self.kube, NS, name, wake=False)  # settle() is the instance controller
        self.events += events
        return delay

    def run(self, name: str = "to-2", rounds: int = 60) -> Obj:
        """Alternate operator ticks and controller rounds until the migration is finished."""
        for _ in range(rounds):
            delay = self.tick(name)
            if delay is None and self.status(name).get("phase") in ("Succeeded", "Failed", "RolledBack"):
                return self.status(name)
            self.settle()
        return self.status(name)

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]
