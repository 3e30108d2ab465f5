"""A thin informer: one list+watch per kind and watched namespace, keeping only the objects a
filter accepts, as compact JSON, and telling listeners of every change.

Why not kopf's watches for the instances' children: kopf keeps a worker, a queue and per-object
state for every watched object that had an event lately, and runs its index and event handlers
through all of that; for the child kinds this was about a third of the operator's peak memory
(docs/benchmarks.md). Of a child the operator needs only its latest state and a wake-up of its
owner.

How it behaves (client-go's reflector, minus what we do not use):
- list, in pages, then watch from the list's resourceVersion, with bookmarks; a watch that ends is
  resumed from the last resourceVersion seen; 410 Gone (that version is too old) lists again, and
  the differences between the new list and the store become events, so no change is lost;
- the first list fills the store without events, then the store counts as synced;
- any other failure waits (1, 2, 4 … 60 s) and tries again: nothing here raises into the operator;
- listeners run on the reflector's thread, in event order, with the object without managedFields;
  they must not block (hand work to a pool or to the event loop). One that raises is logged.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

log = logging.getLogger("coai_operator.informer")

Obj = dict[str, Any]
Key = tuple[str, str]  # namespace, name
Listener = Callable[[str, Obj], None]  # (ADDED | MODIFIED | DELETED, object)
BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)
MIN_WATCH_SECONDS = 1.0  # a watch that ends at once is not resumed in a tight loop


class GoneError(Exception):
    """The resourceVersion is too old to watch from (HTTP 410): list again."""


class Source(Protocol):
    """The API as the reflector sees it (kube/client.Kube.watch_source, or a fake in tests)."""

    def list(self, namespace: str | None) -> tuple[list[Obj], str]:
        """Every object (all pages) and the list's resourceVersion."""
        ...

    def watch(self, namespace: str | None, resource_version: str) -> Iterator[Obj]:
        """Watch events ({"type", "object"}) from that version until the server ends the watch."""
        ...


def trim(body: Mapping[str, Any], api_version: str, kind: str) -> Obj:
    """The object as kept: without managedFields; kind and apiVersion set (items of a list lack them)."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    rest = {k: v for k, v in body.items() if k != "metadata"}
    return {**({"apiVersion": api_version} if api_version else {}), **rest, "metadata": meta, "kind": kind}


def pack(obj: Mapping[str, Any]) -> bytes:
    """Compact JSON, a few times smaller than the same object as dicts; each read decodes a fresh
    copy, so no caller can change what a store holds."""
    return json.dumps(obj, separators=(",", ":")).encode()


def unpack(value: Any) -> Obj:
    return json.loads(value) if isinstance(value, bytes | str) else dict(value)


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def namespace_filter(patterns: Iterable[str]) -> Callable[[str], bool] | None:
    """kopf's namespace patterns (globs, `!x` excludes) as a predicate; None when all are admitted."""
    include = [p for p in patterns if not p.startswith("!")]
    exclude = [p[1:] for p in patterns if p.startswith("!")]
    if not include and not exclude:
        return None
    return lambda ns: (not include or any(fnmatch.fnmatchcase(ns, p) for p in include)) and not any(
        fnmatch.fnmatchcase(ns, p) for p in exclude)


class Store:
    """(namespace, name) -> (resourceVersion, packed object). Written by reflector threads and read
    by reconciles; single dict operations are atomic under the GIL, so reads need no lock."""

    def __init__(self) -> None:
        self._items: dict[Key, tuple[str, bytes]] = {}
        self.synced = threading.Event()  # every reflector of this store has listed once

    def get(self, namespace: str, name: str) -> Obj | None:
        found = self._items.get((namespace, name))
        return unpack(found[1]) if found else None

    def version(self, key: Key) -> str | None:
        found = self._items.get(key)
        return found[0] if found else None

    def put(self, obj: Obj) -> None:
        self._items[_key(obj)] = (_version(obj), pack(obj))

    def pop(self, key: Key) -> Obj | None:
        found = self._items.pop(key, None)
        return unpack(found[1]) if found else None

    def names(self, namespace: str | None = None) -> list[Key]:
        return [k for k in list(self._items) if namespace is None or k[0] == namespace]

    def __len__(self) -> int:
        return len(self._items)


