"""The operator's Prometheus metrics: every metric is defined here, and updated only through the
functions of `Metrics`, so call sites stay one line and names cannot drift.

Conventions: `coai_` prefix, base units (seconds, bytes), counters end in `_total`, timestamps are
Unix seconds (`time() - coai_backup_last_success_timestamp_seconds` is the age of the last
backup). The CoaiInstance label is `coai_instance`, never `instance` (Prometheus' own target
label); `namespace` is the object's (scrape with honor_labels). Label values are bounded:
namespace and name of existing objects (a deleted object's series are removed), phases from
the CRD enums, step names without versions, Job failure reasons from Kubernetes' short list.

Where the values come from:
- reconciles: `reconcile(kind)` around each reconcile (the instance controller's reconcile_named);
- instance and migration phases, migration start times, step durations, migration backups: the
  watch events of both kinds (`observe_instance`, `observe_migration`, wired in main.py), i.e.
  the status the controllers wrote, never a second opinion;
- Job failures: the watch events of the operator's Jobs (`observe_job`);
- backups: `record_backup`, called for each verified migration backup and meant for the
  CoaiBackup controller (one call when a backup succeeds or fails).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from coai_operator.migration.model import TERMINAL_PHASES, Phase, StepPhase

INSTANCE_PHASES = ("Pending", "Progressing", "Ready", "Degraded", "Maintenance", "Migrating")
MIGRATION_PHASES = tuple(str(phase) for phase in Phase)
FINAL_MIGRATION_PHASES = TERMINAL_PHASES
FINISHED_STEP_PHASES = frozenset({StepPhase.SUCCEEDED, StepPhase.FAILED})
RECONCILE_RESULTS = ("ok", "problem", "error", "skipped")
STEP_LABEL = "coai.dev/step"

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STEP_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
_VERSION_SUFFIX = re.compile(r"[-_.]?v?\d+(\.\d+)*.*$")
_REASON = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")

Obj = Mapping[str, Any]


def parse_time(value: Any) -> float | None:
    """Unix seconds of an RFC 3339 timestamp (as the API writes them), None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def step_label(name: str) -> str:
    """A step name without a version (Migrate-2.0.0 -> Migrate), so the label set stays bounded."""
    return _VERSION_SUFFIX.sub("", name)[:63] or "unknown"


