"""The fault matrix: every step of the forward and rollback paths, each fault that can happen there,
ends in its documented end state (docs/migration.md). Every Job runs for real against MariaDB.

Faults: the engine command fails; the step's pod never starts (a nodeSelector no node has: the real
scheduler keeps it Pending); the operator is SIGKILLed while the step runs; the API answers 503.
The triggers come from the operator's test hooks (COAI_TEST_FAULTS=1, annotation
test.coai.dev/fault); everything after the trigger is the real machinery.

All cells run at once, each in its own namespace and database, so the whole matrix costs about as
much as its slowest cell; the two "operator killed" runs kill the one operator under all of them.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import yaml

from coai_operator.instance.upgrade import deployed_version
from e2e.conftest import Cluster, OperatorProcess
from e2e.helpers import wait_for
from e2e.migration_support import (
    Deployed,
    deploy_instance,
    file_digests,
    migration_manifest,
    table_checksums,
)

FINISHED = {"Succeeded", "Failed", "RolledBack"}
# A rollback is forced by failing Validate (the last forward step: everything was changed).
FORCE_ROLLBACK = "Validate=engine-fails"
# 29 cells at once on the 2-core node: small Job requests (or they wait for CPU), and a pod-start
# deadline that fires for the never-scheduled pod of the podStart fault, not for a busy node.
SPEC = {"storageMigration": {"enabled": True}, "validation": {"checks": ["database", "dataIntegrity"]},
        "deadlines": {"podStart": 60}, "rollback": {"mode": "Graceful"},
        "jobTemplate": {"resources": {"requests": {"cpu": "10m", "memory": "96Mi"}, "limits": {"memory": "512Mi"}}}}


@dataclass
class Cell:
    step: str
    fault: str
    expected: str  # Succeeded | Failed (nothing changed) | RolledBack | RollbackFailed
    annotation: str = ""
    kill_steps: tuple[str, ...] = ()
    deployed: Deployed | None = None
    before: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    killed: set[str] = field(default_factory=set)

    @property
    def id(self) -> str:
        return f"{self.step}-{self.fault}".lower()


def matrix() -> list[Cell]:
    cells: list[Cell] = []
    # Forward Job steps: an engine failure or a pod that never starts.
    for step, outcome in (("Preflight", "Failed"), ("Backup", "Failed"), ("Migrate", "RolledBack"),
                          ("StorageMigration", "RolledBack"), ("Validate", "RolledBack")):
        for fault in ("engine-fails", "never-starts"):
            cells.append(Cell(step, fault, outcome, annotation=f"{step}={fault}"))
    # Every forward step: an API error is retried.
    for step in ("Preflight", "Backup", "MaintenanceOn", "ConfigMigration", "Migrate", "StorageMigration",
                 "Rollout", "Validate"):
        cells.append(Cell(step, "api-error", "Succeeded", annotation=f"{step}=api-error"))
    # Rollback Job steps fail: the rollback stops, the lock is kept for a person (RollbackFailed).
    for step in ("RollbackExport", "RollbackRestore"):
        for fault in ("engine-fails", "never-starts"):
            cells.append(Cell(step, fault, "RollbackFailed", annotation=f"{FORCE_ROLLBACK},{step}={fault}"))
    for step in ("RollbackMaintenanceOn", "RollbackExport", "RollbackRestore", "RollbackConfig", "RollbackRollout"):
        cells.append(Cell(step, "api-error", "RolledBack", annotation=f"{FORCE_ROLLBACK},{step}=api-error"))
    # The operator killed once in every step it is seen in: forward, then rollback.
    cells.append(Cell("every forward step", "operator-killed", "Succeeded", kill_steps=(
        "Preflight", "Backup", "MaintenanceOn", "ConfigMigration", "Migrate", "StorageMigration", "Rollout",
        "Validate")))
    cells.append(Cell("every rollback step", "operator-killed", "RolledBack", annotation=FORCE_ROLLBACK, kill_steps=(
        "RollbackMaintenanceOn", "RollbackExport", "RollbackRestore", "RollbackConfig", "RollbackRollout")))
    return cells


@pytest.fixture
def fault_operator(operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """The session's operator, restarted with its test hooks on (and back without them afterwards)."""
    operator.extra_env["COAI_TEST_FAULTS"] = "1"
    operator.restart()
    try:
        yield operator
    finally:
        operator.extra_env.pop("COAI_TEST_FAULTS", None)
        operator.restart()


def snapshot_state(deployed: Deployed) -> dict:
    instance = deployed.get("coai")
    secret = deployed.get("secret", "coai-app").get("data") or {}
    return {
        "tables": table_checksums(deployed.db),
        "files": file_digests(deployed.storage_dir()),
        "secret": {k: base64.b64decode(v).decode() for k, v in secret.items()},
        "env": {k: v for k, v in deployed.get("configmap", "chat-env")["data"].items()},
        "version": deployed_version(instance["status"]),  # what the operator deploys (Git owns spec.version)
    }


def seconds_held(status: dict) -> float:
    def parse(value: str) -> dt.datetime:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))

    if not status.get("startedAt") or not status.get("completedAt"):
        return 0.0
    return (parse(status["completedAt"]) - parse(status["startedAt"])).total_seconds()


