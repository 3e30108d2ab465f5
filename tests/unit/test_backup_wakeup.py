"""A running CoaiBackup's daemon ticks again when its Job or its engine pod changes, and an
engine pod's exit wakes the migration waiting on that Job (migration/handlers.job_pod_changed)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from coai_operator.backup import handlers as backup_handlers
from coai_operator.backup.jobs import LABEL_OWNER
from coai_operator.kube import jobpods
from coai_operator.migration import handlers as migration_handlers
from coai_operator.migration.names import LABEL_MIGRATION
from coai_operator.migration.wakeup import BACKUP_WAKEUPS, WAKEUPS
from tests.unit.test_migration_wakeup import drive_with_events


def engine_pod(exit_code: int | None, labels: dict[str, str]) -> dict[str, Any]:
    state = {"running": {}} if exit_code is None else {"terminated": {"exitCode": exit_code}}
    return {"metadata": {"namespace": "ns", "name": "job-1-x", "labels": {"job-name": "job-1", **labels}},
            "status": {"containerStatuses": [{"name": "engine", "state": state}]}}


def test_an_exited_engine_pod_wakes_its_migration_and_is_noted(monkeypatch) -> None:
    exits = jobpods.PodExits()
    monkeypatch.setattr(migration_handlers, "POD_EXITS", exits)

    async def scenario() -> tuple[bool, bool]:
        woken = WAKEUPS.register("ns", "to-2")
        try:
            await migration_handlers.job_pod_changed(body=engine_pod(None, {LABEL_MIGRATION: "to-2"}))
            running = woken.is_set()
            await migration_handlers.job_pod_changed(body=engine_pod(1, {LABEL_MIGRATION: "to-2"}))
            failed = woken.is_set()  # a failure waits for the Job's Failed condition
            await migration_handlers.job_pod_changed(body=engine_pod(0, {LABEL_MIGRATION: "to-2"}))
            return running or failed, woken.is_set()
        finally:
            WAKEUPS.forget("ns", "to-2")

    early, woken = asyncio.run(scenario())
    assert not early and woken
    assert ("ns", "job-1") in exits


def test_an_exited_backup_pod_wakes_its_backup() -> None:
    async def scenario() -> bool:
        woken = BACKUP_WAKEUPS.register("ns", "nightly-1")
        try:
            await migration_handlers.job_pod_changed(body=engine_pod(0, {LABEL_OWNER: "nightly-1"}))
            return woken.is_set()
        finally:
            BACKUP_WAKEUPS.forget("ns", "nightly-1")

    assert asyncio.run(scenario())


def test_the_backup_daemon_ticks_again_as_soon_as_its_job_changes(monkeypatch) -> None:
    ticks: list[float] = []
    monkeypatch.setattr(backup_handlers, "BACKUP_TICK_SECONDS", 30.0)
    monkeypatch.setattr(backup_handlers, "_write_status", lambda *_: ticks.append(time.monotonic()))
    job = {"metadata": {"namespace": "ns", "name": "nightly-1-backup", "labels": {LABEL_OWNER: "nightly-1"}}}

    drive_with_events(backup_handlers.backup_daemon, {"metadata": {"namespace": "ns", "name": "nightly-1"}},
                      backup_handlers.backup_job_changed, job, ticks)
    assert len(ticks) >= 3
    assert ticks[2] - ticks[0] < 10  # two 30 s looks would take a minute
    assert BACKUP_WAKEUPS.waiting() == set()


def test_the_backup_daemon_runs_only_while_the_backup_runs() -> None:
    assert backup_handlers._backup_running(body={"status": {"phase": "Running"}, "metadata": {}})
    assert backup_handlers._backup_running(body={"metadata": {}})  # new: no status yet
    assert not backup_handlers._backup_running(body={"status": {"phase": "Completed"}, "metadata": {}})
    assert not backup_handlers._backup_running(body={"status": {"phase": "Failed"}, "metadata": {}})
    assert not backup_handlers._backup_running(body={"status": {"phase": "Running"},
                                                     "metadata": {"deletionTimestamp": "2026-12-02T00:00:00Z"}})
