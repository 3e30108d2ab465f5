"""The one place the controllers talk to the Kubernetes API for the objects they own.

`apply(kube, desired)` is an idempotent create-or-update: GET, compare only what we own, write
only when it differs, create on 404, tolerate 409. A reconcile that finds nothing to change makes
read requests only. The comparison (`plan_update`) is pure and unit-tested.

What "owned" means:
- metadata: the labels and annotations we set (other keys on the live object are kept) and the
  ownerReferences that point at a coai.dev object (others are kept).
- every other top-level field of the desired manifest (spec, data, ...). Live values must contain
  ours; fields the API server defaults (e.g. a container's terminationMessagePath) are ignored.
  `data`/`binaryData`/`stringData` must match exactly (a removed key is a change).
- a field we stop setting must disappear: a hash of the desired manifest is kept in the
  annotation `coai.dev/applied-hash`; when it changes the owned fields are replaced wholesale
  (PUT), which also drops fields we no longer set.
- PersistentVolumeClaims: only metadata and spec.resources.requests.storage (growth only): the
  rest of a PVC's spec is immutable after creation.

Objects are plain dicts in their JSON form (camelCase), as `kubectl get -o json` shows them.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity

from coai_operator import constants

log = logging.getLogger("coai_operator.kube")

Obj = dict[str, Any]

APPLIED_HASH_ANNOTATION = f"{constants.GROUP}/applied-hash"
# Which of the object's annotations are ours, so one we stop setting is removed (others are kept).
APPLIED_ANNOTATIONS_ANNOTATION = f"{constants.GROUP}/applied-annotations"
OWN_ANNOTATIONS = frozenset({APPLIED_HASH_ANNOTATION, APPLIED_ANNOTATIONS_ANNOTATION})
# Pod-template metadata is ours, except what `kubectl rollout restart` and friends put there.
FOREIGN_TEMPLATE_PREFIXES = ("kubectl.kubernetes.io/",)
EXACT_FIELDS = frozenset({"data", "binaryData", "stringData"})
# Dicts whose values are resource quantities: "1024Mi" and "1Gi" are the same value, and the API
# server stores quantities in canonical form, so compare them as numbers.
QUANTITY_PARENTS = frozenset({"requests", "limits", "capacity"})

# kind -> (plural, namespaced). Only what the operator manages or reads.
RESOURCES: dict[str, tuple[str, bool]] = {
    "ConfigMap": ("configmaps", True),
    "Secret": ("secrets", True),
    "Service": ("services", True),
    "PersistentVolumeClaim": ("persistentvolumeclaims", True),
    "Pod": ("pods", True),
    "ServiceAccount": ("serviceaccounts", True),
    "Deployment": ("deployments", True),
    "StatefulSet": ("statefulsets", True),
    "ReplicaSet": ("replicasets", True),
    "Job": ("jobs", True),
    constants.INSTANCE_KIND: (constants.INSTANCE_PLURAL, True),
    constants.MIGRATION_KIND: (constants.MIGRATION_PLURAL, True),
    "CoaiBackupLocation": ("coaibackuplocations", True),
    "CoaiBackup": ("coaibackups", True),
    "CoaiBackupSchedule": ("coaibackupschedules", True),
    "CoaiRestore": ("coairestores", True),
    "Namespace": ("namespaces", False),
}

_WRITE_SEQUENCE = itertools.count(1)  # process-wide, so the log shows every write in order


class KubeError(Exception):
    """An API call failed; `message` is one line a person can read, `status` the HTTP code."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _error(exc: ApiException, what: str) -> KubeError:
    reason, message = exc.reason or "Error", ""
    try:
        body = json.loads(exc.body or "{}")
        reason = body.get("reason") or reason
        message = body.get("message") or ""
    except (ValueError, TypeError):
        message = (exc.body or "").strip().splitlines()[0] if exc.body else ""
    return KubeError(int(exc.status or 0), str(reason), f"{what}: {message or reason} (HTTP {exc.status})")


_default_client: client.ApiClient | None = None
_client_lock = threading.Lock()


def default_api_client() -> client.ApiClient:
    """An ApiClient from the in-cluster service account, else $KUBECONFIG / ~/.kube/config."""
    global _default_client
    with _client_lock:
        if _default_client is None:
            configuration = client.Configuration()
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)
            _default_client = client.ApiClient(configuration)
        return _default_client