class Reflector:
    """Keeps one Store in step with one kind in one namespace (None: every namespace)."""

    def __init__(self, api_version: str, kind: str, source: Source, store: Store, *, namespace: str | None,
                 accept: Callable[[Obj], bool], listeners: list[Listener],
                 admit_namespace: Callable[[str], bool] | None = None) -> None:
        self.api_version, self.kind, self.source, self.store = api_version, kind, source, store
        self.namespace, self.accept, self.listeners = namespace, accept, listeners
        self.admit_namespace = admit_namespace
        self.resource_version: str | None = None  # None: list next
        self.listed = False

    def step(self) -> int:
        """One list, or one watch until the server ends it; the number of events handled."""
        if self.resource_version is None:
            items, version = self.source.list(self.namespace)
            handled = self._relisted(items)
            self.resource_version, self.listed = version, True
            return handled
        handled = 0
        for event in self.source.watch(self.namespace, self.resource_version):
            type_, obj = str(event.get("type")), event.get("object") or {}
            if type_ == "ERROR":
                if obj.get("code") == 410:
                    raise GoneError(obj.get("message") or "GoneError")
                raise RuntimeError(f"watch error: {obj.get('message') or obj}")
            if type_ in ("ADDED", "MODIFIED", "DELETED"):
                self._apply(type_, trim(obj, self.api_version, self.kind))
                handled += 1
            self.resource_version = _version(obj) or self.resource_version  # BOOKMARKs carry only this
        return handled

    def _admitted(self, obj: Obj) -> bool:
        return self.admit_namespace is None or self.admit_namespace(_key(obj)[0])

    def _apply(self, type_: str, obj: Obj) -> None:
        if not self._admitted(obj):
            return
        key = _key(obj)
        if type_ != "DELETED" and self.accept(obj):
            self.store.put(obj)
            self._emit(type_, obj)
            return
        old = self.store.pop(key)
        if type_ == "DELETED" and (old is not None or self.accept(obj)):
            self._emit("DELETED", obj)
        elif old is not None:  # no longer ours (an owner reference edited away): its owner must hear
            self._emit("DELETED", old)

    def _relisted(self, items: list[Obj]) -> int:
        """The store becomes the list. After the first list, what differs is told as events."""
        listed: dict[Key, Obj] = {}
        for item in items:
            obj = trim(item, self.api_version, self.kind)
            if self._admitted(obj) and self.accept(obj):
                listed[_key(obj)] = obj
        events: list[tuple[str, Obj]] = []
        for key, obj in listed.items():
            before = self.store.version(key)
            if before != _version(obj):
                events.append(("ADDED" if before is None else "MODIFIED", obj))
            self.store.put(obj)
        for key in self.store.names(self.namespace):
            old = self.store.pop(key) if key not in listed else None
            if old is not None:
                events.append(("DELETED", old))
        if not self.listed:
            return 0
        for type_, obj in events:
            self._emit(type_, obj)
        return len(events)

    def _emit(self, type_: str, obj: Obj) -> None:
        for listener in self.listeners:
            try:
                listener(type_, obj)
            except Exception:  # one listener must not starve the others, nor stop the watch
                log.exception("%s listener failed on %s %s/%s", self.kind, type_.lower(), *_key(obj))

    def run(self, stopped: threading.Event, on_listed: Callable[[], None] = lambda: None,
            now: Callable[[], float] = time.monotonic) -> None:
        """step() until stopped; failures back off and are logged once per distinct message."""
        failures, last_error = 0, ""
        while not stopped.is_set():
            started, was_listed = now(), self.listed
            try:
                handled = self.step()
            except GoneError:
                log.debug("%s watch in %s: resourceVersion too old, listing again", self.kind, self.namespace or "*")
                self.resource_version = None
                continue
            except Exception as exc:  # the API unreachable, forbidden, a broken stream: try again later
                message = f"{type(exc).__name__}: {exc}"
                (log.warning if message != last_error else log.debug)(
                    "%s watch in %s failed (%s); retrying", self.kind, self.namespace or "all namespaces", message)
                last_error = message
                stopped.wait(BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)])
                failures += 1
                continue
            failures, last_error = 0, ""
            if self.listed and not was_listed:
                on_listed()
            elif not handled and now() - started < MIN_WATCH_SECONDS:
                stopped.wait(MIN_WATCH_SECONDS)


class Informers:
    """A Store per kind and a Reflector thread per kind and namespace, started and stopped together.

    Listeners are declared at import time (`listen`); `start` begins the watches, and calls
    `on_synced(kind, store)` once every namespace of that kind has been listed."""

    def __init__(self, kinds: Mapping[str, str], accept: Callable[[str, Obj], bool]) -> None:
        self.kinds = dict(kinds)  # kind -> apiVersion
        self.accept = accept
        self.listeners: dict[str, list[Listener]] = {kind: [] for kind in kinds}
        self.stores: dict[str, Store] = {}
        self._stopped = threading.Event()
        self._sources: list[Any] = []

    def listen(self, kind: str, listener: Listener) -> None:
        self.listeners[kind].append(listener)

    def start(self, source: Callable[[str, str], Source], namespaces: list[str] | None,
              on_synced: Callable[[str, Store], None]) -> list[threading.Thread]:
        """`source(api_version, kind)`; namespaces None or empty: all. Patterns watch every
        namespace and keep the matching ones (the operator then needs cluster-wide list/watch)."""
        plain = bool(namespaces) and not any(set(ns) & set("*?[!") for ns in namespaces or [])
        scopes: list[str | None] = list(namespaces or []) if plain else [None]
        admit = None if plain else namespace_filter(namespaces or [])
        self._stopped.clear()
        threads = []
        for kind, api_version in self.kinds.items():
            store = self.stores[kind] = Store()
            waiting = set(scopes)

            def listed(scope: str | None, kind: str = kind, store: Store = store, waiting: set = waiting) -> None:
                waiting.discard(scope)
                if not waiting and not store.synced.is_set():
                    store.synced.set()
                    on_synced(kind, store)

            for scope in scopes:
                src = source(api_version, kind)
                self._sources.append(src)
                reflector = Reflector(api_version, kind, src, store, namespace=scope,
                                      accept=lambda obj, kind=kind: self.accept(kind, obj),
                                      listeners=self.listeners[kind], admit_namespace=admit)
                thread = threading.Thread(target=reflector.run, args=(self._stopped, lambda s=scope, f=listed: f(s)),
                                          name=f"watch-{kind}-{scope or 'all'}", daemon=True)
                thread.start()
                threads.append(thread)
        return threads

    def stop(self) -> None:
        self._stopped.set()
        for src in self._sources:
            close = getattr(src, "close", None)
            if close is not None:
                close()
        self._sources.clear()
