"""kube/informer.py: the children's list+watch, against a scripted API (lists and watch streams)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from coai_operator.kube import informer as inf

Obj = dict[str, Any]


def cm(name: str, rv: str, *, ours: bool = True, ns: str = "apps", data: str = "x") -> Obj:
    meta: Obj = {"name": name, "namespace": ns, "resourceVersion": rv, "managedFields": [{"manager": "kubectl"}]}
    if ours:
        meta["labels"] = {"owner": "chat"}
    return {"metadata": meta, "data": {"k": data}}


def event(type_: str, obj: Obj) -> Obj:
    return {"type": type_, "object": obj}


class ScriptedSource:
    """Lists and watch streams in the order given; each watch stream ends after its events. An
    Exception in a script is raised instead; the stop event is set when the scripts run out."""

    def __init__(self, lists: list[Any], watches: list[Any], stopped: threading.Event | None = None) -> None:
        self.lists, self.watches, self.stopped = list(lists), list(watches), stopped
        self.calls: list[tuple[str, str | None, str | None]] = []

    def _next(self, script: list[Any]) -> Any:
        if not script:
            if self.stopped is not None:
                self.stopped.set()
            return []
        item = script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def list(self, namespace: str | None) -> tuple[list[Obj], str]:
        self.calls.append(("list", namespace, None))
        items = self._next(self.lists)
        return (items, str(100 + len(self.calls))) if isinstance(items, list) else items

    def watch(self, namespace: str | None, resource_version: str) -> Iterator[Obj]:
        self.calls.append(("watch", namespace, resource_version))
        yield from self._next(self.watches)


def ours(obj: Obj) -> bool:
    return "owner" in (obj["metadata"].get("labels") or {})


@pytest.fixture
def heard() -> list[tuple[str, str, str]]:
    return []


def reflector(source: Any, heard: list, **kw: Any) -> inf.Reflector:
    def listener(type_: str, obj: Obj) -> None:
        heard.append((type_, obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))

    return inf.Reflector("v1", "ConfigMap", source, kw.pop("store", inf.Store()), namespace=kw.pop("namespace", "apps"),
                         accept=ours, listeners=[listener], **kw)


def test_the_first_list_fills_the_store_silently_with_only_our_objects_trimmed(heard: list) -> None:
    r = reflector(ScriptedSource([[cm("a", "5"), cm("other", "6", ours=False)]], []), heard)
    assert r.step() == 0 and heard == [] and r.listed and r.resource_version == "101"
    got = r.store.get("apps", "a")
    assert got is not None and got["kind"] == "ConfigMap" and got["apiVersion"] == "v1"
    assert "managedFields" not in got["metadata"] and got["data"] == {"k": "x"}
    assert r.store.get("apps", "other") is None and len(r.store) == 1


def test_watch_events_update_the_store_and_reach_listeners_in_order(heard: list) -> None:
    source = ScriptedSource([[cm("a", "5")]], [[
        event("MODIFIED", cm("a", "7", data="y")),
        event("ADDED", cm("b", "8")),
        event("ADDED", cm("stranger", "9", ours=False)),  # not ours: neither kept nor told
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
        event("DELETED", cm("b", "13")),
    ]])
    r = reflector(source, heard)
    r.step()
    assert r.step() == 4
    assert heard == [("MODIFIED", "a", "7"), ("ADDED", "b", "8"), ("DELETED", "b", "13")]
    assert r.store.get("apps", "a")["data"] == {"k": "y"} and r.store.get("apps", "b") is None
    assert r.resource_version == "13" and source.calls[1] == ("watch", "apps", "101")


def test_a_bookmark_moves_the_resume_point(heard: list) -> None:
    source = ScriptedSource([[]], [[{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "40"}}}], []])
    r = reflector(source, heard)
    r.step()
    r.step()
    r.step()
    assert source.calls[-1] == ("watch", "apps", "40") and heard == []


def test_an_object_that_stops_being_ours_is_dropped_and_its_owner_told(heard: list) -> None:
    r = reflector(ScriptedSource([[cm("a", "5")]], [[event("MODIFIED", cm("a", "6", ours=False))]]), heard)
    r.step()
    r.step()
    assert r.store.get("apps", "a") is None
    assert heard == [("DELETED", "a", "5")]  # the last state that named the owner


def test_gone_lists_again_and_tells_what_changed_meanwhile(heard: list) -> None:
    stopped = threading.Event()
    source = ScriptedSource(
        [[cm("a", "5"), cm("b", "6"), cm("c", "7")],
         [cm("a", "5"), cm("b", "9", data="new"), cm("d", "10")]],  # c deleted, b changed, d created
        [[event("ERROR", {"kind": "Status", "code": 410, "message": "too old resource version"})]], stopped)
    r = reflector(source, heard)
    r.run(stopped)
    assert [c[0] for c in source.calls] == ["list", "watch", "list", "watch"]
    assert sorted(heard) == [("ADDED", "d", "10"), ("DELETED", "c", "7"), ("MODIFIED", "b", "9")]
    assert sorted(k[1] for k in r.store.names()) == ["a", "b", "d"]


def test_failures_back_off_and_are_logged_once_then_the_watch_resumes(heard: list, monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    stopped = threading.Event()
    waits: list[float] = []
    monkeypatch.setattr(stopped, "wait", lambda seconds: waits.append(seconds))
    source = ScriptedSource([RuntimeError("forbidden"), RuntimeError("forbidden"), [cm("a", "5")]],
                            [ConnectionError("reset"), [event("ADDED", cm("b", "8"))]], stopped)
    r = reflector(source, heard)
    with caplog.at_level(logging.WARNING, logger="coai_operator.informer"):
        r.run(stopped, now=iter(range(0, 1000, 10)).__next__)
    assert waits[:3] == [1.0, 2.0, 1.0]  # two failed lists back off; the success resets the count
    assert heard == [("ADDED", "b", "8")]
    warnings = [rec.getMessage() for rec in caplog.records]
    assert [("forbidden" in m, "reset" in m) for m in warnings] == [(True, False), (False, True)]  # each once


def test_a_failing_listener_is_logged_and_the_others_still_hear(caplog: pytest.LogCaptureFixture) -> None:
    heard: list[str] = []

    def broken(type_: str, obj: Obj) -> None:
        raise ValueError("boom")

    r = inf.Reflector("v1", "ConfigMap", ScriptedSource([[]], [[event("ADDED", cm("a", "5"))]]), inf.Store(),
                      namespace="apps", accept=ours, listeners=[broken, lambda t, o: heard.append(t)])
    r.step()
    with caplog.at_level(logging.ERROR, logger="coai_operator.informer"):
        r.step()
    assert heard == ["ADDED"] and "listener failed" in caplog.text


def test_each_read_is_a_fresh_copy() -> None:
    store = inf.Store()
    store.put(inf.trim(cm("a", "5"), "v1", "ConfigMap"))
    store.get("apps", "a")["data"]["k"] = "edited"
    assert store.get("apps", "a")["data"] == {"k": "x"}


def test_a_kind_is_synced_once_every_namespace_is_listed() -> None:
    informers = inf.Informers({"ConfigMap": "v1"}, accept=lambda kind, obj: ours(obj))
    gate = threading.Event()
    synced: list[tuple[str, int]] = []

    class PerNamespace:
        def list(self, namespace: str | None) -> tuple[list[Obj], str]:
            if namespace == "slow":
                gate.wait(10)
            return [cm(f"in-{namespace}", "5", ns=str(namespace))], "5"

        def watch(self, namespace: str | None, resource_version: str) -> Iterator[Obj]:
            informers._stopped.wait(10)
            return iter(())

    threads = informers.start(lambda api_version, kind: PerNamespace(), ["fast", "slow"],
                              lambda kind, store: synced.append((kind, len(store))))
    try:
        store = informers.stores["ConfigMap"]
        assert not store.synced.wait(0.3) and synced == []  # "slow" has not been listed yet
        gate.set()
        assert store.synced.wait(10)
        assert synced == [("ConfigMap", 2)] and store.get("fast", "in-fast") and store.get("slow", "in-slow")
    finally:
        informers.stop()
        for thread in threads:
            thread.join(10)
    assert not any(thread.is_alive() for thread in threads)


def test_namespace_patterns_watch_everything_and_keep_what_matches() -> None:
    admit = inf.namespace_filter(["team-*", "!team-test"])
    assert admit is not None and admit("team-a") and not admit("team-test") and not admit("prod")
    assert inf.namespace_filter([]) is None

    seen: list[str | None] = []
    informers = inf.Informers({"ConfigMap": "v1"}, accept=lambda kind, obj: True)

    class Everything:
        def list(self, namespace: str | None) -> tuple[list[Obj], str]:
            seen.append(namespace)
            return [cm("x", "1", ns="team-a"), cm("y", "2", ns="prod")], "2"

        def watch(self, namespace: str | None, resource_version: str) -> Iterator[Obj]:
            informers._stopped.wait(10)
            return iter(())

    threads = informers.start(lambda api_version, kind: Everything(), ["team-*"], lambda kind, store: None)
    try:
        assert informers.stores["ConfigMap"].synced.wait(10)
        assert seen == [None]  # one cluster-wide watch
        assert informers.stores["ConfigMap"].names() == [("team-a", "x")]
    finally:
        informers.stop()
        for thread in threads:
            thread.join(10)
