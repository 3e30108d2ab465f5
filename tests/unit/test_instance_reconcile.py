"""instance.reconcile against the in-memory API server: converge, heal, and write nothing when
nothing changed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from coai_operator import constants
from coai_operator.conditions import get_condition
from coai_operator.instance.reconcile import Outcome, owner_of, reconcile
from tests.unit.fake_kube import FakeKube

Obj = dict[str, Any]
NS = "ns"
SPEC: Obj = {"version": "3.11.2", "database": {"host": "db", "passwordSecretRef": {"name": "coai-db"}}}


def instance(spec: Obj | None = None, status: Obj | None = None) -> Obj:
    body: Obj = {"apiVersion": constants.API_VERSION, "kind": constants.INSTANCE_KIND,
                 "metadata": {"name": "chat", "namespace": NS, "generation": 1}, "spec": spec or SPEC}
    if status:
        body["status"] = status
    return body


def secret(name: str = "coai-db", **data: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "data": data or {"password": "cHc="}}


@pytest.fixture
def fake() -> FakeKube:
    kube = FakeKube()
    kube.put(secret())
    kube.put(instance())
    return kube


def run(fake: FakeKube) -> Outcome:
    fake.stats.reads = fake.stats.writes = 0
    body = fake.get(constants.API_VERSION, constants.INSTANCE_KIND, NS, "chat")
    assert body is not None
    return reconcile(body, fake)  # type: ignore[arg-type]


def status(fake: FakeKube) -> Obj:
    return fake.stored(constants.INSTANCE_KIND, NS, "chat").get("status", {})


def mark_available(fake: FakeKube) -> None:
    dep = fake.stored("Deployment", NS, "chat")
    replicas = dep["spec"]["replicas"]
    dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": replicas,
                     "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}


def set_spec(fake: FakeKube, spec: Obj) -> None:
    body = fake.stored(constants.INSTANCE_KIND, NS, "chat")
    body["spec"] = spec
    body["metadata"]["generation"] += 1


def test_first_reconcile_creates_everything_then_a_second_makes_no_write(fake: FakeKube) -> None:
    first = run(fake)
    assert first.problem is None
    assert len(first.changed) == 6
    kinds = {k[0] for k in fake.objects}
    assert {"PersistentVolumeClaim", "ConfigMap", "Deployment", "Service"} <= kinds
    assert status(fake)["phase"] == "Progressing"
    mark_available(fake)
    assert run(fake).phase == "Ready"
    assert status(fake)["version"] == "3.11.2"

    snapshot = copy.deepcopy(fake.objects)
    again = run(fake)
    assert again.stats.writes == 0
    assert again.changed == []
    # The CoaiInstance, its Secret, each of the 6 children, and the 2 managed-Redis leftover checks.
    assert again.stats.reads == 1 + 1 + 6 + 2
    assert fake.objects == snapshot


def test_missing_secret_is_degraded_without_touching_children_and_heals(fake: FakeKube) -> None:
    fake.objects.pop(("Secret", NS, "coai-db"))
    outcome = run(fake)
    assert outcome.retry
    assert outcome.problem is not None
    assert outcome.problem.reason == "SecretNotFound"
    assert outcome.problem.message == "Secret coai-db does not exist in namespace ns (spec.database.passwordSecretRef)"
    assert not [k for k in fake.objects if k[0] in ("Deployment", "ConfigMap", "Service")]
    s = status(fake)
    assert s["phase"] == "Degraded"
    ready = get_condition(s["conditions"], "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    # Same problem again: no new status write.
    assert run(fake).stats.writes == 0

    fake.put(secret())
    healed = run(fake)
    assert healed.problem is None
    assert ("Deployment", NS, "chat") in fake.objects
    assert status(fake)["phase"] == "Progressing"


def test_missing_secret_key_names_the_key(fake: FakeKube) -> None:
    fake.put(secret(other="eA=="))
    outcome = run(fake)
    assert outcome.problem is not None
    assert outcome.problem.reason == "SecretKeyNotFound"
    assert "'password'" in outcome.problem.message


def test_invalid_spec_is_degraded_and_not_retried(fake: FakeKube) -> None:
    set_spec(fake, {**SPEC, "redis": {"host": "r", "managed": {"enabled": True}}})
    outcome = run(fake)
    assert outcome.problem is not None
    assert outcome.problem.reason == "ConflictingRedisConfig"
    assert not outcome.retry  # only a spec edit fixes it, and that triggers a reconcile anyway


def test_a_deleted_child_is_recreated_and_an_edited_one_restored(fake: FakeKube) -> None:
    run(fake)
    fake.objects.pop(("Deployment", NS, "chat"))
    fake.stored("Service", NS, "chat")["metadata"]["labels"][constants.LABEL_MANAGED_BY] = "me"
    outcome = run(fake)
    assert sorted(outcome.changed) == ["created Deployment ns/chat", "updated Service ns/chat"]
    assert fake.stored("Service", NS, "chat")["metadata"]["labels"][constants.LABEL_MANAGED_BY] == "coai-operator"


def test_version_and_config_changes_update_only_what_they_must(fake: FakeKube) -> None:
    run(fake)
    set_spec(fake, {**SPEC, "version": "3.12.0", "config": {"DEBUG": "false"}})
    outcome = run(fake)
    assert sorted(outcome.changed) == ["updated ConfigMap ns/chat-env", "updated Deployment ns/chat"]
    dep = fake.stored("Deployment", NS, "chat")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "programzmh/chatnio:3.12.0"


def test_maintenance_scales_to_zero_and_back(fake: FakeKube) -> None:
    run(fake)
    set_spec(fake, {**SPEC, "maintenance": {"enabled": True, "message": "brb"}})
    run(fake)
    assert fake.stored("Deployment", NS, "chat")["spec"]["replicas"] == 0
    mark_available(fake)
    run(fake)
    assert status(fake)["phase"] == "Maintenance"
    set_spec(fake, SPEC)
    run(fake)
    assert fake.stored("Deployment", NS, "chat")["spec"]["replicas"] == 1


def test_a_migration_drives_the_instance_through_its_spec(fake: FakeKube) -> None:
    run(fake)
    mark_available(fake)
    run(fake)
    body = fake.stored(constants.INSTANCE_KIND, NS, "chat")
    body["status"].update(activeMigration="m1", schemaVersion="3.11.2")
    # What the migration controller patches: maintenance on, then config, then the new version.
    set_spec(fake, {**SPEC, "maintenance": {"enabled": True, "message": "Upgrading"}})
    run(fake)
    assert fake.stored("Deployment", NS, "chat")["spec"]["replicas"] == 0
    mark_available(fake)
    run(fake)
    assert status(fake)["phase"] == "Migrating"
    set_spec(fake, {**SPEC, "version": "3.12.0", "config": {"X": "1"}})
    run(fake)
    dep = fake.stored("Deployment", NS, "chat")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "programzmh/chatnio:3.12.0"
    assert fake.stored("ConfigMap", NS, "chat-env")["data"]["X"] == "1"
    mark_available(fake)
    run(fake)
    s = status(fake)
    # What the migration waits for: Ready, at the target version, for the current generation.
    assert s["phase"] == "Migrating"
    assert s["version"] == "3.12.0"
    assert s["observedGeneration"] == fake.stored(constants.INSTANCE_KIND, NS, "chat")["metadata"]["generation"]
    ready = get_condition(s["conditions"], "Ready")
    assert ready is not None and ready["status"] == "True"
    assert (s["activeMigration"], s["schemaVersion"]) == ("m1", "3.11.2")  # never overwritten
    body["status"].pop("activeMigration")
    run(fake)
    assert status(fake)["phase"] == "Ready"


def test_switching_managed_redis_off_removes_its_deployment_and_service(fake: FakeKube) -> None:
    set_spec(fake, {**SPEC, "redis": {"managed": {"enabled": True}}})
    run(fake)
    assert ("Deployment", NS, "chat-redis") in fake.objects
    set_spec(fake, SPEC)
    # The fake has no garbage collector; ownership is what makes them ours.
    outcome = run(fake)
    assert ("Deployment", NS, "chat-redis") not in fake.objects
    assert ("Service", NS, "chat-redis") not in fake.objects
    assert ("PersistentVolumeClaim", NS, "chat-redis-data") in fake.objects  # retained
    assert "deleted Deployment ns/chat-redis" in outcome.changed


def test_apply_failure_is_reported_and_retried(fake: FakeKube, monkeypatch: pytest.MonkeyPatch) -> None:
    from coai_operator.kube import KubeError

    original = fake.create

    def refuse_services(obj: Obj) -> Obj:
        if obj["kind"] == "Service":
            raise KubeError(403, "Forbidden", 'POST Service ns/chat: services is forbidden (HTTP 403)')
        return original(obj)

    monkeypatch.setattr(fake, "create", refuse_services)
    outcome = run(fake)
    assert outcome.retry
    assert outcome.problem is not None and outcome.problem.reason == "ApplyFailed"
    assert ("Deployment", NS, "chat") in fake.objects  # the rest was still applied
    assert status(fake)["phase"] == "Degraded"


def test_being_deleted_is_left_alone(fake: FakeKube) -> None:
    fake.stored(constants.INSTANCE_KIND, NS, "chat")["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    outcome = run(fake)
    assert outcome.skipped
    assert outcome.stats.writes == 0


def test_owner_of_children() -> None:
    ref = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "name": "chat", "uid": "u"}
    assert owner_of({"metadata": {"ownerReferences": [ref]}}, "Deployment") == "chat"
    labels = {constants.LABEL_MANAGED_BY: "coai-operator", constants.LABEL_INSTANCE: "chat",
              constants.LABEL_COMPONENT: "storage"}
    assert owner_of({"metadata": {"labels": labels}}, "PersistentVolumeClaim") == "chat"
    assert owner_of({"metadata": {"labels": {**labels, constants.LABEL_COMPONENT: "backup"}}},
                    "PersistentVolumeClaim") is None
    assert owner_of({"metadata": {"labels": labels}}, "ConfigMap") is None