def failure_reason(job: Obj) -> str | None:
    """The reason of a Job's Failed=True condition (BackoffLimitExceeded, DeadlineExceeded, ...)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            reason = str(condition.get("reason") or "")
            return reason if _REASON.match(reason) else "Unknown"
    return None


class Metrics:
    """All metrics, on their own registry (tests make a fresh one; the operator uses METRICS)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = False) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        if process:  # process_cpu_seconds_total, process_resident_memory_bytes, python_gc_*
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.reconciles = Counter("coai_reconcile", "Reconciles by kind and result (ok, problem: reported in "
                                  "status, error: raised, skipped)", ["kind", "result"], registry=r)
        self.reconcile_seconds = Histogram("coai_reconcile_duration_seconds", "Duration of one reconcile",
                                           ["kind"], buckets=RECONCILE_BUCKETS, registry=r)
        self.instance_phase = Gauge("coai_instance_phase", "1 for the current status.phase of each CoaiInstance, "
                                    "0 for the others", ["namespace", "coai_instance", "phase"], registry=r)
        self.migration_phase = Gauge("coai_migration_phase", "1 for the current status.phase of each "
                                     "CoaiMigration, 0 for the others",
                                     ["namespace", "migration", "coai_instance", "phase"], registry=r)
        self.migration_start = Gauge("coai_migration_start_timestamp_seconds", "When a CoaiMigration that has "
                                     "not finished started (status.startedAt)",
                                     ["namespace", "migration", "coai_instance"], registry=r)
        self.step_seconds = Histogram("coai_migration_step_duration_seconds", "Duration of finished migration "
                                      "steps, by step and result", ["step", "result"], buckets=STEP_BUCKETS,
                                      registry=r)
        self.job_failures = Counter("coai_job_failures", "Engine Jobs that failed, by step and Job failure "
                                    "reason", ["step", "reason"], registry=r)
        self.backup_success = Gauge("coai_backup_last_success_timestamp_seconds", "When the last verified "
                                    "backup of the instance completed", ["namespace", "coai_instance"], registry=r)
        self.backup_size = Gauge("coai_backup_size_bytes", "Size of the last verified backup of the instance",
                                 ["namespace", "coai_instance"], registry=r)
        self.backup_failure = Gauge("coai_backup_last_failure_timestamp_seconds", "When the last failed backup "
                                    "of the instance failed", ["namespace", "coai_instance"], registry=r)
        self.backup_failures = Counter("coai_backup_failures", "Backups that failed", ["namespace", "coai_instance"],
                                       registry=r)
        self._migrations: dict[tuple[str, str], str] = {}  # (ns, name) -> instance
        self._steps_seen: dict[tuple[str, str], set[tuple[str, str]]] = {}  # finished (step, startedAt)
        self._failed_jobs: set[str] = set()  # uids
        self._last_backup: dict[tuple[str, str, bool], float] = {}  # (ns, instance, succeeded) -> at

    # --- reconciles --------------------------------------------------------------------------

    @contextlib.contextmanager
    def reconcile(self, kind: str) -> Iterator[dict[str, str]]:
        """Time one reconcile; the block sets result["result"] (ok by default; error when it raises)."""
        result = {"result": "ok"}
        start = time.perf_counter()
        try:
            yield result
        except BaseException:
            result["result"] = "error"
            raise
        finally:
            self.reconcile_seconds.labels(kind).observe(time.perf_counter() - start)
            self.reconciles.labels(kind, result["result"]).inc()

    # --- objects, from watch events ----------------------------------------------------------

    def observe_instance(self, event_type: str | None, body: Obj) -> None:
        meta = body.get("metadata") or {}
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        if event_type == "DELETED":
            for phase in INSTANCE_PHASES:
                _remove(self.instance_phase, ns, name, phase)
            self.forget_instance_backups(ns, name)
            return
        current = (body.get("status") or {}).get("phase") or "Pending"
        for phase in INSTANCE_PHASES:
            self.instance_phase.labels(ns, name, phase).set(1 if phase == current else 0)

    def observe_migration(self, event_type: str | None, body: Obj) -> None:
        """Phase and start time; each step that finished since the last event goes into the histogram.

        event_type None is kopf's initial listing: steps that finished before this process watched
        are remembered, not counted (an operator restart must not count them twice).
        """
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        instance = str(((body.get("spec") or {}).get("instanceRef") or {}).get("name") or "")
        if event_type == "DELETED":
            self._forget_migration(key)
            return
        old_instance = self._migrations.get(key)
        if old_instance is not None and old_instance != instance:
            self._forget_migration(key)
        self._migrations[key] = instance
        current = status.get("phase") or "Pending"
        for phase in MIGRATION_PHASES:
            self.migration_phase.labels(*key, instance, phase).set(1 if phase == current else 0)
        started = parse_time(status.get("startedAt"))
        if current in FINAL_MIGRATION_PHASES or started is None:
            _remove(self.migration_start, *key, instance)
        else:
            self.migration_start.labels(*key, instance).set(started)
        seen = self._steps_seen.setdefault(key, set())
        for step in status.get("steps") or []:
            name, phase = str(step.get("name") or ""), step.get("phase")
            begin, end = parse_time(step.get("startedAt")), parse_time(step.get("finishedAt"))
            mark = (name, str(step.get("startedAt")))
            if phase not in FINISHED_STEP_PHASES or begin is None or end is None or mark in seen:
                continue
            seen.add(mark)
            if event_type is not None:
                self.step_seconds.labels(step_label(name), str(phase)).observe(max(0.0, end - begin))
        backup = status.get("backup") or {}
        completed = parse_time(backup.get("completedAt"))
        if completed is not None:
            size = sum(int(a.get("bytes") or 0) for a in backup.get("artifacts") or [])
            self.record_backup(key[0], instance, succeeded=True, at=completed, size_bytes=size)

    def _forget_migration(self, key: tuple[str, str]) -> None:
        instance = self._migrations.pop(key, None)
        self._steps_seen.pop(key, None)
        if instance is None:
            return
        for phase in MIGRATION_PHASES:
            _remove(self.migration_phase, *key, instance, phase)
        _remove(self.migration_start, *key, instance)

    def observe_job(self, event_type: str | None, body: Obj) -> None:
        """Count each Job once when it fails (Failed=True), by its step label and failure reason."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if event_type == "DELETED":
            self._failed_jobs.discard(uid)
            return
        reason = failure_reason(body)
        if reason is None or uid in self._failed_jobs:
            return
        self._failed_jobs.add(uid)
        if event_type is None:  # failed before this process watched: already counted by the last one
            return
        step = str((meta.get("labels") or {}).get(STEP_LABEL) or "unknown")
        self.job_failures.labels(step_label(step), reason).inc()

    # --- backups (the hook for the CoaiBackup controller) -------------------------------------

    def record_backup(self, namespace: str, instance: str, *, succeeded: bool, at: float,
                      size_bytes: int | None = None) -> None:
        """One backup of `instance` finished at `at` (Unix seconds). Idempotent: the same backup
        reported again (a later watch event, a resync), or one older than the last recorded,
        changes nothing."""
        key = (namespace, instance, succeeded)
        last = self._last_backup.get(key)
        if last is not None and at <= last:
            return
        self._last_backup[key] = at
        if succeeded:
            self.backup_success.labels(namespace, instance).set(at)
            if size_bytes is not None:
                self.backup_size.labels(namespace, instance).set(size_bytes)
        else:
            self.backup_failures.labels(namespace, instance).inc()
            self.backup_failure.labels(namespace, instance).set(at)

    def forget_instance_backups(self, namespace: str, instance: str) -> None:
        """The instance is gone: drop its backup series."""
        for gauge in (self.backup_success, self.backup_size, self.backup_failure):
            _remove(gauge, namespace, instance)
        _remove(self.backup_failures, namespace, instance)
        for succeeded in (True, False):
            self._last_backup.pop((namespace, instance, succeeded), None)


def exported_names(metrics: Metrics) -> set[str]:
    """Every series name the registry can serve (counter x_total, histogram x_bucket/_sum/_count)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    return {family.name + suffix for family in metrics.registry.collect()
            for suffix in suffixes.get(family.type, ("",))}


def _remove(metric: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


METRICS = Metrics(process=True)


def serve(address: str, metrics: Metrics = METRICS) -> tuple[str, int]:
    """Serve /metrics on HOST:PORT (a thread). Returns the bound address (port 0 picks a free one)."""
    host, _, port = address.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=metrics.registry)
    bound = server.server_address
    return str(bound[0]), int(bound[1])
