"""kube.apply against a real kube-apiserver: create, then write nothing when nothing changed (the
server's defaults, allocated clusterIPs and canonical quantities are no difference), update only
what changed, recreate what was deleted, survive a create race.

The manifests are rendered for a CoaiInstance `demo` that really exists, so their owner
references point at a live owner and the garbage collector keeps them. Its password Secret is
deliberately missing: an operator running alongside (the session `operator` fixture of other
modules) reconciles `demo` on every event of these children, stops at SecretNotFound and never
writes a child, so every write counted here is ours.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from coai_operator import constants
from coai_operator.instance.render import render
from coai_operator.kube import Kube, apply
from e2e.conftest import Cluster
from e2e.helpers import wait_for

pytestmark = pytest.mark.e2e

Obj = dict[str, Any]
SPEC: Obj = {"version": "3.11.2", "database": {"host": "db", "passwordSecretRef": {"name": "db"}}}


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    api_client = cluster.api_client()
    yield api_client
    api_client.close()


@pytest.fixture
def owner(crds_installed: list[str], api: client.ApiClient, namespace: str) -> Obj:
    return Kube(api=api).create({"apiVersion": constants.API_VERSION, "kind": constants.INSTANCE_KIND,
                                 "metadata": {"name": "demo", "namespace": namespace}, "spec": SPEC})


def test_apply_creates_then_makes_no_write_when_nothing_changed(api: client.ApiClient, namespace: str,
                                                                 owner: Obj) -> None:
    objects = render({**SPEC, "redis": {"managed": {"enabled": True}}}, "demo", namespace, owner).all()
    kube = Kube(api=api)
    first = [apply(kube, o).action for o in objects]
    assert set(first) == {"created"}
    writes = kube.stats.writes
    assert writes == len(objects)
    second = [apply(kube, o).action for o in objects]
    assert set(second) == {"unchanged"}
    assert kube.stats.writes == writes  # zero write requests the second time
    assert kube.stats.reads == 2 * len(objects)


def rolled_out(kube: Kube, namespace: str, name: str) -> bool:
    """The Deployment controller has acted (its pods exist). They never become available on a real
    node: the password Secret is missing on purpose (see the module docstring)."""
    dep = kube.get("apps/v1", "Deployment", namespace, name) or {}
    st = dep.get("status") or {}
    return st.get("observedGeneration", 0) >= dep["metadata"]["generation"] and \
        st.get("replicas", 0) == dep["spec"]["replicas"]


def test_apply_updates_only_the_object_that_changed(api: client.ApiClient, namespace: str, owner: Obj) -> None:
    for o in render(SPEC, "demo", namespace, owner).all():
        apply(Kube(api=api), o)
    # Until its rollout is done, the Deployment controller keeps changing the Deployment's status,
    # and a PUT based on an older resourceVersion gets a 409 (apply reads again and retries: a
    # third write request).
    wait_for(lambda: rolled_out(Kube(api=api), namespace, "demo"), timeout=60, interval=0.2,
             message="Deployment demo rolled out")
    kube = Kube(api=api)
    results = {o["metadata"]["name"] + "/" + o["kind"]: apply(kube, o).action
               for o in render({**SPEC, "config": {"DEBUG": "false"}}, "demo", namespace, owner).all()}
    assert {k for k, v in results.items() if v != "unchanged"} == {"demo-env/ConfigMap", "demo/Deployment"}
    assert kube.stats.writes == 2


@dataclass
class RacedKube(Kube):
    """A real client, and a second real client that creates `rival` right after this one's first GET
    finds nothing: the create race, at a fixed point. The 409 comes from the API server."""

    rival: Obj | None = None
    raced: bool = False

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        found = super().get(api_version, kind, namespace, name)
        if found is None and self.rival is not None and not self.raced:
            self.raced = True
            Kube(api=self.api, field_manager="someone-else").create(copy.deepcopy(self.rival))
        return found


def test_apply_recreates_a_deleted_object_and_survives_a_create_race(api: client.ApiClient, namespace: str,
                                                                      owner: Obj) -> None:
    kube = Kube(api=api)
    svc = render(SPEC, "demo", namespace, owner).service
    apply(kube, svc)
    assert kube.delete("v1", "Service", namespace, "demo")
    assert apply(kube, svc).action == "created"
    assert kube.delete("v1", "Service", namespace, "demo")

    racing = RacedKube(api=api, rival=svc)
    result = apply(racing, svc)
    assert racing.raced
    assert result.action in ("updated", "unchanged")
    live = kube.get("v1", "Service", namespace, "demo")
    assert live is not None
    assert live["spec"]["ports"][0]["port"] == 80
