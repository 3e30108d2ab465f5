"""backup/controller.job_state: a backup Job ends when the Job says so, or a second earlier when
its engine container has already exited 0 (kube/jobpods.exited_cleanly); a non-zero exit waits
for the Job's Failed condition."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coai_operator.backup.controller import job_state
from tests.unit.fakekube import FakeKube


def world(job_status: dict[str, Any], exit_code: int | None, result: dict[str, Any] | None) -> FakeKube:
    kube = FakeKube()
    kube.put({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "b1", "namespace": "apps"},
              "status": job_status})
    state = {"running": {}} if exit_code is None else {
        "terminated": {"exitCode": exit_code, "message": json.dumps(result) if result else ""}}
    kube.put({"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "b1-x", "namespace": "apps", "labels": {"job-name": "b1"}},
              "status": {"containerStatuses": [{"name": "engine", "state": state}]}})
    return kube


DONE = {"ok": True, "location": "s3://b/x"}
FAILED = {"ok": False, "error": "boom"}


@pytest.mark.parametrize(("job_status", "exit_code", "result", "expected"), [
    ({"active": 1, "ready": 1}, None, None, "running"),
    ({"active": 1, "ready": 0}, 0, DONE, "complete"),  # exited, the Job not updated yet
    ({"active": 1, "ready": 0}, 1, FAILED, "running"),  # a failure waits for Failed
    ({"active": 1, "ready": 0}, None, None, "running"),  # not started yet
    ({"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}, 0, DONE, "complete"),
    ({"conditions": [{"type": "Failed", "status": "True"}], "failed": 1}, 1, FAILED, "failed"),
])
def test_job_state(job_status: dict[str, Any], exit_code: int | None, result: dict[str, Any] | None,
                   expected: str) -> None:
    state, found = job_state(world(job_status, exit_code, result), "apps", "b1")
    assert state == expected
    if expected != "running":
        assert found == result
