"""coai_operator.metrics: the values each update produces, read back from a fresh registry, and the
text the HTTP endpoint serves."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from coai_operator.metrics import Metrics, failure_reason, parse_time, serve, step_label


@pytest.fixture
def m() -> Metrics:
    return Metrics(CollectorRegistry())


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def instance(phase: str | None, name: str = "chat", ns: str = "apps") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "status": {"phase": phase} if phase else {}}


def migration(phase: str, steps: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "apps", "name": "up"}, "spec": {"instanceRef": {"name": "chat"}},
            "status": {"phase": phase, "steps": steps or [], **status}}


T0 = "2026-12-01T08:00:00Z"


def test_reconciles_count_by_kind_and_result_and_time_each_one(m: Metrics) -> None:
    with m.reconcile("CoaiInstance"):
        pass
    with m.reconcile("CoaiInstance") as result:
        result["result"] = "problem"
    with pytest.raises(RuntimeError), m.reconcile("CoaiInstance"):
        raise RuntimeError("boom")
    for result in ("ok", "problem", "error"):
        assert value(m, "coai_reconcile_total", kind="CoaiInstance", result=result) == 1
    assert value(m, "coai_reconcile_duration_seconds_count", kind="CoaiInstance") == 3
    assert value(m, "coai_reconcile_duration_seconds_sum", kind="CoaiInstance") >= 0


def test_instance_phase_is_one_series_per_phase_and_goes_with_the_instance(m: Metrics) -> None:
    m.observe_instance("ADDED", instance(None))
    assert value(m, "coai_instance_phase", namespace="apps", coai_instance="chat", phase="Pending") == 1
    m.observe_instance("MODIFIED", instance("Degraded"))
    assert value(m, "coai_instance_phase", namespace="apps", coai_instance="chat", phase="Degraded") == 1
    assert value(m, "coai_instance_phase", namespace="apps", coai_instance="chat", phase="Pending") == 0
    m.observe_instance("DELETED", instance("Degraded"))
    assert value(m, "coai_instance_phase", namespace="apps", coai_instance="chat", phase="Degraded") is None


def test_migration_phase_start_time_and_steps(m: Metrics) -> None:
    running = migration("Migrating", [
        {"name": "Backup", "phase": "Succeeded", "startedAt": T0, "finishedAt": "2026-12-01T08:00:42Z"},
        {"name": "Migrate-2.0.0", "phase": "Running", "startedAt": "2026-12-01T08:00:42Z"},
    ], startedAt=T0)
    m.observe_migration("ADDED", running)
    labels = {"namespace": "apps", "migration": "up", "coai_instance": "chat"}
    assert value(m, "coai_migration_phase", phase="Migrating", **labels) == 1
    assert value(m, "coai_migration_phase", phase="Succeeded", **labels) == 0
    assert value(m, "coai_migration_start_timestamp_seconds", **labels) == parse_time(T0)
    assert value(m, "coai_migration_step_duration_seconds_count", step="Backup", result="Succeeded") == 1
    assert value(m, "coai_migration_step_duration_seconds_sum", step="Backup", result="Succeeded") == 42
    assert value(m, "coai_migration_step_duration_seconds_bucket", step="Backup", result="Succeeded", le="60.0") == 1
    assert value(m, "coai_migration_step_duration_seconds_bucket", step="Backup", result="Succeeded", le="30.0") == 0

    m.observe_migration("MODIFIED", running)  # the same status again: nothing counted twice
    assert value(m, "coai_migration_step_duration_seconds_count", step="Backup", result="Succeeded") == 1

    running["status"]["steps"][1].update(phase="Failed", finishedAt="2026-12-01T08:01:00Z")
    running["status"]["phase"] = "Failed"
    m.observe_migration("MODIFIED", running)
    assert value(m, "coai_migration_step_duration_seconds_sum", step="Migrate", result="Failed") == 18
    assert value(m, "coai_migration_phase", phase="Failed", **labels) == 1
    assert value(m, "coai_migration_start_timestamp_seconds", **labels) is None  # finished: nothing is stuck

    m.observe_migration("DELETED", running)
    assert value(m, "coai_migration_phase", phase="Failed", **labels) is None
    assert value(m, "coai_migration_step_duration_seconds_count", step="Migrate", result="Failed") == 1


def test_steps_finished_before_the_operator_watched_are_not_counted(m: Metrics) -> None:
    done = migration("Succeeded", [
        {"name": "Backup", "phase": "Succeeded", "startedAt": T0, "finishedAt": "2026-12-01T08:00:42Z"}])
    m.observe_migration(None, done)  # kopf's initial listing after a restart
    m.observe_migration("MODIFIED", done)
    assert value(m, "coai_migration_step_duration_seconds_count", step="Backup", result="Succeeded") is None
    assert value(m, "coai_migration_phase", namespace="apps", migration="up", coai_instance="chat",
                 phase="Succeeded") == 1


def test_a_migration_backup_sets_the_instance_backup_metrics(m: Metrics) -> None:
    backup = {"completedAt": "2026-12-01T08:00:42Z", "artifacts": [{"name": "database.sql", "bytes": 1000},
                                                                   {"name": "storage.tar", "bytes": 24}]}
    m.observe_migration("MODIFIED", migration("Migrating", backup=backup))
    assert value(m, "coai_backup_last_success_timestamp_seconds", namespace="apps", coai_instance="chat") == parse_time(
        "2026-12-01T08:00:42Z")
    assert value(m, "coai_backup_size_bytes", namespace="apps", coai_instance="chat") == 1024


def test_record_backup_keeps_the_newest_and_counts_each_failure_once(m: Metrics) -> None:
    m.record_backup("apps", "chat", succeeded=True, at=200.0, size_bytes=10)
    m.record_backup("apps", "chat", succeeded=True, at=100.0, size_bytes=99)  # an older one, reported late
    assert value(m, "coai_backup_last_success_timestamp_seconds", namespace="apps", coai_instance="chat") == 200
    assert value(m, "coai_backup_size_bytes", namespace="apps", coai_instance="chat") == 10
    m.record_backup("apps", "chat", succeeded=False, at=300.0)
    m.record_backup("apps", "chat", succeeded=False, at=300.0)  # the same failure seen again
    assert value(m, "coai_backup_failures_total", namespace="apps", coai_instance="chat") == 1
    assert value(m, "coai_backup_last_failure_timestamp_seconds", namespace="apps", coai_instance="chat") == 300
    m.observe_instance("DELETED", instance("Ready"))
    assert value(m, "coai_backup_size_bytes", namespace="apps", coai_instance="chat") is None
    assert value(m, "coai_backup_failures_total", namespace="apps", coai_instance="chat") is None


def job(reason: str | None, uid: str = "u1", step: str = "migrate") -> dict[str, Any]:
    conditions = [{"type": "Failed", "status": "True", "reason": reason}] if reason else []
    return {"metadata": {"uid": uid, "labels": {"coai.dev/step": step}}, "status": {"conditions": conditions}}


def test_job_failures_count_each_job_once_by_step_and_reason(m: Metrics) -> None:
    m.observe_job("ADDED", job(None))
    assert value(m, "coai_job_failures_total", step="migrate", reason="BackoffLimitExceeded") is None
    m.observe_job("MODIFIED", job("BackoffLimitExceeded"))
    m.observe_job("MODIFIED", job("BackoffLimitExceeded"))
    m.observe_job(None, job("DeadlineExceeded", uid="u2"))  # failed before this process watched
    m.observe_job("MODIFIED", job("DeadlineExceeded", uid="u2"))
    assert value(m, "coai_job_failures_total", step="migrate", reason="BackoffLimitExceeded") == 1
    assert value(m, "coai_job_failures_total", step="migrate", reason="DeadlineExceeded") is None


def test_labels_stay_bounded() -> None:
    assert step_label("Migrate-2.0.0") == "Migrate"
    assert step_label("migrate-1.9.0-rc.1") == "migrate"
    assert step_label("RollbackRestore") == "RollbackRestore"
    assert failure_reason({"status": {"conditions": [{"type": "Failed", "status": "True",
                                                      "reason": "anything at all / 42"}]}}) == "Unknown"
    assert failure_reason({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) is None
    assert parse_time("not a time") is None and parse_time(None) is None


def test_the_endpoint_serves_the_text_format(m: Metrics) -> None:
    m.observe_instance("ADDED", instance("Ready"))
    host, port = serve("127.0.0.1:0", m)
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'coai_instance_phase{coai_instance="chat",namespace="apps",phase="Ready"} 1.0' in text
    assert "# TYPE coai_reconcile_total counter" in text
