"""An in-memory stand-in for the Kubernetes API, shaped like controller-runtime's fake client.

It implements the `Kube` surface the controllers use (get / list / create / patch / replace /
delete) with the API server's rules that matter to them: resourceVersion bumps on every write and
is honoured as a precondition (409), create of an existing object is 409, writes to a missing one
are 404, JSON merge patches (RFC 7386), the status subresource, and metadata.generation that moves
only with the spec. `fail(...)` makes the next matching calls answer an error, so a test can hit
every failure branch. Nothing else (no admission, no defaulting, no garbage collection).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from coai_operator.conditions import now_rfc3339
from coai_operator.kube import KubeError, RequestStats

Obj = dict[str, Any]
Key = tuple[str, str | None, str]


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Fault:
    verb: str
    kind: str
    status: int
    times: int
    name: str | None = None


@dataclass
class FakeKube:
    objects: dict[Key, Obj] = field(default_factory=dict)
    stats: RequestStats = field(default_factory=RequestStats)
    faults: list[Fault] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    api: Any = None
    _rv: Any = field(default_factory=lambda: itertools.count(1))

    # --- test helpers -------------------------------------------------------------------------
    def fail(self, verb: str, kind: str, status: int = 500, times: int = 1, name: str | None = None) -> None:
        """The next `times` calls of `verb` on `kind` (and `name`, if given) answer HTTP `status`."""
        self.faults.append(Fault(verb, kind, status, times, name))

    def put(self, obj: Obj) -> Obj:
        """Store an object as if somebody else created it (no faults, no stats)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[self._key(obj["kind"], meta.get("namespace"), meta["name"])] = obj
        return copy.deepcopy(obj)

    def writes(self, verb: str | None = None, kind: str | None = None) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] != "get" and c[0] != "list"
                and (verb is None or c[0] == verb) and (kind is None or c[1] == kind)]

    # --- the Kube surface ---------------------------------------------------------------------
    @staticmethod
    def _key(kind: str, namespace: str | None, name: str) -> Key:
        return (kind, namespace, name)

    def _check(self, verb: str, kind: str, name: str) -> None:
        self.calls.append((verb, kind, name))
        for fault in self.faults:
            if fault.times > 0 and fault.verb == verb and fault.kind == kind and fault.name in (None, name):
                fault.times -= 1
                raise KubeError(fault.status, "Injected", f"{verb} {kind} {name}: injected (HTTP {fault.status})")

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        self._check("get", kind, name)
        self.stats.reads += 1
        obj = self.objects.get(self._key(kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None) -> list[Obj]:
        self._check("list", kind, "")
        self.stats.reads += 1
        wanted = dict(p.split("=", 1) for p in label_selector.split(",")) if label_selector else {}
        return [copy.deepcopy(o) for (k, ns, _), o in self.objects.items()
                if k == kind and ns == namespace
                and all((o["metadata"].get("labels") or {}).get(a) == b for a, b in wanted.items())]

    def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        self._check("create", obj["kind"], meta["name"])
        self.stats.writes += 1
        if self._key(obj["kind"], meta.get("namespace"), meta["name"]) in self.objects:
            raise KubeError(409, "AlreadyExists", f"{obj['kind']} {meta['name']} already exists (HTTP 409)")
        # The API server stamps the creation time (whatever the client sent).
        created = {**obj, "metadata": {**meta, "creationTimestamp": now_rfc3339()}}
        return self.put(created)

    def replace(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        self._check("replace", obj["kind"], meta["name"])
        live = self._live(obj["kind"], meta.get("namespace"), meta["name"])
        self._precondition(live, meta.get("resourceVersion"))
        return self._store(live, {**copy.deepcopy(obj), "status": live.get("status")})

    def patch(self, api_version: str, kind: str, namespace: str | None, name: str, patch: Obj, *,
              subresource: str | None = None) -> Obj:
        self._check("patch/status" if subresource == "status" else "patch", kind, name)
        live = self._live(kind, namespace, name)
        self._precondition(live, (patch.get("metadata") or {}).get("resourceVersion"))
        patch = copy.deepcopy(patch)
        (patch.get("metadata") or {}).pop("resourceVersion", None)
        if subresource == "status":
            patch = {"status": patch.get("status")} if "status" in patch else {}
        else:
            patch.pop("status", None)
        return self._store(live, merge_patch(live, patch))

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str,
               propagation: str = "Background") -> bool:
        self._check("delete", kind, name)
        self.stats.writes += 1
        return self.objects.pop(self._key(kind, namespace, name), None) is not None

    # --- internals ----------------------------------------------------------------------------
    def _live(self, kind: str, namespace: str | None, name: str) -> Obj:
        self.stats.writes += 1
        live = self.objects.get(self._key(kind, namespace, name))
        if live is None:
            raise KubeError(404, "NotFound", f"{kind} {namespace}/{name} not found (HTTP 404)")
        return live

    @staticmethod
    def _precondition(live: Obj, version: str | None) -> None:
        if version and version != live["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", f"{live['kind']} {live['metadata']['name']}: the object has been "
                                             "modified (HTTP 409)")

    def _store(self, live: Obj, new: Obj) -> Obj:
        if new.get("spec") != live.get("spec"):
            new["metadata"]["generation"] = int(live["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        meta = new["metadata"]
        self.objects[self._key(new["kind"], meta.get("namespace"), meta["name"])] = new
        return copy.deepcopy(new)
