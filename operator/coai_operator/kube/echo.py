"""The echo cache: which watch events are only our own writes coming back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