def check(cell: Cell) -> None:
    deployed, status = cell.deployed, cell.status
    assert deployed is not None
    failed = next((c for c in status.get("conditions") or [] if c["type"] == "Failed"), {})
    end = "RollbackFailed" if failed.get("status") == "True" and failed.get("reason") == "RollbackFailed" \
        else status.get("phase")
    if end != cell.expected:
        failed_steps = [f"{s['name']}: {s.get('message')}" for s in status.get("steps") or []
                        if s.get("phase") == "Failed"]
        cell.problems.append(f"ended {end}, expected {cell.expected}: {status.get('message')}; "
                             f"failed steps: {failed_steps}")
        return
    instance = deployed.get("coai")
    lock = (instance.get("status") or {}).get("activeMigration")
    if cell.expected == "RollbackFailed":
        if lock != "m":
            cell.problems.append(f"RollbackFailed must keep the lock for a person, holder is {lock!r}")
        return
    if lock:
        cell.problems.append(f"lock still held by {lock}")
    if cell.expected == "Succeeded":
        if instance["status"].get("version") != "2.0.0":
            cell.problems.append(f"instance at {instance['status'].get('version')}, not 2.0.0")
        return
    # Failed (nothing changed) or RolledBack: everything as before.
    wait_for(lambda: deployed.get("coai")["status"].get("phase") == "Ready"
             and deployed.get("configmap", "chat-env")["data"] == cell.before["env"], timeout=60,
             message=f"{cell.id}: instance Ready with its old env")
    after = snapshot_state(deployed)
    for key in ("tables", "files", "secret", "env", "version"):
        if after[key] != cell.before[key]:
            cell.problems.append(f"{key} differs from before the migration")
    if deployed.get("coai")["status"].get("version") != cell.before["version"]:
        cell.problems.append("instance not at its old version")


KILL_LOCK = threading.Lock()  # one operator under all cells: one kill/start at a time
SETUP_SLOTS = threading.Semaphore(6)  # the machine is shared: seed a few databases at a time


def kill_in_steps(operator: OperatorProcess, cell: Cell, stop: threading.Event) -> None:
    """SIGKILL the operator once in each step of `cell.kill_steps` the migration is seen in."""
    assert cell.deployed is not None
    killed = cell.killed
    while not stop.is_set() and killed != set(cell.kill_steps):
        with contextlib.suppress(Exception):
            status = cell.deployed.get("cmig", "m").get("status") or {}
            if status.get("phase") in FINISHED:
                return
            # Running records, not currentStep: the Backup runs beside the Preflight (steps.runs_beside).
            running = {s["name"] for s in status.get("steps") or [] if s.get("phase") == "Running"}
            todo = (running & set(cell.kill_steps)) - killed
            if todo:
                with KILL_LOCK:
                    operator.kill()
                    killed.update(todo)
                    operator.start()
        stop.wait(0.2)


def test_fault_matrix(cluster: Cluster, fault_operator: OperatorProcess, mariadb_server: dict,
                      request: pytest.FixtureRequest) -> None:
    from tests.mariadb import fresh_database

    cells = matrix()
    with contextlib.ExitStack() as stack:
        def setup(cell: Cell) -> None:
            with SETUP_SLOTS:
                setup_one(cell)

        def setup_one(cell: Cell) -> None:
            namespace = f"fm-{cell.id.replace(' ', '-')}"[:50]
            cluster.kubectl("create", "namespace", namespace)
            stack.callback(cluster.kubectl, "delete", "namespace", namespace, "--wait=false", check=False)
            db = stack.enter_context(fresh_database(mariadb_server))
            cell.deployed = deploy_instance(cluster, namespace, db, seed_files=3)
            cell.before = snapshot_state(cell.deployed)

        threads = [threading.Thread(target=setup, args=(c,)) for c in cells]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(c.deployed for c in cells), "every cell was set up"

        for cell in cells:
            body = yaml.safe_load(migration_manifest("m", "2.0.0", **SPEC))
            if cell.annotation:
                body["metadata"]["annotations"] = {"test.coai.dev/fault": cell.annotation}
            assert cell.deployed is not None
            cell.deployed.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        stop = threading.Event()
        killers = [threading.Thread(target=kill_in_steps, args=(fault_operator, c, stop)) for c in cells
                   if c.kill_steps]
        for t in killers:
            t.start()

        def finished() -> bool:
            for cell in cells:
                assert cell.deployed is not None
                status = cell.deployed.get("cmig", "m").get("status") or {}
                if status.get("phase") not in FINISHED:
                    return False
                cell.status.update(status)
            return True

        def unfinished() -> list[str]:
            found = []
            for cell in cells:
                assert cell.deployed is not None
                status = cell.deployed.get("cmig", "m").get("status") or {}
                if status.get("phase") not in FINISHED:
                    running = [f"{s['name']}: {s.get('message')}" for s in status.get("steps") or []
                               if s.get("phase") == "Running"]
                    found.append(f"{cell.id}: {status.get('phase')} {status.get('message')!r}; running {running}")
            return found

        try:
            wait_for(finished, timeout=900, interval=2, message="every cell of the fault matrix finished",
                     explain=unfinished)
        finally:
            stop.set()
            for t in killers:
                t.join()
        for cell in cells:
            check(cell)

        rows = [f"| {c.step} | {c.fault}{' in ' + ', '.join(sorted(c.killed)) if c.killed else ''} | {c.expected} | "
                f"{'ok' if not c.problems else 'WRONG: ' + '; '.join(c.problems)} | {seconds_held(c.status):.0f} |"
                for c in cells]
        table = "\n".join(["| step | fault | end state | result | instance held (s) |",
                           "|---|---|---|---|---|", *rows])
        report = f"\nfault matrix:\n{table}\nlongest hold: {max(seconds_held(c.status) for c in cells):.0f}s"
        # On the terminal even when the test passes (captured output of a passing test is dropped).
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(report)
        else:
            print(report, file=sys.stderr)
        wrong = {c.id: c.problems for c in cells if c.problems}
        assert not wrong, json.dumps(wrong, indent=1)
