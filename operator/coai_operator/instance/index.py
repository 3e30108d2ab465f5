"""The instance controller's reads from kopf's watch cache instead of GETs.

kopf indexes, filled by the watches the controller runs anyway: every CoaiInstance, and every
child (Deployment, Service, ConfigMap, PVC, NetworkPolicy) that belongs to one, keyed by (kind, namespace, name)
and stored without managedFields. kopf fills indexes before any handler runs, and updates them
before the handlers of each event, so a reconcile sees at least the state that triggered it.

The cache lags our own writes by one watch event. Every write through `kube.Kube` (by any
controller) is therefore laid over it (`CACHE.wrote`) until the index holds that write or a later
version of the object; a read prefers the newer of the two. Whatever is still stale is caught by
the API: updates are PUTs with the cached resourceVersion (a 409 makes `kube.apply` GET and
retry) and creates of an existing object are 409s too. A stale read that finds "nothing to
change" is followed by the watch event that made it stale, which triggers a reconcile of its own.

Secrets are not cached (the operator may not list or watch them); reconcile.py remembers which
Secrets a successful check found.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import kopf

from coai_operator import constants, kube

Obj = dict[str, Any]
Key = tuple[str, str, str]  # kind, namespace, name
OVERLAY_SECONDS = 60.0  # an echo lost to a watch restart must not pin an old write for ever


def _trim(body: Mapping[str, Any], kind: str) -> Obj:
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {**{k: v for k, v in body.items() if k != "metadata"}, "metadata": meta, "kind": kind}


def _pack(body: Mapping[str, Any], kind: str) -> bytes:
    """What an index keeps: the trimmed object as compact JSON, a few times smaller than the same
    object as dicts (tracemalloc: 28 KiB per instance's worth of dicts, docs/benchmarks.md). Each
    read decodes a fresh copy, so no caller can change what the cache holds."""
    return json.dumps(_trim(body, kind), separators=(",", ":")).encode()


def _unpack(value: Any) -> Obj:
    return json.loads(value) if isinstance(value, bytes | str) else dict(value)


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name"))


def _not_older(indexed: Any, written: str) -> bool:
    """The index holds our write or something after it. kopf batches a burst of events into the
    last one, so the echo itself may never be indexed; resourceVersions are etcd revisions, which
    grow (a value that is not a number is only compared for equality)."""
    try:
        return int(indexed) >= int(written)
    except (TypeError, ValueError):
        return indexed == written


class Cache:
    """The kopf indexes (bound at startup) plus our writes they have not seen yet."""

    def __init__(self) -> None:
        self._indexes: dict[str, Any] = {}  # kind -> kopf.Index
        self._overlay: dict[Key, tuple[str, bytes, float]] = {}  # key -> (resourceVersion, packed, when)
        self._lock = threading.Lock()

    @property
    def bound(self) -> bool:
        return bool(self._indexes)

    def bind(self, indexes: Mapping[str, Any]) -> None:
        """kind -> kopf.Index; the child indexes are keyed (kind, namespace, name), instances (namespace, name)."""
        self._indexes = dict(indexes)

    def unbind(self) -> None:
        self._indexes = {}
        with self._lock:
            self._overlay.clear()

    def wrote(self, obj: Mapping[str, Any]) -> None:
        """An object as one of our writes returned it."""
        key, version = _key(obj), (obj.get("metadata") or {}).get("resourceVersion")
        if key[0] in self._indexes and version:
            with self._lock:
                self._overlay[key] = (str(version), _pack(obj, key[0]), time.monotonic())

    def _indexed(self, key: Key) -> Obj | None:
        index = self._indexes[key[0]]
        lookup = key if key[0] != constants.INSTANCE_KIND else key[1:]
        for _ in range(3):  # the watch thread may update the store while we read it
            try:
                values = list(index[lookup]) if lookup in index else []
                return _unpack(values[-1]) if values else None
            except (KeyError, RuntimeError):
                continue
        return None

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The newest state we know of, None when absent. Only for kinds `cached(kind)` is true."""
        key = (kind, namespace, name)
        indexed = self._indexed(key)
        with self._lock:
            written = self._overlay.get(key)
            if written is None:
                return indexed
            version, packed, when = written
            seen = indexed is not None and _not_older(indexed["metadata"].get("resourceVersion"), version)
            if seen or time.monotonic() - when > OVERLAY_SECONDS:
                del self._overlay[key]
                return indexed
            return _unpack(packed)

    def cached(self, kind: str) -> bool:
        return kind in self._indexes


CACHE = Cache()
kube.WRITE_LISTENERS.append(CACHE.wrote)


def _owned_child(body: kopf.Body, kind: str) -> bool:
    from coai_operator.instance.reconcile import owner_of

    return owner_of(body, kind) is not None


CHILD_INDEXES = {"Deployment": ("apps", "v1", "deployments", "coai_deployments"),
                 "Service": ("", "v1", "services", "coai_services"),
                 "ConfigMap": ("", "v1", "configmaps", "coai_configmaps"),
                 "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims", "coai_pvcs"),
                 "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies", "coai_netpols")}


def _register() -> None:
    # async: kopf runs sync handlers in its thread pool, behind reconciles waiting on the API;
    # these only copy a dict and must never wait.
    @kopf.index(constants.GROUP, constants.VERSION, constants.INSTANCE_PLURAL, id="coai_instances")
    async def coai_instances(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[tuple[str, str], Obj]:
        return {(namespace, name): _pack(body, constants.INSTANCE_KIND)}

    for kind, (group, version, plural, index_id) in CHILD_INDEXES.items():
        async def child(body: kopf.Body, namespace: str, name: str, _kind: str = kind, **_: Any) -> dict[Key, Obj]:
            return {(_kind, namespace, name): _pack(body, _kind)}

        def is_ours(body: kopf.Body, _kind: str = kind, **_: Any) -> bool:
            return _owned_child(body, _kind)

        kopf.index(group, version, plural, id=index_id, when=is_ours)(child)

    @kopf.on.startup(id="bind-watch-cache")
    async def bind_cache(coai_instances: kopf.Index, **indexes: Any) -> None:
        CACHE.bind({constants.INSTANCE_KIND: coai_instances,
                    **{kind: indexes[index_id] for kind, (*_, index_id) in CHILD_INDEXES.items()}})

    @kopf.on.cleanup(id="unbind-watch-cache")
    async def unbind_cache(**_: Any) -> None:
        CACHE.unbind()


_register()
