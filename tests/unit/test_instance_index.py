"""instance/index.py: reads from kopf's index (a real kopf indexer), with our writes laid over it
until their echo arrives."""

from __future__ import annotations

from typing import Any

import pytest
from kopf._core.engines.indexing import OperatorIndexer

from coai_operator import kube
from coai_operator.instance import index as ix
from coai_operator.instance import reconcile as rec
from tests.unit.fakekube import FakeKube


def obj(version: str, replicas: int = 1, kind: str = "Deployment") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": "chat", "namespace": "apps", "uid": "u1", "resourceVersion": version,
                         "managedFields": [{"manager": "x"}]},
            "spec": {"replicas": replicas}}


@pytest.fixture
def cache() -> tuple[ix.Cache, OperatorIndexer]:
    c, deployments = ix.Cache(), OperatorIndexer()
    c.bind({"Deployment": deployments.index, "CoaiInstance": OperatorIndexer().index})
    return c, deployments


def watched(indexer: OperatorIndexer, body: dict[str, Any]) -> None:
    """What kopf does on a watch event: store the index function's result under the object's key."""
    meta = body["metadata"]
    indexer.replace((meta["namespace"], meta["name"], meta["uid"]),
                    {("Deployment", meta["namespace"], meta["name"]): ix._pack(body, "Deployment")})


def test_reads_come_from_the_index_without_managed_fields(cache: Any) -> None:
    c, deployments = cache
    assert c.get("Deployment", "apps", "chat") is None
    watched(deployments, obj("10"))
    got = c.get("Deployment", "apps", "chat")
    assert got is not None and got["metadata"]["resourceVersion"] == "10" and "managedFields" not in got["metadata"]
    assert c.cached("Deployment") and not c.cached("Secret")


def test_the_index_keeps_compact_json_and_every_read_is_a_fresh_copy(cache: Any) -> None:
    c, deployments = cache
    watched(deployments, obj("10"))
    stored = next(iter(deployments.index[("Deployment", "apps", "chat")]))
    assert isinstance(stored, bytes) and b"managedFields" not in stored
    first = c.get("Deployment", "apps", "chat")
    first["spec"]["replicas"] = 99  # a caller editing what it read (render/apply do)
    assert c.get("Deployment", "apps", "chat")["spec"]["replicas"] == 1


def test_our_write_wins_until_its_echo_arrives(cache: Any) -> None:
    c, deployments = cache
    watched(deployments, obj("10"))
    c.wrote(obj("11", replicas=2))
    assert c.get("Deployment", "apps", "chat")["spec"]["replicas"] == 2  # the index still has rv 10
    watched(deployments, obj("11", replicas=2))  # the echo
    assert c.get("Deployment", "apps", "chat")["metadata"]["resourceVersion"] == "11"
    watched(deployments, obj("12", replicas=5))  # somebody else, after us: the index is the truth again
    assert c.get("Deployment", "apps", "chat")["spec"]["replicas"] == 5


def test_an_echo_batched_away_by_kopf_does_not_pin_an_old_write(cache: Any) -> None:
    c, deployments = cache
    watched(deployments, obj("10"))
    c.wrote(obj("11", replicas=2))
    watched(deployments, obj("9", replicas=0))  # an event from before our write, still in flight
    assert c.get("Deployment", "apps", "chat")["spec"]["replicas"] == 2
    watched(deployments, obj("13", replicas=7))  # the echo (11) was batched into a later event
    assert c.get("Deployment", "apps", "chat")["spec"]["replicas"] == 7


def test_a_later_version_than_our_write_wins_even_if_the_echo_was_never_read(cache: Any) -> None:
    """The Deployment controller's status update (rv 12) follows our create (rv 11) before any
    reconcile read the echo: the index is newer, its status must not stay hidden behind our write."""
    c, deployments = cache
    watched(deployments, obj("10"))
    c.wrote(obj("11", replicas=2))
    watched(deployments, {**obj("12", replicas=2), "status": {"readyReplicas": 1}})
    assert c.get("Deployment", "apps", "chat")["status"] == {"readyReplicas": 1}


