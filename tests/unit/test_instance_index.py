"""instance/index.py: reads from the watch caches (the children's informer stores, a real kopf
indexer for the instances), with our writes laid over them until their echo arrives."""

from __future__ import annotations

from typing import Any

import pytest
from kopf._core.engines.indexing import OperatorIndexer

from coai_operator import kube
from coai_operator.instance import index as ix
from coai_operator.instance import reconcile as rec
from coai_operator.kube.informer import Store, trim
from tests.unit.fakekube import FakeKube


def obj(version: str, replicas: int = 1, kind: str = "Deployment") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": "chat", "namespace": "apps", "uid": "u1", "resourceVersion": version,
                         "managedFields": [{"manager": "x"}]},
            "spec": {"replicas": replicas}}


@pytest.fixture
def cache() -> tuple[ix.Cache, Store]:
    c, deployments = ix.Cache(), Store()
    c.bind("Deployment", deployments.get)
    c.bind("CoaiInstance", ix.kopf_index_lookup(OperatorIndexer().index))
    return c, deployments


def watched(store: Store, body: dict[str, Any]) -> None:
    """What the informer does on a watch event."""
    store.put(trim(body, "apps/v1", "Deployment"))


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
    version, stored = deployments._items[("apps", "chat")]
    assert version == "10" and isinstance(stored, bytes) and b"managedFields" not in stored
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


def test_kopf_watches_no_child_kind_and_indexes_only_the_instances() -> None:
    """The children are the informers' (index.CHILDREN): a kopf handler or index on one of them
    would bring kopf's per-object watch machinery back."""
    import kopf

    registry = kopf.get_default_registry()
    plurals = {"deployments", "services", "configmaps", "persistentvolumeclaims", "networkpolicies"}
    handlers = [*registry._indexing.get_all_handlers(), *registry._watching.get_all_handlers()]
    assert handlers, "the handlers were not registered: the check below would pass for nothing"
    assert not [h.id for h in handlers if h.selector.any_name in plurals]
    assert {h.id for h in registry._indexing.get_all_handlers()} == {"coai_instances"}


def test_the_instance_indexer_remembers_kopf_s_context_for_handed_off_events(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import contextvars

    import kopf

    monkeypatch.setattr(ix, "HANDOFF", ix.Handoff())
    (indexer,) = [h.fn for h in kopf.get_default_registry()._indexing.get_all_handlers()]
    queue: contextvars.ContextVar[str] = contextvars.ContextVar("queue")

    async def as_kopf_processing_an_object() -> None:
        queue.set("kopf's event queue")
        body = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "metadata": {"namespace": "a", "name": "x"}}
        await indexer(body=body, namespace="a", name="x")

    asyncio.run(as_kopf_processing_an_object())
    assert ix.HANDOFF.context is not None and ix.HANDOFF.context.run(queue.get) == "kopf's event queue"


@pytest.fixture
def bound_cache(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The operator's CACHE bound to informer stores and a real kopf indexer, filled from the fake
    API as the watches would."""
    stores = {kind: Store() for kind in ix.CHILD_KINDS}
    instances = OperatorIndexer()
    for kind, store in stores.items():
        ix.CACHE.bind(kind, store.get)
    ix.CACHE.bind("CoaiInstance", ix.kopf_index_lookup(instances.index))
    monkeypatch.setattr(rec, "_secrets_found", {})

    def sync(fake: FakeKube) -> None:
        for (kind, namespace, name), body in fake.objects.items():
            if kind in stores:
                stores[kind].put(trim(body, body["apiVersion"], kind))
            elif kind == "CoaiInstance":
                instances.replace((namespace, name, body["metadata"]["uid"]),
                                  {(namespace, name): ix._pack(body, kind)})

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


def test_startup_binds_the_instances_at_once_and_each_child_kind_once_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before a kind's informer has listed every namespace, its reads are GETs (not cached)."""
    import asyncio
    import concurrent.futures

    import kopf

    started: dict[str, Any] = {}
    monkeypatch.setattr(ix.CHILDREN, "start", lambda source, namespaces, synced: started.update(
        source=source, namespaces=namespaces, synced=synced))
    monkeypatch.setattr(kube.client, "dedicated_api_client", lambda connections: object())
    monkeypatch.setenv(ix.NAMESPACES_ENV, "apps, team-b")
    registry = kopf.get_default_registry()
    (bind,) = [h.fn for h in registry._activities.get_all_handlers() if h.id == "bind-watch-cache"]
    settings = kopf.OperatorSettings()
    settings.execution.executor = concurrent.futures.ThreadPoolExecutor(1)
    asyncio.run(bind(coai_instances=OperatorIndexer().index, settings=settings, logger=None, memo=None))
    try:
        assert ix.CACHE.cached("CoaiInstance") and not any(ix.CACHE.cached(kind) for kind in ix.CHILD_KINDS)
        assert started["namespaces"] == ["apps", "team-b"]
        assert ix.HANDOFF.executor is settings.execution.executor
        store = Store()
        started["synced"]("Service", store)
        assert ix.CACHE.cached("Service") and not ix.CACHE.cached("Deployment")
        source = started["source"]("v1", "Service")
        assert source.path("apps") == "/api/v1/namespaces/apps/services"
        assert source.path(None) == "/api/v1/services"
    finally:
        ix.CACHE.unbind()
        ix.HANDOFF.detach()


def test_the_handoff_sends_work_to_kopf_s_pool_and_loop_in_the_operator_s_context(
        caplog: pytest.LogCaptureFixture) -> None:
    """kopf.event finds kopf's event queue in context variables: a handed-off call must see the
    context remembered from a kopf handler, however many run at once."""
    import asyncio
    import concurrent.futures
    import contextvars
    import threading

    queue: contextvars.ContextVar[str] = contextvars.ContextVar("queue")
    handoff = ix.Handoff()
    ran: list[str] = []
    handoff.to_pool(ran.append, "now")  # outside the operator: at once
    assert ran == ["now"]

    async def on_loop() -> None:
        queue.set("kopf's queue")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            handoff.attach(pool, asyncio.get_running_loop())
            handoff.remember_context()
            queue.set("changed later")  # a snapshot, kept once remembered
            handoff.remember_context()
            both = threading.Barrier(2, timeout=10)

            def seen() -> None:
                both.wait()  # two calls inside the attached context at the same time
                ran.append(queue.get("none"))

            informer = threading.Thread(target=lambda: (handoff.to_pool(seen), handoff.to_pool(seen),
                                                        handoff.to_pool(lambda: 1 / 0)))
            informer.start()
            await asyncio.to_thread(informer.join)
        # (leaving the pool waited for the calls)
        done = asyncio.Event()
        threading.Thread(target=handoff.to_loop, args=(lambda: (ran.append(queue.get("none")), done.set()),)).start()
        await asyncio.wait_for(done.wait(), 10)

    asyncio.run(on_loop())
    assert ran == ["now", "kopf's queue", "kopf's queue", "kopf's queue"]
    assert "handler failed" in caplog.text
    handoff.detach()
    assert handoff.executor is None and handoff.loop is None and handoff.context is None


def test_namespaces_come_from_the_cli() -> None:
    assert ix.watched_namespaces("") is None and ix.watched_namespaces(None) is None
    assert ix.watched_namespaces("a,b") == ["a", "b"]
