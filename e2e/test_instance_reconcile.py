"""instance.reconcile against a real kube-apiserver and real controllers: converge, heal, and write
nothing when nothing changed.

Each test calls `reconcile()` itself, with a `Kube` of its own, on the CoaiInstance as the API
server returns it. Everything around it is real: CRD defaulting and validation, the Deployment
controller, scheduler and the real node that make the pods Ready (the guide-line stand-in app
against a database of the test MariaDB; no status is written by hand),
quota admission (the refused write), deletion held by a finalizer (an instance being deleted).
One spec cannot be stored at all: the CRD's CEL rule refuses conflicting Redis settings, so that
test hands reconcile the stored object with the refused spec in it (an object stored before the
rule existed looks like that).

A running operator. These tests do not start one, but when the whole suite runs, the session-wide
`operator` fixture started by other modules (or an operator installed by the chart tests) is
running and watches every namespace. The objects cannot be hidden from it: its handlers fire on
any CoaiInstance (create/update/resume), on any child that a CoaiInstance owns, and on a periodic
drift check of every instance. So the assertions are written to hold either way:

- What is asserted on *our* reconcile's Outcome (problem, retry, phase, request counts) holds
  whoever else reconciles: both compute the same desired state from the same objects, and "no
  write" is counted on our own Kube, so it means "this reconcile found nothing to change".
- Child and status state is read back from the API server, at points where it has settled.
- `Outcome.changed` (what our reconcile wrote) is compared exactly when no operator has written in
  the test namespace, and otherwise must be a subset of the expected changes (the operator may have
  made some of them first; the state checks show that all of them were made). The same goes for
  the stored status right after a transitional reconcile (Progressing). Operator activity is seen
  on the API server: our Kube writes with its own field manager (DIRECT_MANAGER), so a
  managedFields entry of `coai-operator`, or an Event on a CoaiInstance (only the operator posts
  them: outside kopf, events are only logged), means an operator reconciled here.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from coai_operator import constants
from coai_operator.conditions import get_condition
from coai_operator.engine.dbconfig import DbConfig
from coai_operator.instance.reconcile import Outcome, reconcile
from coai_operator.kube import Kube, KubeError
from e2e.conftest import Cluster
from e2e.helpers import wait_for
from e2e.localcluster.appimages import STANDIN_IMAGE

pytestmark = pytest.mark.e2e

Obj = dict[str, Any]
NAME = "chat"
VERSION, NEXT_VERSION = "1.9.0", "2.0.0"
DIRECT_MANAGER = "coai-e2e-direct"  # the field manager of the reconciles these tests run
TESTER_MANAGER = "coai-e2e-tester"  # the field manager of the test's own edits
CHILD_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap"), ("v1", "PersistentVolumeClaim"),
               ("networking.k8s.io/v1", "NetworkPolicy"))


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    api_client = cluster.api_client()
    yield api_client
    api_client.close()


class Harness:
    """One CoaiInstance `chat` in one namespace, reconciled by direct calls."""

    def __init__(self, cluster: Cluster, api: client.ApiClient, namespace: str, db: DbConfig) -> None:
        self.cluster, self.api, self.ns, self.db = cluster, api, namespace, db
        self.tester = Kube(api=api, field_manager=TESTER_MANAGER)
        self.spec: Obj = {"version": VERSION, "image": STANDIN_IMAGE, "healthPath": "/health", "database": {
            "host": db.host, "port": db.port, "name": db.database, "user": db.user,
            "passwordSecretRef": {"name": "coai-db"}}}

    # -- setup and edits ---------------------------------------------------------------------
    def put_secret(self, name: str = "coai-db", **data: str) -> None:
        self.tester.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": self.ns},
                            "data": data or {"password": base64.b64encode(self.db.password.encode()).decode()}})

    def create_instance(self, spec: Obj | None = None, finalizers: list[str] | None = None) -> Obj:
        meta: Obj = {"name": NAME, "namespace": self.ns}
        if finalizers:
            meta["finalizers"] = finalizers
        return self.tester.create({"apiVersion": constants.API_VERSION, "kind": constants.INSTANCE_KIND,
                                   "metadata": meta, "spec": copy.deepcopy(spec or self.spec)})

    def instance(self) -> Obj:
        body = self.tester.get(constants.API_VERSION, constants.INSTANCE_KIND, self.ns, NAME)
        assert body is not None
        return body

    def set_spec(self, spec: Obj) -> None:
        """Replace the whole spec (the API server bumps metadata.generation and applies CRD defaults)."""
        for _ in range(5):
            body = self.instance()
            body["metadata"].pop("managedFields", None)
            body["spec"] = copy.deepcopy(spec)
            try:
                self.tester.replace(body)
                return
            except KubeError as exc:  # 409: a running operator (kopf) annotated it meanwhile
                if exc.status != 409:
                    raise
        raise AssertionError("could not replace the CoaiInstance spec")

    def patch_status(self, status: Obj) -> None:
        """What the migration controller writes: its own status fields, through the status subresource."""
        self.tester.patch(constants.API_VERSION, constants.INSTANCE_KIND, self.ns, NAME, {"status": status},
                          subresource="status")

    # -- reconcile ---------------------------------------------------------------------------
    def run(self, spec: Obj | None = None) -> Outcome:
        """One reconcile with a fresh Kube: its stats count this reconcile's requests, the read of
        the CoaiInstance included. `spec` replaces the stored spec in the body handed over."""
        kube = Kube(api=self.api, field_manager=DIRECT_MANAGER)
        body = kube.get(constants.API_VERSION, constants.INSTANCE_KIND, self.ns, NAME)
        assert body is not None
        if spec is not None:
            body["spec"] = spec
        return reconcile(body, kube)

    # -- observing ---------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Obj | None:
        api_version = dict((k, v) for v, k in CHILD_KINDS).get(kind, "v1")
        return self.tester.get(api_version, kind, self.ns, name)

    def must(self, kind: str, name: str) -> Obj:
        obj = self.get(kind, name)
        assert obj is not None, f"{kind} {self.ns}/{name} missing"
        return obj

    def status(self) -> Obj:
        return self.instance().get("status") or {}

    def kinds(self) -> set[str]:
        """The kinds of this instance's children that exist (every namespace also has a ConfigMap
        kube-root-ca.crt, published by the controller-manager)."""
        selector = f"{constants.LABEL_INSTANCE}={NAME}"
        return {kind for api_version, kind in CHILD_KINDS if self.tester.list(api_version, kind, self.ns, selector)}

    def rolled_out(self, name: str = NAME) -> Obj:
        """Wait until the Deployment controller reports the rollout of `name` complete (at any scale)."""
        def complete() -> Obj | None:
            dep = self.must("Deployment", name)
            want, st = dep["spec"]["replicas"], dep.get("status") or {}
            done = (st.get("observedGeneration", 0) >= dep["metadata"]["generation"]
                    and all(st.get(k, 0) == want for k in ("replicas", "updatedReplicas", "readyReplicas",
                                                             "availableReplicas")))
            return dep if done else None
        return wait_for(complete, timeout=90, interval=0.2, message=f"Deployment {self.ns}/{name} rolled out")

    def operator_active(self) -> bool:
        """Has an operator (not these tests) reconciled anything in this namespace?"""
        for api_version, kind in ((constants.API_VERSION, constants.INSTANCE_KIND), *CHILD_KINDS):
            for obj in self.tester.list(api_version, kind, self.ns):
                if any(m.get("manager") == constants.MANAGED_BY for m in obj["metadata"].get("managedFields") or []):
                    return True
        events = self.tester.request("GET", f"/api/v1/namespaces/{self.ns}/events").get("items", [])
        return any(e.get("involvedObject", {}).get("kind") == constants.INSTANCE_KIND for e in events)

    def assert_changed(self, outcome: Outcome, *expected: str) -> None:
        """Our reconcile wrote exactly `expected`; with an operator at work, some of it may have been
        done by the operator first (the callers check the resulting state)."""
        want = [e.format(ns=self.ns) for e in expected]
        if self.operator_active():
            assert set(outcome.changed) <= set(want), outcome.changed
        else:
            assert sorted(outcome.changed) == sorted(want)

    def assert_stored_phase(self, outcome: Outcome) -> None:
        """The phase our reconcile computed is the one stored (unless an operator has moved on since)."""
        stored = self.status()["phase"]  # read first: an operator's write before this shows up below
        if not self.operator_active():
            assert stored == outcome.phase


@pytest.fixture
def h(cluster: Cluster, crds_installed: list[str], api: client.ApiClient, namespace: str,
      db_config: DbConfig) -> Harness:
    return Harness(cluster, api, namespace, db_config)


def image(dep: Obj) -> str:
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


# --------------------------------------------------------------------------------------------

def test_first_reconcile_creates_everything_then_a_second_makes_no_write(h: Harness) -> None:
    h.put_secret()
    h.create_instance()
    first = h.run()
    assert first.problem is None
    h.assert_changed(first, "created PersistentVolumeClaim {ns}/chat-storage",
                     "created PersistentVolumeClaim {ns}/chat-logs", "created PersistentVolumeClaim {ns}/chat-config",
                     "created ConfigMap {ns}/chat-env", "created Deployment {ns}/chat", "created Service {ns}/chat",
                     "created NetworkPolicy {ns}/chat", "created NetworkPolicy {ns}/chat-migration")
    assert h.kinds() == {"PersistentVolumeClaim", "ConfigMap", "Deployment", "Service", "NetworkPolicy"}
    assert first.phase == "Progressing"
    h.assert_stored_phase(first)
    h.rolled_out()
    assert h.run().phase == "Ready"
    assert h.status()["version"] == VERSION

    def snapshot() -> dict[str, Any]:
        """resourceVersion of what only a reconcile writes; for what controllers also write (the
        Deployment's and the PVCs' status), identity, generation and the fields we own."""
        shot: dict[str, Any] = {"instance": h.instance()["metadata"]["resourceVersion"]}
        for kind, name in (("ConfigMap", "chat-env"), ("Service", "chat")):
            shot[kind] = h.must(kind, name)["metadata"]["resourceVersion"]
        for kind, name in (("Deployment", "chat"), ("PersistentVolumeClaim", "chat-storage"),
                           ("PersistentVolumeClaim", "chat-logs"), ("PersistentVolumeClaim", "chat-config")):
            obj = h.must(kind, name)
            meta = obj["metadata"]
            shot[f"{kind}/{name}"] = (meta["uid"], meta.get("generation"), meta.get("labels"), obj["spec"])
        return shot

    before = snapshot()
    again = h.run()
    assert again.stats.writes == 0
    assert again.changed == []
    # The CoaiInstance, its Secret, each of the 6 children, and the 2 managed-Redis leftover checks.
    # instance, Secret, 6 children + 2 NetworkPolicies, 2 for managed-Redis leftovers, 1 list for
    # switched-off NetworkPolicies
    assert again.stats.reads == 1 + 1 + 8 + 2 + 1
    assert snapshot() == before


def test_missing_secret_is_degraded_without_touching_children_and_heals(h: Harness) -> None:
    h.create_instance()
    outcome = h.run()
    assert outcome.retry
    assert outcome.problem is not None
    assert outcome.problem.reason == "SecretNotFound"
    assert outcome.problem.message == (f"Secret coai-db does not exist in namespace {h.ns} "
                                       "(spec.database.passwordSecretRef)")
    assert not h.kinds() & {"Deployment", "ConfigMap", "Service", "NetworkPolicy"}
    s = h.status()
    assert s["phase"] == "Degraded"
    ready = get_condition(s["conditions"], "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    # Same problem again: no new status write.
    assert h.run().stats.writes == 0

    h.put_secret()
    healed = h.run()
    assert healed.problem is None
    assert h.get("Deployment", NAME) is not None
    assert healed.phase == "Progressing"
    h.assert_stored_phase(healed)


def test_missing_secret_key_names_the_key(h: Harness) -> None:
    h.put_secret(other="eA==")
    h.create_instance()
    outcome = h.run()
    assert outcome.problem is not None
    assert outcome.problem.reason == "SecretKeyNotFound"
    assert "'password'" in outcome.problem.message


def test_invalid_spec_is_degraded_and_not_retried(h: Harness) -> None:
    h.put_secret()
    h.create_instance()
    conflicting = {**h.spec, "redis": {"host": "r", "managed": {"enabled": True}}}
    # The CRD's CEL rule refuses this spec; an object stored before that rule existed still has it.
    with pytest.raises(KubeError) as refused:
        h.set_spec(conflicting)
    assert refused.value.status == 422 and "spec.redis" in refused.value.message
    outcome = h.run(spec=conflicting)
    assert outcome.problem is not None
    assert outcome.problem.reason == "ConflictingRedisConfig"
    assert not outcome.retry  # only a spec edit fixes it, and that triggers a reconcile anyway


def test_a_deleted_child_is_recreated_and_an_edited_one_restored(h: Harness) -> None:
    h.put_secret()
    h.create_instance()
    h.run()
    old_uid = h.must("Deployment", NAME)["metadata"]["uid"]
    h.cluster.kubectl("delete", "deployment", NAME, "-n", h.ns, "--wait=true")
    h.cluster.kubectl("label", "service", NAME, "-n", h.ns, f"{constants.LABEL_MANAGED_BY}=me", "--overwrite")
    outcome = h.run()
    h.assert_changed(outcome, "created Deployment {ns}/chat", "updated Service {ns}/chat")
    assert h.must("Deployment", NAME)["metadata"]["uid"] != old_uid
    assert h.must("Service", NAME)["metadata"]["labels"][constants.LABEL_MANAGED_BY] == "coai-operator"


def test_version_and_config_changes_update_only_what_they_must(h: Harness) -> None:
    h.put_secret()
    h.create_instance()
    h.run()
    h.set_spec({**h.spec, "version": NEXT_VERSION, "config": {"DEBUG": "false"}})
    outcome = h.run()
    h.assert_changed(outcome, "updated ConfigMap {ns}/chat-env", "updated Deployment {ns}/chat")
    # 1.9.0 -> 2.0.0 changes the schema: the image waits for its migration (docs/gitops.md), the config does not.
    assert image(h.must("Deployment", NAME)) == f"{STANDIN_IMAGE}:{VERSION}"
    assert h.must("ConfigMap", "chat-env")["data"]["DEBUG"] == "false"


def test_maintenance_scales_to_zero_and_back(h: Harness) -> None:
    h.put_secret()
    h.create_instance()
    h.run()
    h.set_spec({**h.spec, "maintenance": {"enabled": True, "message": "brb"}})
    h.run()
    assert h.must("Deployment", NAME)["spec"]["replicas"] == 0
    h.rolled_out()
    assert h.run().phase == "Maintenance"
    assert h.status()["phase"] == "Maintenance"
    h.set_spec(h.spec)
    h.run()
    assert h.must("Deployment", NAME)["spec"]["replicas"] == 1


def test_a_migration_drives_the_instance_through_its_spec(h: Harness) -> None:
    h.put_secret()
    h.create_instance()
    h.run()
    h.rolled_out()
    h.run()
    h.patch_status({"activeMigration": "m1", "schemaVersion": VERSION})
    # What the migration controller patches: maintenance on, then config, then the new version.
    h.set_spec({**h.spec, "maintenance": {"enabled": True, "message": "Upgrading"}})
    h.run()
    assert h.must("Deployment", NAME)["spec"]["replicas"] == 0
    h.rolled_out()
    assert h.run().phase == "Migrating"
    assert h.status()["phase"] == "Migrating"
    h.set_spec({**h.spec, "version": NEXT_VERSION, "config": {"X": "1"}})
    h.run()
    dep = h.must("Deployment", NAME)
    assert dep["spec"]["replicas"] == 1
    assert image(dep) == f"{STANDIN_IMAGE}:{NEXT_VERSION}"
    assert h.must("ConfigMap", "chat-env")["data"]["X"] == "1"
    h.rolled_out()
    h.run()
    body = h.instance()
    s = body["status"]
    # What the migration waits for: Ready, at the target version, for the current generation.
    assert s["phase"] == "Migrating"
    assert s["version"] == NEXT_VERSION
    assert s["observedGeneration"] == body["metadata"]["generation"]
    ready = get_condition(s["conditions"], "Ready")
    assert ready is not None and ready["status"] == "True"
    assert (s["activeMigration"], s["schemaVersion"]) == ("m1", VERSION)  # never overwritten
    h.patch_status({"activeMigration": None})
    assert h.run().phase == "Ready"
    assert h.status()["phase"] == "Ready"


def test_switching_managed_redis_off_removes_its_deployment_and_service(h: Harness) -> None:
    h.put_secret()
    h.create_instance({**h.spec, "redis": {"managed": {"enabled": True}}})
    h.run()
    assert h.get("Deployment", "chat-redis") is not None
    assert h.get("NetworkPolicy", "chat-redis") is not None
    h.set_spec(h.spec)
    # The instance still exists, so the garbage collector keeps them: the reconcile deletes them.
    outcome = h.run()
    assert h.get("Deployment", "chat-redis") is None
    assert h.get("Service", "chat-redis") is None
    assert h.get("PersistentVolumeClaim", "chat-redis-data") is not None  # retained
    assert h.get("NetworkPolicy", "chat-redis") is None
    assert h.get("NetworkPolicy", "chat") is not None
    if not h.operator_active():
        assert f"deleted Deployment {h.ns}/chat-redis" in outcome.changed


def test_generated_redis_password_is_created_once_and_network_policies_switch_off(h: Harness) -> None:
    h.put_secret()
    h.create_instance({**h.spec, "redis": {"managed": {"enabled": True}}})
    first = h.run()
    assert first.problem is None
    secret = h.must("Secret", "chat-redis-auth")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == h.instance()["metadata"]["uid"]
    assert len(base64.b64decode(secret["data"]["password"])) >= 40
    init = h.must("Deployment", "chat-redis")["spec"]["template"]["spec"]["initContainers"][0]
    assert init["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "chat-redis-auth", "key": "password"}
    assert not any(secret["data"]["password"] in str(x) or base64.b64decode(secret["data"]["password"]).decode()
                   in str(x) for x in (h.status(), first.changed))
    h.run()
    assert h.must("Secret", "chat-redis-auth")["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]

    h.set_spec({**h.spec, "redis": {"managed": {"enabled": True}}, "networkPolicy": {"enabled": False}})
    off = h.run()
    assert off.problem is None, off
    for name in ("chat", "chat-redis", "chat-migration"):
        assert h.get("NetworkPolicy", name) is None, name
    if not h.operator_active():
        assert sorted(c for c in off.changed if "NetworkPolicy" in c) == [
            f"deleted NetworkPolicy {h.ns}/{n}" for n in ("chat", "chat-migration", "chat-redis")]


def test_apply_failure_is_reported_and_retried(h: Harness) -> None:
    # A real refusal: quota admission forbids any Service in this namespace.
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-services", "namespace": h.ns},
             "spec": {"hard": {"services": "0"}}}
    h.cluster.kubectl("apply", "-f", "-", input=json.dumps(quota))
    wait_for(lambda: json.loads(h.cluster.kubectl("get", "resourcequota", "no-services", "-n", h.ns, "-o", "json")
                                .stdout).get("status", {}).get("hard"), timeout=30, interval=0.2,
             message="the quota controller has computed the quota")
    h.put_secret()
    h.create_instance()
    outcome = h.run()
    assert outcome.retry
    assert outcome.problem is not None and outcome.problem.reason == "ApplyFailed"
    assert "forbidden" in outcome.problem.message and "exceeded quota" in outcome.problem.message
    assert h.get("Deployment", NAME) is not None  # the rest was still applied
    assert h.get("Service", NAME) is None
    assert outcome.phase == "Degraded"
    assert h.status()["phase"] == "Degraded"

    # Retried, it heals once the cause is gone (admission may see the quota for a moment longer).
    h.cluster.kubectl("delete", "resourcequota", "no-services", "-n", h.ns)
    healed = wait_for(lambda: (o := h.run()).problem is None and o, timeout=30, interval=0.5,
                      message="reconcile succeeds once the quota is gone")
    assert not healed.retry
    assert h.get("Service", NAME) is not None


def test_being_deleted_is_left_alone(h: Harness) -> None:
    hold = "e2e.coai.dev/hold"
    h.put_secret()
    h.create_instance(finalizers=[hold])
    try:
        h.tester.delete(constants.API_VERSION, constants.INSTANCE_KIND, h.ns, NAME)
        assert h.instance()["metadata"].get("deletionTimestamp")
        outcome = h.run()
        assert outcome.skipped
        assert outcome.stats.writes == 0
    finally:
        h.tester.patch(constants.API_VERSION, constants.INSTANCE_KIND, h.ns, NAME,
                       {"metadata": {"finalizers": None}})