@dataclass
class RequestStats:
    reads: int = 0
    writes: int = 0

    def __str__(self) -> str:
        return f"{self.reads} reads, {self.writes} writes"


@dataclass
class Kube:
    """A dict-in, dict-out client over the REST API that counts its requests.

    Make one per reconcile (cheap: the ApiClient and its connection pool are shared) so
    `stats` tells what that reconcile cost.
    """

    api: client.ApiClient = field(default_factory=default_api_client)
    field_manager: str = constants.MANAGED_BY
    timeout: float = 30
    stats: RequestStats = field(default_factory=RequestStats)

    @staticmethod
    def path(api_version: str, kind: str, namespace: str | None, name: str | None = None,
             subresource: str | None = None) -> str:
        plural, namespaced = RESOURCES[kind]
        root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        parts = [root]
        if namespaced:
            if not namespace:
                raise ValueError(f"{kind} is namespaced: a namespace is required")
            parts.append(f"namespaces/{namespace}")
        parts.append(plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)

    def request(self, method: str, path: str, body: Any = None, *, query: list[tuple[str, str]] | None = None,
                content_type: str = "application/json") -> Obj:
        is_write = method != "GET"
        if is_write:
            query = [*(query or []), ("fieldManager", self.field_manager)]
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method_, url, headers, body, _ = self.api.param_serialize(
            method=method, resource_path=path, query_params=query or None, header_params=headers, body=body,
            auth_settings=["BearerToken"])
        if is_write:
            self.stats.writes += 1
        else:
            self.stats.reads += 1
        response = self.api.call_api(method_, url, header_params=headers, body=body, _request_timeout=self.timeout)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return json.loads(data) if data else {}

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", self.path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _error(exc, f"get {kind} {namespace}/{name}") from exc

    def list(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None) -> list[Obj]:
        query = [("labelSelector", label_selector)] if label_selector else None
        try:
            return list(self.request("GET", self.path(api_version, kind, namespace), query=query).get("items", []))
        except ApiException as exc:
            raise _error(exc, f"list {kind} in {namespace}") from exc

    def _write(self, method: str, obj_ref: str, path: str, body: Any, content_type: str = "application/json") -> Obj:
        seq = next(_WRITE_SEQUENCE)
        log.debug("kube write #%d: %s %s", seq, method, obj_ref)
        try:
            written = self.request(method, path, body, content_type=content_type)
        except ApiException as exc:
            raise _error(exc, f"{method} {obj_ref}") from exc
        remember_own_write(written)
        return written

    def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        path = self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        return self._write("POST", describe(obj), path, obj)

    def replace(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        path = self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return self._write("PUT", describe(obj), path, obj)

    def patch(self, api_version: str, kind: str, namespace: str | None, name: str, patch: Obj, *,
              subresource: str | None = None) -> Obj:
        """A JSON merge patch (RFC 7386)."""
        path = self.path(api_version, kind, namespace, name, subresource)
        ref = f"{kind} {namespace}/{name}" + (f" ({subresource})" if subresource else "")
        return self._write("PATCH", ref, path, patch, content_type="application/merge-patch+json")

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str,
               propagation: str = "Background") -> bool:
        """Delete; False when it was already gone."""
        path = self.path(api_version, kind, namespace, name)
        try:
            self._write("DELETE", f"{kind} {namespace}/{name}", path, {"propagationPolicy": propagation})
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True


# The resourceVersion each of our own writes produced, so the watch event that echoes it back can be
# told apart from a change made by somebody else (a controller, a person). Bounded: old entries go.
_OWN_WRITES: dict[str, str] = {}
_OWN_WRITES_LIMIT = 20000


def _object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('namespace')}/{meta.get('name')}"


def remember_own_write(obj: Mapping[str, Any]) -> None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    if not version or not obj.get("kind"):
        return
    if len(_OWN_WRITES) >= _OWN_WRITES_LIMIT:
        _OWN_WRITES.pop(next(iter(_OWN_WRITES)))
    _OWN_WRITES[_object_key(obj)] = version


def is_own_write_echo(obj: Mapping[str, Any], kind: str) -> bool:
    """True when `obj` is exactly the state our last write to it produced: nothing new to react to."""
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return bool(version) and _OWN_WRITES.get(_object_key({**obj, "kind": kind})) == version


def describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj.get('kind')} {ns + '/' if ns else ''}{meta.get('name')}"


