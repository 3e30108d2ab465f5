"""kube.plan_update / kube.apply: write only when something we own differs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from coai_operator import kube
from coai_operator.instance.render import render
from coai_operator.kube import APPLIED_ANNOTATIONS_ANNOTATION, APPLIED_HASH_ANNOTATION, contains, plan_update

Obj = dict[str, Any]

OWNER = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "metadata": {"name": "demo", "uid": "uid-1"}}
SPEC = {"version": "3.11.2", "database": {"host": "db", "passwordSecretRef": {"name": "db"}}}


def live_of(desired: Obj) -> Obj:
    """`desired` as created through apply, plus the metadata and status the API server adds.

    The fields the server defaults or allocates are added by the tests that need them; that they
    are no difference on a real API server is tested in e2e/test_kube_apply.py.
    """
    live = copy.deepcopy(kube.with_applied_hash(desired))
    live["metadata"].update(uid="live-uid", resourceVersion="7", generation=1,
                            managedFields=[{"manager": "coai-operator"}])
    live["status"] = {"observedGeneration": 1}
    return live


@pytest.fixture
def deployment() -> Obj:
    return render(SPEC, "demo", "ns", OWNER).deployment


def test_contains_ignores_server_defaults_and_extra_keys() -> None:
    assert contains({"a": 1, "b": {"c": "x"}}, {"a": 1, "b": {"c": "x", "d": 2}, "e": 3})
    assert not contains({"a": 1}, {"a": 2})
    assert not contains({"a": [1, 2]}, {"a": [1]})
    assert contains({"a": [], "b": {}}, {})
    assert not contains({"a": True}, {"a": 1})


def test_contains_compares_quantities_by_value() -> None:
    assert contains({"limits": {"memory": "1024Mi"}}, {"limits": {"memory": "1Gi"}})
    assert contains({"requests": {"cpu": "0.5"}}, {"requests": {"cpu": "500m"}})
    assert not contains({"limits": {"memory": "1Gi"}}, {"limits": {"memory": "2Gi"}})
    # Outside resource lists "1.0" and "1" are different strings (an env value, say).
    assert not contains({"data": {"X": "1.0"}}, {"data": {"X": "1"}})


def test_the_applied_hash_leaves_desired_as_it_was(deployment: Obj) -> None:
    deployment["metadata"]["annotations"] = {"team": "chat"}
    before = copy.deepcopy(deployment)
    want = kube.with_applied_hash(deployment)
    assert deployment == before  # only a copy of metadata.annotations was changed
    assert want["metadata"]["annotations"][APPLIED_ANNOTATIONS_ANNOTATION] == "team"
    # the hash ignores our own annotations, so hashing the result gives the same hash again
    assert kube.desired_hash(want) == kube.desired_hash(deployment) == want["metadata"]["annotations"][
        APPLIED_HASH_ANNOTATION]
    assert kube.desired_hash({**deployment, "spec": {**deployment["spec"], "replicas": 9}}) != kube.desired_hash(
        deployment)


def test_unchanged_live_object_needs_no_write(deployment: Obj) -> None:
    want = kube.with_applied_hash(deployment)
    assert plan_update(want, live_of(deployment)) is None


def test_foreign_labels_and_annotations_are_not_a_difference(deployment: Obj) -> None:
    live = live_of(deployment)
    live["metadata"]["labels"]["team"] = "a"
    live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "3"
    assert plan_update(kube.with_applied_hash(deployment), live) is None


def test_a_changed_owned_field_is_written_back(deployment: Obj) -> None:
    live = live_of(deployment)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    body = plan_update(kube.with_applied_hash(deployment), live)
    assert body is not None
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == "programzmh/chatnio:3.11.2"
    assert body["metadata"]["resourceVersion"] == "7"  # optimistic concurrency on the PUT
    assert "status" not in body


def test_an_edited_managed_label_is_restored_and_foreign_labels_kept(deployment: Obj) -> None:
    live = live_of(deployment)
    live["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "someone"
    live["metadata"]["labels"]["team"] = "a"
    body = plan_update(kube.with_applied_hash(deployment), live)
    assert body is not None
    assert body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "coai-operator"
    assert body["metadata"]["labels"]["team"] == "a"


def test_an_env_var_added_by_hand_is_removed(deployment: Obj) -> None:
    live = live_of(deployment)
    live["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "X", "value": "1"})
    body = plan_update(kube.with_applied_hash(deployment), live)
    assert body is not None
    assert [e["name"] for e in body["spec"]["template"]["spec"]["containers"][0]["env"]] == ["MYSQL_PASSWORD"]


def test_a_field_we_stop_setting_disappears() -> None:
    before = render({**SPEC, "nodeSelector": {"disk": "ssd"}}, "demo", "ns", OWNER).deployment
    after = render(SPEC, "demo", "ns", OWNER).deployment
    live = live_of(before)
    # `after` is contained in `live`; only the hash tells that nodeSelector must go.
    assert contains(after["spec"], live["spec"])
    body = plan_update(kube.with_applied_hash(after), live)
    assert body is not None
    assert "nodeSelector" not in body["spec"]["template"]["spec"]


def test_rollout_restart_annotation_survives_an_update() -> None:
    before = render(SPEC, "demo", "ns", OWNER).deployment
    live = live_of(before)
    live["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = "now"
    assert plan_update(kube.with_applied_hash(before), live) is None
    after = render({**SPEC, "version": "3.11.3"}, "demo", "ns", OWNER).deployment
    body = plan_update(kube.with_applied_hash(after), live)
    assert body is not None
    assert body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] == "now"


def test_removed_pod_annotation_is_dropped_from_the_template() -> None:
    before = render({**SPEC, "podAnnotations": {"a": "1"}}, "demo", "ns", OWNER).deployment
    after = render(SPEC, "demo", "ns", OWNER).deployment
    body = plan_update(kube.with_applied_hash(after), live_of(before))
    assert body is not None
    assert "a" not in body["spec"]["template"]["metadata"]["annotations"]


def test_configmap_data_is_compared_exactly() -> None:
    cm = render(SPEC, "demo", "ns", OWNER).configmap
    live = live_of(cm)
    assert plan_update(kube.with_applied_hash(cm), live) is None
    live["data"]["EXTRA"] = "1"
    body = plan_update(kube.with_applied_hash(cm), live)
    assert body is not None
    assert "EXTRA" not in body["data"]


def test_service_keeps_its_allocated_cluster_ip() -> None:
    svc = render(SPEC, "demo", "ns", OWNER).service
    live = live_of(svc)
    # Allocated by the API server.
    live["spec"].update(clusterIP="10.96.0.17", clusterIPs=["10.96.0.17"], ipFamilies=["IPv4"],
                        ipFamilyPolicy="SingleStack")
    live["spec"]["ports"][0]["port"] = 8080
    body = plan_update(kube.with_applied_hash(svc), live)
    assert body is not None
    assert body["spec"]["clusterIP"] == "10.96.0.17"
    assert body["spec"]["clusterIPs"] == ["10.96.0.17"]
    assert body["spec"]["ports"][0]["port"] == 80


def test_service_annotation_removed_from_spec_is_removed_others_kept() -> None:
    before = render({**SPEC, "service": {"annotations": {"lb": "x", "keep": "y"}}}, "demo", "ns", OWNER).service
    after = render({**SPEC, "service": {"annotations": {"keep": "y"}}}, "demo", "ns", OWNER).service
    live = live_of(before)
    assert live["metadata"]["annotations"][APPLIED_ANNOTATIONS_ANNOTATION] == "keep,lb"
    live["metadata"]["annotations"]["cloud.example/allocated"] = "1"  # a controller's annotation
    body = plan_update(kube.with_applied_hash(after), live)
    assert body is not None
    annotations = body["metadata"]["annotations"]
    assert "lb" not in annotations
    assert annotations["keep"] == "y"
    assert annotations["cloud.example/allocated"] == "1"
    assert annotations[APPLIED_ANNOTATIONS_ANNOTATION] == "keep"
    assert annotations[APPLIED_HASH_ANNOTATION] == kube.desired_hash(after)


def test_owner_references_of_others_are_kept_and_ours_toggle() -> None:
    owned = render({**SPEC, "storage": {"retain": False}}, "demo", "ns", OWNER).pvcs[0]
    kept = render(SPEC, "demo", "ns", OWNER).pvcs[0]
    assert kept["metadata"]["ownerReferences"] == []
    live = live_of(owned)
    live["metadata"]["ownerReferences"].append({"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u"})
    assert plan_update(owned, live) is None
    body = plan_update(kept, live)  # retain switched on: our owner reference goes, the other stays
    assert body is not None
    assert body["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u"}]


def test_pvc_grows_but_never_shrinks_and_ignores_immutable_fields() -> None:
    pvc = render(SPEC, "demo", "ns", OWNER).pvcs[0]
    live = live_of(pvc)
    live["spec"]["storageClassName"] = "standard"  # the server's default StorageClass: not a difference
    assert plan_update(pvc, live) is None
    bigger = copy.deepcopy(pvc)
    bigger["spec"]["resources"]["requests"]["storage"] = "20Gi"
    bigger["spec"]["storageClassName"] = "fast"
    body = plan_update(bigger, live)
    assert body is not None
    assert body["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert body["spec"]["storageClassName"] == "standard"
    smaller = copy.deepcopy(pvc)
    smaller["spec"]["resources"]["requests"]["storage"] = "1Gi"
    assert plan_update(smaller, live) is None


def test_the_echo_of_our_own_write_is_recognised_and_nothing_else() -> None:
    from coai_operator.kube import is_own_write_echo, remember_own_write

    written = {"kind": "ConfigMap", "metadata": {"namespace": "ns", "name": "echo-cm", "resourceVersion": "41"}}
    remember_own_write(written)
    event = {"metadata": {"namespace": "ns", "name": "echo-cm", "resourceVersion": "41"}}
    assert is_own_write_echo(event, "ConfigMap")
    assert not is_own_write_echo({"metadata": {**event["metadata"], "resourceVersion": "42"}}, "ConfigMap")
    assert not is_own_write_echo(event, "Service")
    assert not is_own_write_echo({"metadata": {"namespace": "ns", "name": "other", "resourceVersion": "41"}},
                                 "ConfigMap")
