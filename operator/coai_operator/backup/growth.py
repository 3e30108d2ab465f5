"""Growing a backup PVC the engine's preflight found too small, when its StorageClass allows it.

The engine (engine/capacity.py) refuses a backup that may not fit, before it writes anything,
with reason InsufficientSpace and both numbers (needBytes, freeBytes). The controller then grows
the destination PVC once, to what it holds now plus the shortfall plus 10 % (rounded up to GiB),
if the PVC's StorageClass has `allowVolumeExpansion: true`, and runs the backup again in a new
Job when the volume has grown. Otherwise the refusal stands and says why the PVC was not grown.
The operator only ever grows PVCs (update), never shrinks or deletes them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coai_operator.kube import Kube, KubeError

GIB = 1 << 30
MARGIN = 1.10
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
          "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def parse_quantity(text: Any) -> int:
    """Bytes of a Kubernetes storage quantity ("20Gi", "500M", "1073741824")."""
    match = _QUANTITY.match(str(text or "").strip())
    if not match:
        raise ValueError(f"not a storage quantity: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


@dataclass(frozen=True)
class Growth:
    pvc: str
    size: str | None  # the new request, None when the PVC is not grown
    why_not: str = ""
    current: str = ""


def target_size(pvc: Mapping[str, Any], need: int, free: int) -> str:
    """What the PVC must request so `need` fits: its size now plus the shortfall plus 10 %. Pure."""
    requested = parse_quantity(((pvc.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage"))
    capacity = ((pvc.get("status") or {}).get("capacity") or {}).get("storage")
    now = max(requested, parse_quantity(capacity) if capacity else 0)
    return f"{math.ceil((now + max(need - free, 0) * MARGIN) / GIB)}Gi"


def expandable(kube: Kube, pvc: Mapping[str, Any]) -> str:
    """"" when the PVC's StorageClass allows expansion, else why not."""
    name = pvc["metadata"]["name"]
    class_name = (pvc.get("spec") or {}).get("storageClassName")
    if not class_name:
        return f"PVC {name} has no storage class"
    try:
        storage_class = kube.get("storage.k8s.io/v1", "StorageClass", None, class_name)
    except KubeError as exc:
        return f"StorageClass {class_name} cannot be read ({exc.message})"
    if storage_class is None:
        return f"StorageClass {class_name} does not exist"
    if not storage_class.get("allowVolumeExpansion"):
        return f"StorageClass {class_name} does not allow volume expansion"
    return ""


def grow(kube: Kube, namespace: str, claim: str, result: Mapping[str, Any]) -> Growth:
    """Request the larger size (an update of spec.resources.requests.storage), or say why not."""
    need, free = result.get("needBytes"), result.get("freeBytes")
    pvc = kube.get("v1", "PersistentVolumeClaim", namespace, claim)
    if pvc is None or need is None or free is None:
        return Growth(claim, None, "the refusal gave no sizes" if pvc else f"PVC {claim} does not exist")
    current = str(pvc["spec"]["resources"]["requests"]["storage"])
    why_not = expandable(kube, pvc)
    if why_not:
        return Growth(claim, None, why_not, current)
    size = target_size(pvc, int(need), int(free))
    pvc["spec"]["resources"]["requests"]["storage"] = size
    try:
        kube.replace(pvc)  # resourceVersion from the read: a concurrent change is a 409, retried later
    except KubeError as exc:
        return Growth(claim, None, f"PVC {claim} could not be grown to {size}: {exc.message}", current)
    return Growth(claim, size, "", current)


def grown(pvc: Mapping[str, Any] | None, size: str) -> bool:
    """The volume has the new size, or only the filesystem resize is left, which the kubelet does
    when the next pod (the backup Job) mounts it."""
    if pvc is None:
        return False
    status = pvc.get("status") or {}
    capacity = (status.get("capacity") or {}).get("storage")
    if capacity and parse_quantity(capacity) >= parse_quantity(size):
        return True
    return any(c.get("type") == "FileSystemResizePending" and c.get("status") == "True"
               for c in status.get("conditions") or [])
