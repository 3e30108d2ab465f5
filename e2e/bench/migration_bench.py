"""An e2e CoaiMigration 1.9 → 2.0 on a seeded database, timed, next to the same engine work by hand.

The instance runs at 1.9.0 against a private MariaDB; its database is seeded with `engine
seed-data --version 1.9.0` (100k users * --scale, 5 conversations each, a file per 10 users on
the instance's storage PVC). The CoaiMigration does everything for real, its Jobs as containers
on the local real node, the app as the guide line's stand-in image: Preflight, Backup,
MaintenanceOn, ConfigMigration, Migrate, StorageMigration, Rollout, Validate (database, health,
dataIntegrity). Figures, from status (second resolution):

- total: status.startedAt → completedAt;
- maintenance window: MaintenanceOn.startedAt → Rollout.finishedAt (the app is down).

Baseline in the same run: an identical dataset (same seed) in a second database and directory,
and the same engine commands run by hand, back to back (plan, backup --verify, migrate, migrate-storage,
validate): what the operator's Jobs run, without Jobs, pods or polling. The total is also reported
against the three data commands alone (backup, migrate, migrate-storage), the baseline of earlier runs.
The seed's procedure stops the app before its backup, so its maintenance window is all three
data commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from coai_operator.instance.render import APP_UID
from e2e.bench.common import PYTHON, Report, log, run_timed
from e2e.bench.operator_bench import ReadyWatch
from e2e.instances import STANDIN_IMAGE, STANDIN_RESOURCES
from e2e.localcluster.mariadb import LocalMariaDB
from e2e.migration_support import APP_CONFIG, APP_SECRET, health_endpoint

FULL_USERS = 100_000
NAME = "chat"
# What a Job step's time is made of: the moments its Job and pod first reached each milestone.
JOB_MILESTONES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "job created": ("jobs", lambda o: True),
    "pod created": ("pods", lambda o: True),
    "pod scheduled": ("pods", lambda o: bool(o.spec.node_name)),
    "container running": ("pods", lambda o: any(c.state and (c.state.running or c.state.terminated)
                                                for c in o.status.container_statuses or [])),
    "container exited": ("pods", lambda o: bool(o.status.container_statuses) and all(
        c.state and c.state.terminated for c in o.status.container_statuses)),
    "job finished": ("jobs", lambda o: any(c.type in ("Complete", "Failed") and c.status == "True"
                                           for c in o.status.conditions or [])),
}


class JobTimeline:
    """Watches the namespace's Jobs and their pods; `since(t0)` gives, per Job, each milestone in
    seconds after t0 (monotonic). A Job's pod is found by its job-name label."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        lists = {"jobs": batch.list_namespaced_job, "pods": core.list_namespaced_pod}
        names = {"jobs": lambda o: o.metadata.name, "pods": lambda o: (o.metadata.labels or {}).get("job-name", "")}
        self.watches = {milestone: ReadyWatch(lists[what], namespace, ready, names[what])
                        for milestone, (what, ready) in JOB_MILESTONES.items()}

    def close(self) -> None:
        for w in self.watches.values():
            w.stop()

    def since(self, t0: float) -> dict[str, dict[str, float]]:
        jobs = sorted(self.watches["job created"].first.items(), key=lambda kv: kv[1])
        return {job: {m: round(w.first[job] - t0, 2) for m, w in self.watches.items() if job in w.first}
                for job, _ in jobs}


def step_logs(api: client.ApiClient, namespace: str) -> dict[str, list[str]]:
    """Each step pod's log (the engine's own timestamped lines, no secrets in them): where a slow
    step spent its time, kept in the results because a slow run is rarely repeated at will."""
    core = client.CoreV1Api(api)
    logs: dict[str, list[str]] = {}
    for pod in core.list_namespaced_pod(namespace, label_selector="job-name").items:
        try:
            text = core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=200)
        except ApiException as exc:
            text = f"(no log: {exc.reason})"
        logs[pod.metadata.labels["job-name"]] = text.splitlines()
    return logs


