"""An engine Job counts as succeeded at the Job controller's interim SuccessCriteriaMet (Kubernetes
>= 1.31), a second before Complete; a failure still waits for Failed (backup/controller.job_state;
the migration's side is in test_migration_machine)."""

from __future__ import annotations

import json

import pytest

from coai_operator.backup.controller import job_state
from tests.unit.fakekube import FakeKube


def world(conditions: list[str], result: dict | None) -> FakeKube:
    kube = FakeKube()
    kube.put({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "b1-job", "namespace": "apps"},
              "status": {"conditions": [{"type": c, "status": "True"} for c in conditions]}})
    state = {"terminated": {"exitCode": 0, "message": json.dumps(result)}} if result else {"running": {}}
    kube.put({"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "b1-job-x", "namespace": "apps", "labels": {"job-name": "b1-job"}},
              "status": {"containerStatuses": [{"name": "engine", "state": state}]}})
    return kube


@pytest.mark.parametrize(("conditions", "result", "expected"), [
    (["SuccessCriteriaMet"], {"ok": True, "location": "s3://b/x"}, "complete"),
    (["SuccessCriteriaMet", "Complete"], {"ok": True}, "complete"),
    (["SuccessCriteriaMet"], None, "running"),  # the result line is not readable yet: Complete brings it
    (["FailureTarget"], {"ok": False, "error": "boom"}, "running"),  # its pod may still run
    (["FailureTarget", "Failed"], {"ok": False, "error": "boom"}, "failed"),
    ([], None, "running"),
])
def test_job_state(conditions: list[str], result: dict | None, expected: str) -> None:
    state, found = job_state(world(conditions, result), "apps", "b1-job")
    assert state == expected
    if expected == "complete":
        assert found == result
