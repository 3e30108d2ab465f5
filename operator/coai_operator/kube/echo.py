"""Which watch events of our children bring nothing to react to.

- The echo cache: the event is only our own write coming back (same resourceVersion).
- The owned fingerprint: the event changed nothing the controllers own or compare (our labels and
  annotations, our owner references, spec/data; of a PVC only the storage request), e.g. the PV
  controller binding a claim or adding its annotations. Whether the status matters (a
  Deployment's does) is the caller's call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from coai_operator import constants

# The resourceVersion each of our own writes produced, so the watch event that echoes it back can be
# told apart from a change made by somebody else (a controller, a person). Bounded: old entries go.
_OWN_WRITES: dict[str, str] = {}
_OWN_WRITES_LIMIT = 20000


def _object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('namespace')}/{meta.get('name')}"


_FINGERPRINTS: dict[str, str] = {}  # object key -> fingerprint of the owned fields last seen
OURS_LABEL_PREFIX = "app.kubernetes.io/"
OURS_ANNOTATION_PREFIX = constants.GROUP + "/"


def _bounded_put(store: dict[str, str], key: str, value: str) -> None:
    if key not in store and len(store) >= _OWN_WRITES_LIMIT:
        store.pop(next(iter(store)))
    store[key] = value


def owned_fingerprint(obj: Mapping[str, Any], kind: str) -> str:
    """Pure: a digest of what the controllers own of a child (see the module docstring)."""
    meta = obj.get("metadata") or {}
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k.startswith(OURS_LABEL_PREFIX)}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k.startswith(OURS_ANNOTATION_PREFIX)}
    owners = [r for r in meta.get("ownerReferences") or []
              if str(r.get("apiVersion", "")).startswith(OURS_ANNOTATION_PREFIX)]
    if kind == "PersistentVolumeClaim":
        owned: Any = ((obj.get("spec") or {}).get("resources") or {}).get("requests")
    else:
        owned = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    text = json.dumps([labels, annotations, owners, owned, meta.get("deletionTimestamp")], sort_keys=True,
                      default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def owned_fields_unchanged(obj: Mapping[str, Any], kind: str) -> bool:
    """True when the owned fields are as the last event or write of this object left them
    (remembers this one's for the next call)."""
    key, fingerprint = _object_key({**obj, "kind": kind}), owned_fingerprint(obj, kind)
    unchanged = _FINGERPRINTS.get(key) == fingerprint
    _bounded_put(_FINGERPRINTS, key, fingerprint)
    return unchanged


def forget_object(obj: Mapping[str, Any], kind: str) -> None:
    _FINGERPRINTS.pop(_object_key({**obj, "kind": kind}), None)


def remember_own_write(obj: Mapping[str, Any]) -> None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    if not version or not obj.get("kind"):
        return
    _bounded_put(_OWN_WRITES, _object_key(obj), version)
    _bounded_put(_FINGERPRINTS, _object_key(obj), owned_fingerprint(obj, str(obj["kind"])))


def is_own_write_echo(obj: Mapping[str, Any], kind: str) -> bool:
    """True when `obj` is exactly the state our last write to it produced: nothing new to react to."""
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return bool(version) and _OWN_WRITES.get(_object_key({**obj, "kind": kind})) == version
