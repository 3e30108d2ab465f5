"""instance.status: phase, conditions and the status patch, computed from observations."""

from __future__ import annotations

from typing import Any

import pytest

from coai_operator import constants
from coai_operator.conditions import get_condition
from coai_operator.instance import status as st
from coai_operator.instance.spec import Problem

Obj = dict[str, Any]
NOW = "2025-01-01T00:00:00Z"
LATER = "2025-01-01T01:00:00Z"
ENDPOINT = "http://chat.ns.svc:80"


def deployment(*, version: str = "3.11.2", replicas: int = 1, generation: int = 2, observed: int = 2,
               updated: int = 1, ready: int = 1, available: int = 1, total: int = 1,
               progressing: tuple[str, str] = ("True", "NewReplicaSetAvailable")) -> Obj:
    return {
        "metadata": {"name": "chat", "generation": generation},
        "spec": {
            "replicas": replicas,
            "template": {"metadata": {"labels": {constants.LABEL_VERSION: version}},
                         "spec": {"containers": [{"name": "coai", "image": f"programzmh/chatnio:{version}"}]}},
        },
        "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                   "readyReplicas": ready, "availableReplicas": available,
                   "conditions": [{"type": "Progressing", "status": progressing[0], "reason": progressing[1]}]},
    }


def compute(current: Obj | None = None, dep: Obj | None = None, **kwargs: Any) -> Obj:
    return st.compute(current=current, generation=4, endpoint=ENDPOINT, deployment=dep, now=NOW, **kwargs)


def cond(status: Obj, type_: str) -> Obj:
    found = get_condition(status["conditions"], type_)
    assert found is not None
    return found


def test_no_deployment_yet_is_pending() -> None:
    status = compute(None, None)
    assert status["phase"] == "Pending"
    assert cond(status, "Ready")["status"] == "False"
    assert cond(status, "Ready")["reason"] == "DeploymentMissing"
    assert status["endpoint"] == ENDPOINT
    assert status["observedGeneration"] == 4
    assert status["version"] is None


