"""The instance controller's reads from watch caches instead of GETs.

- CoaiInstances: a kopf index (kopf watches them anyway, for its handlers), keyed (namespace, name).
- Children (Deployment, Service, ConfigMap, PVC, NetworkPolicy that belong to an instance): the
  thin informers of kube/informer.py, one list+watch per kind, not kopf: kopf's per-object
  machinery for those watches cost a third of the operator's memory (docs/benchmarks.md). A kind
  is read from its informer once every watched namespace has been listed; until then, by GET.
  Their events reach handlers.py (owners' reconciles) and migration/handlers.py (rollouts) as
  listeners.

Both keep objects without managedFields, as compact JSON.

The cache lags our own writes by one watch event. Every write through `kube.Kube` (by any
controller) is therefore laid over it (`CACHE.wrote`) until the cache holds that write or a later
version of the object; a read prefers the newer of the two. Whatever is still stale is caught by
the API: updates are PUTs with the cached resourceVersion (a 409 makes `kube.apply` GET and
retry) and creates of an existing object are 409s too. A stale read that finds "nothing to
change" is followed by the watch event that made it stale, which triggers a reconcile of its own.

Secrets are not cached (the operator may not list or watch them); reconcile.py remembers which
Secrets a successful check found.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import kopf

from coai_operator import constants, kube
from coai_operator.kube.informer import Informers, Store, pack, trim, unpack
from coai_operator.kube.watchsource import RestSource

log = logging.getLogger("coai_operator.instance")

Obj = dict[str, Any]
Key = tuple[str, str, str]  # kind, namespace, name
Lookup = Callable[[str, str], Obj | None]  # (namespace, name) -> object or None
OVERLAY_SECONDS = 60.0  # an echo lost to a watch restart must not pin an old write for ever
CHILD_KINDS = {"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1", "PersistentVolumeClaim": "v1",
               "NetworkPolicy": "networking.k8s.io/v1"}
# Set by `coai-operator run` (cli.py) from its --namespace options; unset or empty: all namespaces.
NAMESPACES_ENV = "COAI_WATCH_NAMESPACES"


def _pack(body: Mapping[str, Any], kind: str) -> bytes:
    return pack(trim(body, str(body.get("apiVersion") or ""), kind))


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name"))


def _not_older(indexed: Any, written: str) -> bool:
    """The cache holds our write or something after it. kopf batches a burst of events into the
    last one, so the echo itself may never be indexed; resourceVersions are etcd revisions, which
    grow (a value that is not a number is only compared for equality)."""
    try:
        return int(indexed) >= int(written)
    except (TypeError, ValueError):
        return indexed == written


def kopf_index_lookup(index: Any) -> Lookup:
    """(namespace, name) lookups in a kopf index keyed that way."""
    def lookup(namespace: str, name: str) -> Obj | None:
        for _ in range(3):  # the watch task may update the store while we read it
            try:
                values = list(index[(namespace, name)]) if (namespace, name) in index else []
                return unpack(values[-1]) if values else None
            except (KeyError, RuntimeError):
                continue
        return None

    return lookup


class Cache:
    """The watch caches, bound per kind as each becomes usable, plus our writes they have not seen yet."""

    def __init__(self) -> None:
        self._lookups: dict[str, Lookup] = {}  # kind -> lookup
        self._overlay: dict[Key, tuple[str, bytes, float]] = {}  # key -> (resourceVersion, packed, when)
        self._lock = threading.Lock()

    @property
    def bound(self) -> bool:
        """Inside the running operator (a cache is bound); outside it every read is a GET."""
        return bool(self._lookups)

    def bind(self, kind: str, lookup: Lookup) -> None:
        self._lookups = {**self._lookups, kind: lookup}  # swapped whole: readers in other threads

    def unbind(self) -> None:
        self._lookups = {}
        with self._lock:
            self._overlay.clear()

    def wrote(self, obj: Mapping[str, Any]) -> None:
        """An object as one of our writes returned it."""
        key, version = _key(obj), (obj.get("metadata") or {}).get("resourceVersion")
        if key[0] in self._lookups and version:
            with self._lock:
                self._overlay[key] = (str(version), _pack(obj, key[0]), time.monotonic())

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The newest state we know of, None when absent. Only for kinds `cached(kind)` is true."""
        key = (kind, namespace, name)
        indexed = self._lookups[kind](namespace, name)
        with self._lock:
            written = self._overlay.get(key)
            if written is None:
                return indexed
            version, packed, when = written
            seen = indexed is not None and _not_older(indexed["metadata"].get("resourceVersion"), version)
            if seen or time.monotonic() - when > OVERLAY_SECONDS:
                del self._overlay[key]
                return indexed
            return unpack(packed)

    def cached(self, kind: str) -> bool:
        return kind in self._lookups