def _at(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except client.ApiException:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def run(report: Report, bench: Any, *, scale: float, users: int | None) -> None:
    users = users or max(100, round(FULL_USERS * scale))
    files = max(10, users // 10)
    assert bench.cluster is not None and bench.api is not None
    log(f"CoaiMigration e2e: 1.9 -> 2.0 with {users} users, {users * 5} conversations, {files} files")
    db = LocalMariaDB(bench.work / "mariadb").start()  # on the node's bridge address too: pods reach it
    served = contextlib.ExitStack()
    base_url = served.enter_context(health_endpoint())  # where the validation Job's pod reaches this host
    op = None
    try:
        with db.admin() as conn, conn.cursor() as cur:
            cur.execute("SET GLOBAL innodb_buffer_pool_size = 2147483648")
        for name in ("chatnio", "manual"):
            db.create_database(name)
        ns = "bench-mig"
        core, custom = client.CoreV1Api(bench.api), client.CustomObjectsApi(bench.api)
        core.create_namespace({"metadata": {"name": ns}})
        core.create_namespaced_secret(ns, {"metadata": {"name": "coai-db"}, "stringData": {"password": db.password}})
        core.create_namespaced_secret(ns, {"metadata": {"name": "coai-app"}, "stringData": APP_SECRET})
        op = bench.operator("coai", ns)
        custom.create_namespaced_custom_object("coai.dev", "v1alpha1", ns, "coaiinstances", {
            "apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "metadata": {"name": NAME},
            # The guide's 1.6 - 2.0 line has no public image: its stand-in app really runs instead.
            "spec": {"version": "1.9.0", "image": STANDIN_IMAGE, "resources": STANDIN_RESOURCES,
                     "healthPath": "/health", "secretRef": {"name": "coai-app"}, "config": dict(APP_CONFIG),
                     "database": {"host": db.host, "port": db.port, "name": "chatnio", "user": db.user,
                                  "passwordSecretRef": {"name": "coai-db"}}}})
        _wait(lambda: (custom.get_namespaced_custom_object("coai.dev", "v1alpha1", ns, "coaiinstances", NAME)
                       .get("status") or {}).get("phase") == "Ready", 300, "the 1.9 instance Ready")
        volume = _wait(lambda: core.read_namespaced_persistent_volume_claim(f"{NAME}-storage", ns).spec.volume_name,
                       60, "the storage PVC bound")
        storage = Path(core.read_persistent_volume(volume).spec.local.path)

        manual_storage = bench.work / "manual-storage"
        seeds = {}
        for database, root in (("chatnio", storage), ("manual", manual_storage)):
            done = run_timed([PYTHON, "-m", "coai_operator.cli", "engine", "seed-data", "--version", "1.9.0",
                              "--users", str(users), "--conversations-per-user", "5", "--files", str(files),
                              "--storage", str(root), "--seed", "bench-mig"], env={**os.environ, **db.env(database)})
            seeds[database] = round(done.seconds, 2)
        for path in [storage, *storage.rglob("*")]:  # as the app writes them: its uid, not root
            os.chown(path, APP_UID, APP_UID, follow_symlinks=False)

        # Baseline: the same engine commands by hand, back to back: the five the migration's Jobs run.
        env = {**os.environ, **db.env("manual")}
        manual: dict[str, float] = {}
        for step, args in (
            ("plan", ["plan", "--target", "2.0.0"]),
            # --verify, as the migration's pinned backup does (backup/jobs.backup_args): restored into
            # a scratch database and compared before anything destructive runs.
            ("backup", ["backup", "--dir", str(bench.work / "manual-backup"), "--storage", str(manual_storage),
                        "--verify"]),
            ("migrate", ["migrate", "--target", "2.0.0"]),
            ("migrate-storage", ["migrate-storage", "--storage", str(manual_storage)]),
            # The migration's Validate arguments (migration/steps._validate_args), the counts from the backup.
            ("validate", ["validate", "--checks", "database,health,dataIntegrity", "--base-url", base_url,
                          "--health-path", "/health", "--timeout", "300", "--row-counts-env", "ROW_COUNTS"]),
        ):
            done = run_timed([PYTHON, "-m", "coai_operator.cli", "engine", *args], env=env)
            manual[step] = done.seconds
            if step == "backup":
                env["ROW_COUNTS"] = json.dumps(done.json()["rowCounts"])

        log("CoaiMigration e2e: applying the migration")
        timeline = served.enter_context(contextlib.closing(JobTimeline(bench.api, ns)))
        applied = time.monotonic()
        custom.create_namespaced_custom_object("coai.dev", "v1alpha1", ns, "coaimigrations", {
            "apiVersion": "coai.dev/v1alpha1", "kind": "CoaiMigration", "metadata": {"name": "to-2"},
            "spec": {"instanceRef": {"name": NAME}, "targetVersion": "2.0.0", "storageMigration": {"enabled": True},
                     "validation": {"baseURL": base_url, "checks": ["database", "health", "dataIntegrity"]}}})

        def finished() -> dict[str, Any] | None:
            obj = custom.get_namespaced_custom_object("coai.dev", "v1alpha1", ns, "coaimigrations", "to-2")
            status = obj.get("status") or {}
            return status if status.get("phase") in ("Succeeded", "Failed", "RolledBack") else None

        status = _wait(finished, 900 + users / 100, "the CoaiMigration to finish")
        observed = time.monotonic() - applied
        steps = {s["name"]: s for s in status.get("steps") or []}
        durations = {name: (_at(s.get("finishedAt")) or 0) - (_at(s.get("startedAt")) or 0)
                     for name, s in steps.items() if s.get("startedAt") and s.get("finishedAt")}
        total = (_at(status.get("completedAt")) or 0) - (_at(status.get("startedAt")) or 0)
        window = None
        if "MaintenanceOn" in steps and "Rollout" in steps:
            window = (_at(steps["Rollout"].get("finishedAt")) or 0) - (_at(steps["MaintenanceOn"].get("startedAt"))
                                                                       or 0)
        report.details["migration_e2e"] = {
            "users": users, "conversations": users * 5, "files": files, "phase": status.get("phase"),
            "message": status.get("message"), "seed_seconds": seeds, "observed_seconds": round(observed, 2),
            "status_total_seconds": total, "maintenance_window_seconds": window, "step_seconds": durations,
            "manual_engine_seconds": {k: round(v, 2) for k, v in manual.items()},
            "job_timeline_seconds_after_apply": timeline.since(applied),
            "job_logs": step_logs(bench.api, ns),
        }
        if status.get("phase") != "Succeeded":
            report.errors.append(f"CoaiMigration e2e ended {status.get('phase')}: {status.get('message')}")
        group = f"migration e2e ({users} users)"
        by_hand = sum(manual.values())
        report.add(group, "CoaiMigration 1.9→2.0 total", total, "s", baseline=by_hand,
                   baseline_name="engine plan+backup+migrate+storage+validate by hand", target="<= 1.2",
                   note=f"phase {status.get('phase')}; apply→{status.get('phase')} observed {observed:.1f}s")
        core_three = manual["backup"] + manual["migrate"] + manual["migrate-storage"]
        report.add(group, "CoaiMigration 1.9→2.0 total, against the three data commands only", total, "s",
                   baseline=core_three, baseline_name="engine backup+migrate+storage by hand")
        report.add(group, "maintenance window (MaintenanceOn→Rollout done)", window, "s", baseline=core_three,
                   baseline_name="seed order: down for backup+migrate+storage")
        for name in ("Preflight", "Backup", "Migrate", "StorageMigration", "Validate"):
            hand = {"Preflight": "plan", "Backup": "backup", "Migrate": "migrate",
                    "StorageMigration": "migrate-storage", "Validate": "validate"}.get(name)
            report.add(group, f"step {name} (Job)", durations.get(name), "s",
                       baseline=manual.get(hand) if hand else None,
                       baseline_name=f"engine {hand} by hand" if hand else "")
        log("CoaiMigration e2e: " + json.dumps({"total": total, "window": window, "steps": durations}))
        for job, moments in report.details["migration_e2e"]["job_timeline_seconds_after_apply"].items():
            log(f"  {job}: " + ", ".join(f"{m} {t:.2f}" for m, t in moments.items()))
        for name, hand, job_prefix in (("Migrate", "migrate", "to-2-migrate-"),
                                       ("StorageMigration", "migrate-storage", "to-2-storage-")):
            if (durations.get(name) or 0) > 2 * manual[hand] + 2:
                log(f"  {name} took {durations[name]:.0f} s against {manual[hand]:.1f} s by hand; its Job's log:")
                for job, lines in report.details["migration_e2e"]["job_logs"].items():
                    if job.startswith(job_prefix):
                        for line in lines:
                            log(f"    {line}")
    finally:
        if op is not None:
            op.stop()
        served.close()
        db.stop()
