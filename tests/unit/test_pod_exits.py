"""kube/jobpods.PodExits and exited_cleanly: a pod the watch saw exit 0 lets a Job step end while
the Job still counts the pod ready; the hint never ends a step the pods do not confirm."""

from __future__ import annotations

from typing import Any

from coai_operator.kube.jobpods import PodExits, exited_cleanly
from tests.unit.fakekube import FakeKube


def pod(exit_codes: list[int | None], job: str | None = "m1-migrate") -> dict[str, Any]:
    statuses = [{"name": f"c{i}", "state": {"running": {}} if code is None else {"terminated": {"exitCode": code}}}
                for i, code in enumerate(exit_codes)]
    labels = {"job-name": job} if job else {}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "m1-migrate-x", "namespace": "apps",
                                                             "labels": labels},
            "status": {"containerStatuses": statuses}}


def test_only_a_pod_whose_every_container_exited_0_is_noted() -> None:
    exits = PodExits()
    assert not exits.note(pod([None]))
    assert not exits.note(pod([0, 1]))
    assert not exits.note(pod([0, None]))
    assert not exits.note(pod([0], job=None))  # not a Job's pod
    assert not exits.note({"metadata": {"labels": {"job-name": "j"}}, "status": {}})  # no containers yet
    assert ("apps", "m1-migrate") not in exits
    assert exits.note(pod([0, 0]))
    assert ("apps", "m1-migrate") in exits


def test_the_hint_is_bounded_and_forgets_the_oldest() -> None:
    exits = PodExits(limit=2)
    for name in ("a", "b", "c"):
        exits.note(pod([0], job=name))
    assert ("apps", "a") not in exits
    assert ("apps", "b") in exits and ("apps", "c") in exits


JOB_READY = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "m1-migrate", "namespace": "apps"},
             "status": {"active": 1, "ready": 1}}


def test_a_ready_job_is_read_through_its_pods_once_the_watch_saw_the_exit() -> None:
    kube = FakeKube()
    kube.put(pod([0]))
    exits = PodExits()
    assert exited_cleanly(kube, JOB_READY, exits) is None  # not seen: the Job's ready count decides
    reads = kube.stats.reads
    exits.note(pod([0]))
    found = exited_cleanly(kube, JOB_READY, exits)
    assert found is not None and found[0]["metadata"]["name"] == "m1-migrate-x"
    assert kube.stats.reads > reads


def test_the_hint_never_overrides_what_the_pods_say() -> None:
    kube = FakeKube()
    kube.put(pod([None]))  # the pod read now still runs (e.g. a retry's new pod)
    exits = PodExits()
    exits.note(pod([0]))
    assert exited_cleanly(kube, JOB_READY, exits) is None
    finished = {**JOB_READY, "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}}
    assert exited_cleanly(kube, finished, exits) is None  # the Job's own conditions decide
