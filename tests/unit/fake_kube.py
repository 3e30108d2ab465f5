"""An in-memory stand-in for `coai_operator.kube.Kube` that behaves like an API server where it
matters for write avoidance: it adds server-side defaults, allocates a clusterIP, canonicalizes
quantities and bumps resourceVersion only when an object really changes."""

from __future__ import annotations

import copy
import itertools
import uuid
from typing import Any

from coai_operator.kube import KubeError, RequestStats

Obj = dict[str, Any]
Key = tuple[str, str, str]  # kind, namespace, name

CANONICAL_QUANTITIES = {"1024Mi": "1Gi", "2048Mi": "2Gi", "0.5": "500m"}


def _canonical(value: Any, parent: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v, parent) for v in value]
    if parent in ("requests", "limits") and isinstance(value, str):
        return CANONICAL_QUANTITIES.get(value, value)
    return value


def server_defaults(obj: Obj) -> Obj:
    """A few of the defaults the real API server adds (enough to trip a naive comparison)."""
    obj = _canonical(copy.deepcopy(obj))
    kind, spec = obj["kind"], obj.get("spec")
    if kind == "Deployment":
        spec.setdefault("progressDeadlineSeconds", 600)
        pod = spec["template"]["spec"]
        pod.setdefault("restartPolicy", "Always")
        pod.setdefault("dnsPolicy", "ClusterFirst")
        pod.setdefault("schedulerName", "default-scheduler")
        pod.setdefault("terminationGracePeriodSeconds", 30)
        for container in pod["containers"]:
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("imagePullPolicy", "IfNotPresent")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in container and "httpGet" in container[probe]:
                    container[probe]["httpGet"].setdefault("scheme", "HTTP")
                    container[probe].setdefault("successThreshold", 1)
    if kind == "Service":
        spec.setdefault("clusterIP", "10.0.0.17")
        spec.setdefault("clusterIPs", ["10.0.0.17"])
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    if kind == "PersistentVolumeClaim":
        spec.setdefault("volumeMode", "Filesystem")
        spec.setdefault("storageClassName", "standard")
    return obj


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[Key, Obj] = {}
        self.stats = RequestStats()
        self.writes: list[str] = []
        self._rv = itertools.count(1)

    # -- helpers for tests ------------------------------------------------------------------
    def put(self, obj: Obj) -> Obj:
        """Store an object as if someone else created it (no request counted)."""
        stored = server_defaults(obj)
        meta = stored.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("generation", 1)
        self.objects[(stored["kind"], meta.get("namespace", ""), meta["name"])] = stored
        return copy.deepcopy(stored)

    def stored(self, kind: str, namespace: str, name: str) -> Obj:
        return self.objects[(kind, namespace, name)]

    # -- the Kube interface -------------------------------------------------------------------
    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        self.stats.reads += 1
        obj = self.objects.get((kind, namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def create(self, obj: Obj) -> Obj:
        self.stats.writes += 1
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        self.writes.append(f"POST {key}")
        if key in self.objects:
            raise KubeError(409, "AlreadyExists", f"{key} already exists")
        return self.put(obj)

    def replace(self, obj: Obj) -> Obj:
        self.stats.writes += 1
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        self.writes.append(f"PUT {key}")
        live = self.objects.get(key)
        if live is None:
            raise KubeError(404, "NotFound", f"{key} not found")
        if meta.get("resourceVersion") != live["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", f"{key} was modified")
        new = server_defaults(obj)
        new["metadata"]["uid"] = live["metadata"]["uid"]
        if "status" in live:
            new["status"] = live["status"]
        if self._content(new) == self._content(live):
            return copy.deepcopy(live)  # a no-op update does not bump resourceVersion
        if new.get("spec") != live.get("spec"):
            new["metadata"]["generation"] = live["metadata"].get("generation", 1) + 1
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[key] = new
        return copy.deepcopy(new)

    def patch(self, api_version: str, kind: str, namespace: str | None, name: str, patch: Obj, *,
              subresource: str | None = None) -> Obj:
        self.stats.writes += 1
        key = (kind, namespace or "", name)
        self.writes.append(f"PATCH {key} {subresource or ''}".strip())
        live = self.objects.get(key)
        if live is None:
            raise KubeError(404, "NotFound", f"{key} not found")
        _merge(live, copy.deepcopy(patch))
        live["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(live)

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str,
               propagation: str = "Background") -> bool:
        self.stats.writes += 1
        self.writes.append(f"DELETE {(kind, namespace, name)}")
        return self.objects.pop((kind, namespace or "", name), None) is not None

    @staticmethod
    def _content(obj: Obj) -> Obj:
        clean = copy.deepcopy(obj)
        clean["metadata"].pop("resourceVersion", None)
        clean["metadata"].pop("generation", None)
        return clean


def _merge(target: Obj, patch: Obj) -> None:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
