"""`kubectl coai` against the local cluster, and the operator's /metrics while a migration runs:
status, upgrade --dry-run, upgrade, logs, rollback, each as a user runs them (the console script
with the admin kubeconfig), on an instance on a real MariaDB whose Jobs run for real."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from coai_operator.engine.dbconfig import DbConfig
from coai_operator.metrics import MIGRATION_PHASES
from e2e.conftest import Cluster, OperatorProcess
from e2e.helpers import wait_for
from e2e.migration_support import Deployed, deploy_instance, health_endpoint, wait_phase

FINAL = {"Succeeded", "Failed", "RolledBack"}


@pytest.fixture
def deployed(cluster: Cluster, operator: OperatorProcess, namespace: str, db_config: DbConfig) -> Deployed:
    return deploy_instance(cluster, namespace, db_config, version="1.8.0")


def coai(deployed: Deployed, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "coai_operator.plugin.cli", "-n", deployed.namespace, *args],
                          capture_output=True, text=True, env=deployed.cluster.env, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def coai_json(deployed: Deployed, *args: str) -> dict:
    return json.loads(coai(deployed, "-o", "json", *args).stdout)


def scrape(operator: OperatorProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = wait_for(lambda: operator.metrics_url, timeout=30, message="metrics address in the operator log")
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_status_shows_the_instance_its_pods_and_no_migration(deployed: Deployed, operator: OperatorProcess) -> None:
    summary = coai_json(deployed, "status", "chat")
    assert (summary["name"], summary["version"], summary["phase"]) == ("chat", "1.8.0", "Ready")
    assert summary["migration"] is None
    pods = json.loads(deployed.kubectl("get", "pods", "-l", "app.kubernetes.io/instance=chat", "-o", "json").stdout)
    assert sorted(p["name"] for p in summary["pods"]) == sorted(p["metadata"]["name"] for p in pods["items"])
    has_backup_crd = deployed.cluster.kubectl("get", "crd", "coaibackups.coai.dev", check=False).returncode == 0
    assert summary["backupsAvailable"] is has_backup_crd
    text = coai(deployed, "status", "chat").stdout
    assert text.startswith(f"CoaiInstance {deployed.namespace}/chat\n  Version:   1.8.0\n  Phase:     Ready")
    assert "Migration: none" in text
    wait_for(lambda: sample(scrape(operator), "coai_instance_phase", namespace=deployed.namespace,
                            coai_instance="chat", phase="Ready") == 1, timeout=30, message="the phase metric")

    missing = coai(deployed, "status", "nope", check=False)
    assert missing.returncode == 1 and "CoaiInstance nope not found" in missing.stderr


def test_dry_run_prints_the_plan_and_creates_nothing(deployed: Deployed) -> None:
    text = coai(deployed, "upgrade", "chat", "--to", "2.0.0", "--dry-run").stdout
    assert "1.8.0 -> 2.0.0 (dry run: nothing created)" in text
    assert "Path:    1.8.0 -> 1.9.0 -> 2.0.0" in text
    plan = coai_json(deployed, "upgrade", "chat", "--to", "2.0.0", "--dry-run")
    assert plan["steps"][:2] == ["Preflight", "Backup"] and plan["path"] == ["1.8.0-to-1.9.0", "1.9.0-to-2.0.0"]
    assert json.loads(deployed.kubectl("get", "cmig", "-o", "json").stdout)["items"] == []
    refused = coai(deployed, "upgrade", "chat", "--to", "1.6.0", "--dry-run", check=False)
    assert refused.returncode == 1 and "Downgrade" in refused.stderr


def test_upgrade_status_logs_rollback_and_the_metrics_that_follow_them(
        deployed: Deployed, operator: OperatorProcess) -> None:
    ns = deployed.namespace
    labels = {"namespace": ns, "migration": "chat-to-2-0-0", "coai_instance": "chat"}
    before = scrape(operator)
    backups_before = sample(before, "coai_migration_step_duration_seconds_count", step="Backup",
                            result="Succeeded") or 0
    with health_endpoint() as base_url:
        created = coai(deployed, "upgrade", "chat", "--to", "2.0.0").stdout
        assert created.startswith("coaimigration.coai.dev/chat-to-2-0-0 created: chat -> 2.0.0")
        # The app's health route is stood in for by a local server (the app pods are not run here).
        deployed.kubectl("patch", "cmig", "chat-to-2-0-0", "--type=merge",
                         "-p", json.dumps({"spec": {"validation": {"baseURL": base_url}}}))
        seen: list[str] = []

        def finished() -> bool:
            samples = scrape(operator)
            phase = next((p for p in MIGRATION_PHASES if sample(samples, "coai_migration_phase", phase=p,
                                                                **labels) == 1), None)
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
            return phase in FINAL

        wait_for(finished, timeout=300, interval=0.3, message="the migration's phase metric reaches a final phase")
    migration = wait_phase(deployed, "chat-to-2-0-0", FINAL)
    assert migration["status"]["phase"] == "Succeeded", json.dumps(migration["status"], indent=1)
    # The metric moves forward with the migration, never back.
    assert seen[-1] == "Succeeded" and seen == sorted(seen, key=MIGRATION_PHASES.index), seen

    samples = scrape(operator)
    assert sample(samples, "coai_migration_start_timestamp_seconds", **labels) is None  # finished: not stuck
    assert sample(samples, "coai_migration_step_duration_seconds_count", step="Backup",
                  result="Succeeded") == backups_before + 1
    artifacts = migration["status"]["backup"]["artifacts"]
    assert sample(samples, "coai_backup_size_bytes", namespace=ns, coai_instance="chat") == sum(
        a["bytes"] for a in artifacts)
    assert sample(samples, "coai_backup_last_success_timestamp_seconds", namespace=ns, coai_instance="chat") > 0
    assert (sample(samples, "coai_reconcile_total", kind="CoaiInstance", result="ok") or 0) > 0

    summary = coai_json(deployed, "status", "chat")
    assert summary["migration"]["name"] == "chat-to-2-0-0"
    assert [s["phase"] for s in summary["migration"]["steps"]] == ["Succeeded"] * len(migration["status"]["steps"])
    # The migration's backup is its CoaiBackup, listed once.
    assert {"name": migration["status"]["backup"]["name"], "source": "CoaiBackup",
            "phase": "Completed"}.items() <= summary["backups"][0].items()
    assert [b["name"] for b in summary["backups"]].count(migration["status"]["backup"]["name"]) == 1
    text = coai(deployed, "status", "chat").stdout
    assert "CoaiMigration chat-to-2-0-0: 1.8.0 -> 2.0.0, Succeeded" in text
    assert "    [x]  Backup " in text and "[ ]" not in text

    logs = coai_json(deployed, "logs", "chat-to-2-0-0", "--step", "backup")
    assert [e["step"] for e in logs] == ["Backup"]
    assert logs[0]["job"] == next(s["job"] for s in migration["status"]["steps"] if s["name"] == "Backup")
    text = coai(deployed, "logs", "chat-to-2-0-0", "--step", "Backup").stdout
    assert text.startswith("==> Backup (Job ")
    unknown = coai(deployed, "logs", "chat-to-2-0-0", "--step", "Nope", check=False)
    assert unknown.returncode == 1 and "no Job for step 'Nope'" in unknown.stderr

    assert "rollback requested" in coai(deployed, "rollback", "chat-to-2-0-0").stdout
    assert deployed.get("cmig", "chat-to-2-0-0")["spec"]["rollback"]["requested"] is True
    rolled = wait_phase(deployed, "chat-to-2-0-0", {"RolledBack"}, timeout=300)
    assert rolled["status"]["phase"] == "RolledBack"
    again = coai(deployed, "rollback", "chat-to-2-0-0", check=False)
    assert again.returncode == 1 and "already rolled back" in again.stderr
    wait_for(lambda: sample(scrape(operator), "coai_migration_phase", phase="RolledBack", **labels) == 1,
             timeout=30, message="the phase metric follows the rollback")