CACHE = Cache()
kube.WRITE_LISTENERS.append(CACHE.wrote)


def _owned_child(kind: str, obj: Mapping[str, Any]) -> bool:
    from coai_operator.instance.reconcile import owner_of  # reconcile reads CACHE: imported late

    return owner_of(obj, kind) is not None


# Filtered by owner reference rather than by label: a child whose managed-by label was edited
# away must still bring its owner back to fix it.
CHILDREN = Informers(CHILD_KINDS, accept=_owned_child)


class Handoff:
    """Where listeners, which run on the informers' threads and must not block, send work: the
    thread pool kopf runs sync handlers in, or kopf's event loop (migration wake-ups live there).
    Outside the running operator (tests), both run the call at once.

    `kopf.event` posts through a queue kopf keeps in context variables, set only while kopf
    handles an object: handed-off calls run in a copy of a context remembered from there (the
    CoaiInstance indexer), or their Events would be dropped."""

    def __init__(self) -> None:
        self.executor: Executor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.context: contextvars.Context | None = None

    def attach(self, executor: Executor, loop: asyncio.AbstractEventLoop) -> None:
        self.executor, self.loop = executor, loop

    def remember_context(self) -> None:
        if self.context is None:
            self.context = contextvars.copy_context()

    def detach(self) -> None:
        self.executor = self.loop = self.context = None

    def _context(self) -> contextvars.Context:
        # A context can be entered by one thread at a time: each call gets a copy of its own.
        return self.context.copy() if self.context is not None else contextvars.copy_context()

    def to_pool(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self.executor is None:
            fn(*args, **kwargs)
            return
        try:
            future = self.executor.submit(self._context().run, fn, *args, **kwargs)
        except RuntimeError:  # the pool is shut down: the operator is stopping
            log.debug("not handed off: the operator is stopping")
            return
        future.add_done_callback(_log_failure)

    def to_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.loop is None:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args, context=self._context())


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a child event's handler failed", exc_info=future.exception())


HANDOFF = Handoff()


def watched_namespaces(value: str | None) -> list[str] | None:
    names = [ns.strip() for ns in (value or "").split(",") if ns.strip()]
    return names or None


def _register() -> None:
    # async: kopf runs sync handlers in its thread pool, behind reconciles waiting on the API;
    # this only packs a dict and must never wait.
    @kopf.index(constants.GROUP, constants.VERSION, constants.INSTANCE_PLURAL, id="coai_instances")
    async def coai_instances(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[tuple[str, str], bytes]:
        HANDOFF.remember_context()
        return {(namespace, name): _pack(body, constants.INSTANCE_KIND)}

    @kopf.on.startup(id="bind-watch-cache")
    async def bind_cache(coai_instances: kopf.Index, settings: kopf.OperatorSettings, **_: Any) -> None:
        CACHE.bind(constants.INSTANCE_KIND, kopf_index_lookup(coai_instances))
        HANDOFF.attach(settings.execution.executor, asyncio.get_running_loop())
        namespaces = watched_namespaces(os.environ.get(NAMESPACES_ENV))
        watches = len(CHILD_KINDS) * len(namespaces or [None])
        watcher = kube.Kube(api=kube.client.dedicated_api_client(watches + 2))
        seconds = int(os.environ.get("COAI_WATCH_TIMEOUT", "300"))

        def synced(kind: str, store: Store) -> None:
            CACHE.bind(kind, store.get)
            log.info("watch cache of %s: %d listed", kind, len(store))

        CHILDREN.start(lambda api_version, kind: RestSource(watcher, api_version, kind, watch_seconds=seconds),
                       namespaces, synced)

    @kopf.on.cleanup(id="unbind-watch-cache")
    async def unbind_cache(**_: Any) -> None:
        CHILDREN.stop()
        CACHE.unbind()
        HANDOFF.detach()


_register()
