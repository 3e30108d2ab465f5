"""The children's informer (kube/informer.py + kube/watchsource.py) against a real kube-apiserver:
the first list is silent and keeps only what the filter accepts, changes arrive as events, a watch
the server ends is resumed without a new list, and a resourceVersion too old to watch from is 410
Gone, which lists again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from coai_operator.kube import Kube
from coai_operator.kube.informer import GoneError, Informers, Reflector, Store
from coai_operator.kube.watchsource import RestSource
from e2e.conftest import Cluster
from e2e.helpers import wait_for

pytestmark = pytest.mark.e2e

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    api_client = cluster.api_client()
    yield api_client
    api_client.close()


def configmap(name: str, *, ours: bool = True, value: str = "1") -> Obj:
    labels = {"informer-test": "ours"} if ours else {}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels},
            "data": {"value": value}}


def ours(kind: str, obj: Obj) -> bool:
    return (obj["metadata"].get("labels") or {}).get("informer-test") == "ours"


def test_lists_then_follows_changes_across_watches_the_server_ends(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, configmap("before"))
    core.create_namespaced_config_map(namespace, configmap("foreign", ours=False))
    heard: list[tuple[str, str, str]] = []
    informers = Informers({"ConfigMap": "v1"}, accept=ours)
    informers.listen("ConfigMap", lambda t, o: heard.append((t, o["metadata"]["name"], o["data"]["value"])))
    calls: list[str] = []

    class Counted(RestSource):
        def list(self, namespace: str | None) -> tuple[list[Obj], str]:
            calls.append("list")
            return super().list(namespace)

        def watch(self, namespace: str | None, resource_version: str) -> Iterator[Obj]:
            calls.append("watch")
            return super().watch(namespace, resource_version)

    def source(api_version: str, kind: str) -> RestSource:
        return Counted(Kube(api=api), api_version, kind, watch_seconds=2)  # the server ends each watch in 2 s

    synced: list[str] = []
    threads = informers.start(source, [namespace], lambda kind, store: synced.append(kind))
    try:
        store = informers.stores["ConfigMap"]
        wait_for(lambda: synced == ["ConfigMap"], 30, message="the first list")
        got = store.get(namespace, "before")
        assert got is not None and got["kind"] == "ConfigMap" and "managedFields" not in got["metadata"]
        assert store.get(namespace, "foreign") is None and heard == []  # the first list tells nothing

        core.create_namespaced_config_map(namespace, configmap("during"))
        wait_for(lambda: ("ADDED", "during", "1") in heard, 30, message="an ADDED event", explain=lambda: heard)
        wait_for(lambda: calls.count("watch") >= 3, 30, message="two more watches (each ends after 2 s)")
        core.patch_namespaced_config_map("before", namespace, {"data": {"value": "2"}})
        core.delete_namespaced_config_map("during", namespace)
        wait_for(lambda: ("DELETED", "during", "1") in heard and ("MODIFIED", "before", "2") in heard, 30,
                 message="the change and the deletion, after watches the server ended", explain=lambda: heard)
        assert store.get(namespace, "before")["data"] == {"value": "2"} and store.get(namespace, "during") is None
        assert not [name for _, name, _ in heard if name == "foreign"]
        assert calls.count("list") == 1  # each watch resumed where the last one ended
    finally:
        informers.stop()
        for thread in threads:
            thread.join(40)


def test_a_resource_version_too_old_is_gone_and_a_new_list_catches_up(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, configmap("a"))
    heard: list[tuple[str, str]] = []
    reflector = Reflector("v1", "ConfigMap", RestSource(Kube(api=api), "v1", "ConfigMap", watch_seconds=5), Store(),
                          namespace=namespace, accept=lambda obj: ours("ConfigMap", obj),
                          listeners=[lambda t, o: heard.append((t, o["metadata"]["name"]))])
    reflector.step()
    assert reflector.store.get(namespace, "a") is not None
    core.delete_namespaced_config_map("a", namespace)
    core.create_namespaced_config_map(namespace, configmap("b"))
    reflector.resource_version = "1"  # long compacted away / older than the apiserver's watch cache
    with pytest.raises(GoneError):
        reflector.step()
    reflector.resource_version = None  # what run() does on GoneError
    reflector.step()
    assert sorted(heard) == [("ADDED", "b"), ("DELETED", "a")]
    assert reflector.store.get(namespace, "a") is None and reflector.store.get(namespace, "b") is not None
