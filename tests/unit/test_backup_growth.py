"""The preflight capacity refusal grows the destination PVC when its StorageClass allows it, then the
backup runs again in a new Job; otherwise it fails with both numbers (backup/growth.py, controller.py)."""

from __future__ import annotations

import json

import pytest

from coai_operator.backup import controller, growth
from tests.unit.fakekube import FakeKube

NS = "apps"
GI = 1 << 30
REFUSAL = {"ok": False, "reason": "InsufficientSpace", "needBytes": 30 * GI, "freeBytes": 5 * GI,
           "error": "not enough space at /backup/apps/b1: ... (30.0 GiB in the worst case), but only 5.0 GiB is free"}


def world(allow: bool | None = True) -> FakeKube:
    kube = FakeKube()
    kube.put({"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "metadata": {"name": "chat", "namespace": NS},
              "spec": {"version": "1.8.0", "database": {"host": "db"}}})
    kube.put({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "bk", "namespace": NS},
              "spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "20Gi"}}},
              "status": {"capacity": {"storage": "20Gi"}}})
    if allow is not None:
        kube.put({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "fast"},
                  "allowVolumeExpansion": allow})
    kube.put({"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiBackup", "metadata": {"name": "b1", "namespace": NS},
              "spec": {"instanceRef": {"name": "chat"}, "include": ["database"],
                       "destination": {"pvc": {"name": "bk"}}}})
    return kube


def tick(kube: FakeKube) -> tuple[dict, list]:
    backup = kube.objects[("CoaiBackup", NS, "b1")]
    status, events = controller.reconcile_backup(kube, json.loads(json.dumps(backup)))
    backup["status"] = status
    return status, events


def finish(kube: FakeKube, result: dict) -> str:
    """The Job controller: the one unfinished Job ends with the engine's result."""
    name = next(n for (k, _, n), j in kube.objects.items() if k == "Job" and not j.get("status"))
    ok = result.get("ok", True)
    kube.objects[("Job", NS, name)]["status"] = {"conditions": [{"type": "Complete" if ok else "Failed",
                                                                  "status": "True"}]}
    kube.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-p", "namespace": NS,
              "labels": {"job-name": name}}, "status": {"containerStatuses": [
                  {"state": {"terminated": {"message": json.dumps(result)}}}]}})
    return name


def pvc(kube: FakeKube) -> dict:
    return kube.objects[("PersistentVolumeClaim", NS, "bk")]


def test_a_too_small_pvc_is_grown_and_the_backup_runs_again_in_a_new_job() -> None:
    kube = world()
    tick(kube)
    first = finish(kube, REFUSAL)
    status, events = tick(kube)
    assert status["phase"] == "Running" and status["volumeGrowth"]["to"] == "48Gi"  # 20 + 25 * 1.1, rounded up
    assert pvc(kube)["spec"]["resources"]["requests"]["storage"] == "48Gi"
    assert [r for _, r, _ in events] == ["VolumeGrowing"] and "from 20Gi to 48Gi" in status["message"]
    assert next(c for c in status["conditions"] if c["type"] == "Complete")["reason"] == "GrowingVolume"
    status, _ = tick(kube)  # the volume has not grown yet: no Job
    assert "waiting for PVC bk to grow" in status["message"]
    assert [n for (k, _, n) in kube.objects if k == "Job"] == [first]
    pvc(kube)["status"]["conditions"] = [{"type": "FileSystemResizePending", "status": "True"}]
    status, _ = tick(kube)  # only the filesystem is left: the kubelet grows it when the Job mounts the volume
    second = status["job"]
    assert second != first and "-backup-grown-" in second
    finish(kube, {"ok": True, "artifacts": [{"name": "database.sql.gz", "bytes": 9, "sha256": "0" * 64}]})
    status, _ = tick(kube)
    assert status["phase"] == "Completed", status
    assert len(kube.writes("replace", "PersistentVolumeClaim")) == 1


@pytest.mark.parametrize(("allow", "why"), [(False, "StorageClass fast does not allow volume expansion"),
                                            (None, "StorageClass fast does not exist")])
def test_a_pvc_that_cannot_grow_fails_with_both_numbers_and_why(allow: bool | None, why: str) -> None:
    kube = world(allow)
    tick(kube)
    finish(kube, REFUSAL)
    status, _ = tick(kube)
    assert status["phase"] == "Failed"
    complete = next(c for c in status["conditions"] if c["type"] == "Complete")
    assert complete["reason"] == "InsufficientSpace"
    assert "30.0 GiB" in complete["message"] and "5.0 GiB" in complete["message"] and why in complete["message"]
    assert pvc(kube)["spec"]["resources"]["requests"]["storage"] == "20Gi"


def test_a_second_refusal_after_growing_fails_and_grows_nothing_more() -> None:
    kube = world()
    tick(kube)
    finish(kube, REFUSAL)
    tick(kube)
    pvc(kube)["status"]["capacity"]["storage"] = "48Gi"
    tick(kube)
    finish(kube, REFUSAL)
    status, _ = tick(kube)
    assert status["phase"] == "Failed" and "5.0 GiB is free" in status["message"]
    assert pvc(kube)["spec"]["resources"]["requests"]["storage"] == "48Gi"


def test_a_pvc_that_never_grows_fails_the_backup_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = world()
    tick(kube)
    finish(kube, REFUSAL)
    tick(kube)
    monkeypatch.setattr(controller, "GROW_WAIT_SECONDS", -1)
    status, _ = tick(kube)
    assert status["phase"] == "Failed" and "did not within" in status["message"] and "30.0 GiB" in status["message"]


def test_quantities_and_the_target_size() -> None:
    assert growth.parse_quantity("20Gi") == 20 * GI and growth.parse_quantity("1.5G") == 1_500_000_000
    assert growth.parse_quantity("1048576") == 1 << 20
    with pytest.raises(ValueError):
        growth.parse_quantity("twenty")
    claim = {"spec": {"resources": {"requests": {"storage": "10Gi"}}}, "status": {"capacity": {"storage": "12Gi"}}}
    assert growth.target_size(claim, need=4 * GI, free=1 * GI) == "16Gi"  # 12 + 3.3, rounded up
    assert growth.grown({"status": {"capacity": {"storage": "16Gi"}}}, "16Gi")
    assert not growth.grown({"status": {"capacity": {"storage": "12Gi"}}}, "16Gi") and not growth.grown(None, "1Gi")