def test_complete_rollout_is_ready_with_version_and_image() -> None:
    status = compute({}, deployment())
    assert status["phase"] == "Ready"
    assert status["version"] == "3.11.2"
    assert status["image"] == "programzmh/chatnio:3.11.2"
    assert status["readyReplicas"] == 1
    ready = cond(status, "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "Available", 4)
    assert cond(status, "Progressing")["status"] == "False"
    assert cond(status, "Progressing")["reason"] == "RolloutComplete"
    assert cond(status, "Degraded")["status"] == "False"


def test_rolling_out_keeps_the_running_version_until_done() -> None:
    before = compute({}, deployment(version="3.11.2"))
    rolling = compute(before, deployment(version="3.12.0", generation=3, observed=3, updated=0, ready=0,
                                         available=0, progressing=("True", "ReplicaSetUpdated")))
    assert rolling["phase"] == "Progressing"
    assert rolling["version"] == "3.11.2"
    assert cond(rolling, "Ready")["status"] == "False"
    assert cond(rolling, "Ready")["reason"] == "RollingOut"
    assert cond(rolling, "Progressing")["status"] == "True"
    done = compute(rolling, deployment(version="3.12.0", generation=3, observed=3))
    assert done["phase"] == "Ready"
    assert done["version"] == "3.12.0"


def test_deployment_not_yet_observed_is_progressing() -> None:
    status = compute({}, deployment(generation=3, observed=2))
    assert status["phase"] == "Progressing"
    assert cond(status, "Progressing")["status"] == "True"


def test_progress_deadline_exceeded_is_degraded() -> None:
    status = compute({}, deployment(updated=1, ready=0, available=0, progressing=("False", "ProgressDeadlineExceeded")))
    assert status["phase"] == "Degraded"
    assert cond(status, "Degraded")["status"] == "True"
    assert cond(status, "Degraded")["reason"] == "ProgressDeadlineExceeded"
    assert cond(status, "Ready")["reason"] == "ProgressDeadlineExceeded"


def test_pods_failing_after_being_ready_is_degraded_but_first_start_is_not() -> None:
    ready = compute({}, deployment())
    failing = compute(ready, deployment(ready=0, available=0))
    assert failing["phase"] == "Degraded"
    assert cond(failing, "Degraded")["reason"] == "PodsUnavailable"
    first_start = compute({}, deployment(ready=0, available=0, progressing=("True", "ReplicaSetUpdated")))
    assert first_start["phase"] == "Progressing"
    assert cond(first_start, "Degraded")["status"] == "False"


def test_spec_problem_is_degraded_with_the_reason_and_message() -> None:
    problem = Problem("SecretNotFound",
                      "Secret coai-db does not exist in namespace x (spec.database.passwordSecretRef)")
    status = compute({}, None, problem=problem)
    assert status["phase"] == "Degraded"
    for type_, expected in (("Ready", "False"), ("Degraded", "True"), ("Progressing", "False")):
        c = cond(status, type_)
        assert c["status"] == expected
        assert c["reason"] == "SecretNotFound"
        assert "coai-db" in c["message"]


def test_a_problem_keeps_reporting_the_running_pods() -> None:
    running = compute({}, deployment())
    status = compute(running, deployment(), problem=Problem("SecretNotFound", "gone"))
    assert status["version"] == "3.11.2"
    assert status["readyReplicas"] == 1


def test_maintenance_reports_phase_and_message() -> None:
    status = compute({}, deployment(replicas=0, updated=0, ready=0, available=0, total=0),
                     maintenance=True, maintenance_message="Upgrading, back soon")
    assert status["phase"] == "Maintenance"
    ready = cond(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Maintenance")
    assert "Upgrading, back soon" in ready["message"]
    assert cond(status, "Degraded")["status"] == "False"


def test_maintenance_while_still_scaling_down() -> None:
    status = compute({}, deployment(replicas=0, updated=0, ready=1, available=1, total=1), maintenance=True)
    assert status["phase"] == "Maintenance"


def test_replicas_zero_without_maintenance() -> None:
    status = compute({}, deployment(replicas=0, updated=0, ready=0, available=0, total=0))
    assert status["phase"] == "Pending"
    assert cond(status, "Ready")["reason"] == "ScaledToZero"


def test_active_migration_means_migrating() -> None:
    current = {"activeMigration": "up-to-3-12", "schemaVersion": "3.11.2"}
    status = compute(current, deployment(replicas=0, updated=0, ready=0, available=0, total=0), maintenance=False)
    assert status["phase"] == "Migrating"
    assert cond(status, "Ready")["reason"] == "Migrating"
    assert "up-to-3-12" in cond(status, "Ready")["message"]
    # Available during a migration is still reported as such.
    assert cond(compute(current, deployment()), "Ready")["status"] == "True"


def test_patch_never_touches_fields_of_the_migration_controller() -> None:
    current = {"activeMigration": "m1", "schemaVersion": "3.11.2", "phase": "Ready"}
    desired = compute(current, deployment())
    patch = st.patch(current, desired)
    assert patch is not None
    assert "activeMigration" not in patch
    assert "schemaVersion" not in patch
    assert set(patch) <= set(st.OWNED_FIELDS)


def test_recomputing_the_same_state_needs_no_write() -> None:
    first = compute({}, deployment())
    current = {**first, "schemaVersion": "3.11.2"}
    again = st.compute(current=current, generation=4, endpoint=ENDPOINT, deployment=deployment(), now=LATER)
    assert st.patch(current, again) is None
    assert cond(again, "Ready")["lastTransitionTime"] == NOW


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = compute({}, deployment())
    rolling = st.compute(current=first, generation=5, endpoint=ENDPOINT, now=LATER,
                         deployment=deployment(generation=3, observed=3, updated=0, ready=0, available=0,
                                               progressing=("True", "ReplicaSetUpdated")))
    assert cond(rolling, "Ready")["lastTransitionTime"] == LATER
    assert cond(rolling, "Degraded")["lastTransitionTime"] == NOW  # still False
    assert cond(rolling, "Ready")["observedGeneration"] == 5


@pytest.mark.parametrize("phase_input", [
    {"dep": None},
    {"dep": deployment()},
    {"dep": deployment(), "problem": Problem("ApplyFailed", "x")},
])
def test_conditions_are_kstatus_shaped(phase_input: Obj) -> None:
    status = compute({}, phase_input["dep"], problem=phase_input.get("problem"))
    assert [c["type"] for c in status["conditions"]] == ["Degraded", "Progressing", "Ready", "Reconciling", "Stalled",
                                                         "UpgradePending"]
    by_type = {c["type"]: c["status"] for c in status["conditions"]}
    assert by_type["Stalled"] == by_type["Degraded"]  # kstatus: Stalled=True means Failed
    for c in status["conditions"]:
        assert c["status"] in ("True", "False")
        assert c["reason"][0].isupper() and c["reason"].isalnum()
        assert c["message"]
        assert c["lastTransitionTime"] == NOW
        assert c["observedGeneration"] == 4


def test_a_render_bug_is_reported_as_an_operator_error_not_as_the_users_spec(monkeypatch) -> None:
    from coai_operator.instance import reconcile as rec
    from tests.unit.fakekube import FakeKube

    def broken(*args, **kwargs):
        raise KeyError("image")

    monkeypatch.setattr(rec.r, "render", broken)
    kube = FakeKube()
    body = kube.put({"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance",
                     "metadata": {"name": "chat", "namespace": "apps"},
                     "spec": {"version": "1.8.0", "database": {"host": "db"}}})
    rec.reconcile(body, kube)
    status = kube.objects[("CoaiInstance", "apps", "chat")].get("status") or {}
    reasons = {c["type"]: c.get("reason") for c in status.get("conditions") or []}
    assert "OperatorError" in reasons.values(), status
    assert "InvalidSpec" not in reasons.values()