def test_an_overlay_expires(cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    c, deployments = cache
    watched(deployments, obj("10"))
    c.wrote(obj("x-11", replicas=2))  # not a number: only equality tells, so only time ends it
    watched(deployments, obj("x-13", replicas=7))
    assert c.get("Deployment", "apps", "chat")["spec"]["replicas"] == 2
    monkeypatch.setattr(ix, "OVERLAY_SECONDS", -1.0)
    assert c.get("Deployment", "apps", "chat")["spec"]["replicas"] == 7


def test_writes_through_kube_reach_the_cache_and_unbound_means_no_cache() -> None:
    assert ix.CACHE.wrote in kube.WRITE_LISTENERS
    c = ix.Cache()
    c.wrote(obj("11"))  # not bound: nothing cached, nothing kept
    assert not c.bound and not c.cached("Deployment")


def test_kopf_registers_one_index_per_cached_kind() -> None:
    import kopf

    registry = kopf.get_default_registry()
    ids = {h.id for h in registry._indexing.get_all_handlers()}
    assert {"coai_instances", "coai_deployments", "coai_services", "coai_configmaps", "coai_pvcs",
            "coai_netpols"} <= ids


@pytest.fixture
def bound_cache(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The operator's CACHE bound to real kopf indexers, filled from the fake API as a watch would."""
    indexers = {kind: OperatorIndexer() for kind in ["CoaiInstance", *ix.CHILD_INDEXES]}
    ix.CACHE.bind({kind: indexer.index for kind, indexer in indexers.items()})
    monkeypatch.setattr(rec, "_secrets_found", {})

    def sync(fake: FakeKube) -> None:
        for (kind, namespace, name), body in fake.objects.items():
            if kind in indexers:
                key = (namespace, name) if kind == "CoaiInstance" else (kind, namespace, name)
                indexers[kind].replace((namespace, name, body["metadata"]["uid"]), {key: ix._pack(body, kind)})

    yield sync
    ix.CACHE.unbind()


def test_a_no_op_drift_check_makes_no_request(bound_cache: Any) -> None:
    fake = FakeKube()
    fake.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "apps"},
              "data": {"password": "eA=="}})
    fake.put({"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance",
              "metadata": {"name": "chat", "namespace": "apps"},
              "spec": {"version": "2.0.0", "database": {"host": "db", "passwordSecretRef": {"name": "db"}}}})
    bound_cache(fake)  # the instance's ADDED event
    assert rec.reconcile_named("apps", "chat", "create", kube_factory=lambda: fake) is not None
    assert fake.writes("create", "NetworkPolicy")  # the policies are children like the others
    bound_cache(fake)  # the watch events of what the create reconcile wrote
    fake.calls.clear()
    outcome = rec.reconcile_named("apps", "chat", "drift-check", kube_factory=lambda: fake)
    assert outcome is not None and outcome.changed == []
    assert fake.calls == []  # children, instance and policies from the cache; Secrets checked once


def test_startup_binds_an_index_for_every_cached_kind() -> None:
    import asyncio

    import kopf

    registry = kopf.get_default_registry()
    (bind,) = [h.fn for h in registry._activities.get_all_handlers() if h.id == "bind-watch-cache"]
    ids = {"coai_instances": OperatorIndexer().index,
           **{index_id: OperatorIndexer().index for *_, index_id in ix.CHILD_INDEXES.values()}}
    asyncio.run(bind(**ids, logger=None, memo=None))
    try:
        assert all(ix.CACHE.cached(kind) for kind in ["CoaiInstance", *ix.CHILD_INDEXES])
        assert ix.CACHE.cached("NetworkPolicy")
    finally:
        ix.CACHE.unbind()