# --- pure comparison -------------------------------------------------------------------------

def desired_hash(desired: Mapping[str, Any]) -> str:
    """A short stable hash of a manifest (without our own hash annotation)."""
    clean = copy.deepcopy(dict(desired))
    annotations = clean.get("metadata", {}).get("annotations", {})
    for key in OWN_ANNOTATIONS:
        annotations.pop(key, None)
    canonical = json.dumps(clean, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _is_empty(value: Any) -> bool:
    return value is None or value == {} or value == [] or value == ""


def _quantity(value: Any) -> Decimal | None:
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError, ArithmeticError):
        return None


def _scalar_equal(want: Any, have: Any, parent: str | None) -> bool:
    if want == have and type(want) is type(have):
        return True
    if isinstance(want, bool) or isinstance(have, bool):
        return False
    if parent in QUANTITY_PARENTS and want is not None and have is not None:
        a, b = _quantity(want), _quantity(have)
        return a is not None and a == b
    if isinstance(want, int | float) and isinstance(have, int | float):
        return want == have
    return False


def contains(want: Any, have: Any, parent: str | None = None) -> bool:
    """True when `have` (live) carries everything in `want` (desired).

    Dicts: every key of `want` must match; extra keys in `have` are API-server defaults or someone
    else's and are ignored. Lists: same length, element by element. Empty desired values match a
    missing live value (the API server omits empty fields).
    """
    if isinstance(want, dict):
        if have is None:
            return all(_is_empty(v) for v in want.values())
        if not isinstance(have, dict):
            return False
        # A scalar is judged by the key of the dict holding it ("limits" for limits.memory).
        return all(contains(v, have.get(k), k if isinstance(v, dict | list) else parent) for k, v in want.items())
    if isinstance(want, list):
        if have is None:
            return not want
        if not isinstance(have, list) or len(want) != len(have):
            return False
        return all(contains(w, h, parent) for w, h in zip(want, have, strict=True))
    if have is None:
        return _is_empty(want)
    return _scalar_equal(want, have, parent)


def _is_ours(ref: Mapping[str, Any]) -> bool:
    return str(ref.get("apiVersion", "")).split("/")[0] == constants.GROUP


def _owner_refs(desired_meta: Mapping[str, Any], live_meta: Mapping[str, Any]) -> list[Obj] | None:
    """The ownerReferences live should have, or None when they are already right.

    Desired lists the complete set of coai.dev owners (an empty list: none); owners that are not
    coai.dev objects are someone else's and kept. A manifest without the key leaves owners alone.
    """
    if "ownerReferences" not in desired_meta:
        return None
    live = list(live_meta.get("ownerReferences") or [])
    wanted = list(desired_meta.get("ownerReferences") or [])
    ours_live = [r for r in live if _is_ours(r)]
    if len(ours_live) == len(wanted) and all(any(contains(w, r) for r in ours_live) for w in wanted):
        return None
    return [r for r in live if not _is_ours(r)] + wanted


def _metadata_changes(desired: Obj, live: Obj) -> Obj:
    """The metadata keys (labels, annotations, ownerReferences) that must change, merged with live."""
    want, have = desired.get("metadata", {}), live.get("metadata", {})
    changes: Obj = {}
    wanted_labels, current_labels = want.get("labels") or {}, have.get("labels") or {}
    if any(current_labels.get(k) != v for k, v in wanted_labels.items()):
        changes["labels"] = {**current_labels, **wanted_labels}
    wanted, current = want.get("annotations") or {}, have.get("annotations") or {}
    previous = set(filter(None, current.get(APPLIED_ANNOTATIONS_ANNOTATION, "").split(",")))
    stale = (previous - set(wanted)) | ({APPLIED_ANNOTATIONS_ANNOTATION} - set(wanted))
    if any(current.get(k) != v for k, v in wanted.items()) or stale & set(current):
        changes["annotations"] = {**{k: v for k, v in current.items() if k not in stale}, **wanted}
    owners = _owner_refs(want, have)
    if owners is not None:
        changes["ownerReferences"] = owners
    return changes


