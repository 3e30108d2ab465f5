"""Create-or-update of the objects the controllers own: the pure comparison and `apply`.

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
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from kubernetes.utils.quantity import parse_quantity

from coai_operator import constants
from coai_operator.kube.client import Kube, KubeError, describe

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

# --- pure comparison -------------------------------------------------------------------------

def desired_hash(desired: Mapping[str, Any]) -> str:
    """A short stable hash of a manifest (without our own hash annotation)."""
    # Copies only the path it changes (a deep copy of every child cost a fifth of a reconcile's CPU).
    clean = dict(desired)
    meta = clean.get("metadata")
    if isinstance(meta, Mapping) and isinstance(meta.get("annotations"), Mapping):
        annotations = {k: v for k, v in meta["annotations"].items() if k not in OWN_ANNOTATIONS}
        clean["metadata"] = {**meta, "annotations": annotations}
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
    meta_changes = _metadata_changes(desired, live)
    want = (((desired.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
    have = (((live.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
    want_q, have_q = _quantity(want), _quantity(have)
    grow = want_q is not None and (have_q is None or want_q > have_q)  # a PVC can grow, never shrink
    if not meta_changes and not grow:
        return None
    body = copy.deepcopy(live)
    body.pop("status", None)
    body["metadata"].pop("managedFields", None)
    body["metadata"].update(meta_changes)
    if grow:
        body.setdefault("spec", {}).setdefault("resources", {}).setdefault("requests", {})["storage"] = want
    return body


def with_applied_hash(desired: Obj) -> Obj:
    """`desired` plus the bookkeeping annotations that let `plan_update` notice removed fields. Shares
    everything but metadata.annotations with `desired` (neither is changed afterwards)."""
    meta = dict(desired.get("metadata") or {})
    annotations = meta["annotations"] = dict(meta.get("annotations") or {})
    result = {**desired, "metadata": meta}
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


_UNREAD: Any = object()


def apply(kube: Kube, desired: Obj, *, attempts: int = 3, live: Obj | None = _UNREAD) -> ApplyResult:
    """Create `desired`, or bring the live object's owned fields in line with it.

    Writes nothing when the live object already matches. Tolerates 404 (create) and 409 (someone
    created or changed it meanwhile: read again and retry). Raises KubeError otherwise.
    `live`: the object as a watch cache has it (None: absent) instead of the first GET; a stale
    one costs a 409 and a GET.
    """
    want = desired if desired.get("kind") == "PersistentVolumeClaim" else with_applied_hash(desired)
    meta = want["metadata"]
    api_version, kind, ns, name = want["apiVersion"], want["kind"], meta.get("namespace"), meta["name"]
    last: KubeError | None = None
    for attempt in range(attempts):
        if attempt or live is _UNREAD:
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