def _keep_foreign_template_metadata(spec: Obj, live_spec: Mapping[str, Any] | None) -> Obj:
    """Keep pod-template annotations such as kubectl.kubernetes.io/restartedAt (rollout restart)."""
    template = spec.get("template")
    live_template = (live_spec or {}).get("template")
    if not isinstance(template, dict) or not isinstance(live_template, dict):
        return spec
    live_annotations = (live_template.get("metadata") or {}).get("annotations") or {}
    foreign = {k: v for k, v in live_annotations.items() if k.startswith(FOREIGN_TEMPLATE_PREFIXES)}
    if foreign:
        meta = template.setdefault("metadata", {})
        meta["annotations"] = {**foreign, **(meta.get("annotations") or {})}
    return spec


def _plan_pvc(desired: Obj, live: Obj) -> Obj | None:
    body = copy.deepcopy(live)
    body.pop("status", None)
    body["metadata"].pop("managedFields", None)
    changed = False
    meta_changes = _metadata_changes(desired, live)
    if meta_changes:
        body["metadata"].update(meta_changes)
        changed = True
    want = (((desired.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
    have = (((live.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
    want_q, have_q = _quantity(want), _quantity(have)
    if want_q is not None and (have_q is None or want_q > have_q):  # a PVC can grow, never shrink
        body.setdefault("spec", {}).setdefault("resources", {}).setdefault("requests", {})["storage"] = want
        changed = True
    return body if changed else None


def with_applied_hash(desired: Obj) -> Obj:
    """`desired` plus the bookkeeping annotations that let `plan_update` notice removed fields."""
    result = copy.deepcopy(desired)
    annotations = result.setdefault("metadata", {}).setdefault("annotations", {})
    user_keys = sorted(k for k in annotations if k not in OWN_ANNOTATIONS)
    if user_keys:
        annotations[APPLIED_ANNOTATIONS_ANNOTATION] = ",".join(user_keys)
    annotations[APPLIED_HASH_ANNOTATION] = desired_hash(desired)
    return result


def plan_update(desired: Obj, live: Obj) -> Obj | None:
    """Pure: the object to PUT so that `live` carries everything we own, or None if it already does.

    `desired` must already carry the applied-hash annotation (see `with_applied_hash`); PVCs do not
    need it.
    """
    if desired.get("kind") == "PersistentVolumeClaim":
        return _plan_pvc(desired, live)
    meta_changes = _metadata_changes(desired, live)
    owned = [k for k in desired if k not in ("apiVersion", "kind", "metadata", "status")]
    fields_match = all(
        (desired[k] or {}) == (live.get(k) or {}) if k in EXACT_FIELDS else contains(desired[k], live.get(k), k)
        for k in owned
    )
    if not meta_changes and fields_match:
        return None
    body = copy.deepcopy(live)
    body.pop("status", None)
    body["metadata"].pop("managedFields", None)  # absent in an update: the server keeps its own
    body["metadata"].update(meta_changes)
    for key in owned:
        value = copy.deepcopy(desired[key])
        if key == "spec" and isinstance(value, dict):
            value = _keep_foreign_template_metadata(value, live.get("spec"))
            if desired.get("kind") == "Service":
                # Allocated by the API server and immutable; a PUT without them would fail.
                for allocated in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                    if allocated not in value and allocated in (live.get("spec") or {}):
                        value[allocated] = live["spec"][allocated]
        body[key] = value
    return body


# --- apply -----------------------------------------------------------------------------------

Action = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class ApplyResult:
    action: Action
    object: Obj

    @property
    def changed(self) -> bool:
        return self.action != "unchanged"


def apply(kube: Kube, desired: Obj, *, attempts: int = 3) -> ApplyResult:
    """Create `desired`, or bring the live object's owned fields in line with it.

    Writes nothing when the live object already matches. Tolerates 404 (create) and 409 (someone
    created or changed it meanwhile: read again and retry). Raises KubeError otherwise.
    """
    want = desired if desired.get("kind") == "PersistentVolumeClaim" else with_applied_hash(desired)
    meta = want["metadata"]
    api_version, kind, ns, name = want["apiVersion"], want["kind"], meta.get("namespace"), meta["name"]
    last: KubeError | None = None
    for _ in range(attempts):
        live = kube.get(api_version, kind, ns, name)
        try:
            if live is None:
                created = kube.create(want)
                log.info("created %s", describe(want))
                return ApplyResult("created", created)
            body = plan_update(want, live)
            if body is None:
                return ApplyResult("unchanged", live)
            updated = kube.replace(body)
            log.info("updated %s", describe(want))
            return ApplyResult("updated", updated)
        except KubeError as exc:
            if exc.status != 409:
                raise
            last = exc
    assert last is not None
    raise last
