"""Fault injection for the fault-matrix e2e: inert unless the operator runs with COAI_TEST_FAULTS=1.

The annotation `test.coai.dev/fault: "<Step>=<fault>[,<Step>=<fault>]"` on a CoaiMigration makes
- `engine-fails`: that step's Job run with COAI_ENGINE_FAIL (the engine fails before touching anything);
- `never-starts`: that step's Job carry a nodeSelector no node matches (its pod stays Pending);
- `api-error`: the first look at that step in this operator process answer HTTP 503.
Real components do the rest (scheduler, Job controller, engine); only the trigger is artificial.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

ANNOTATION = "test.coai.dev/fault"
ENABLED = "COAI_TEST_FAULTS"
NO_NODE_LABEL = "test.coai.dev/no-such-node"

Obj = dict[str, Any]


def fault_for(migration: Mapping[str, Any], step: str) -> str | None:
    if os.environ.get(ENABLED) != "1":
        return None
    value = ((migration.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION) or ""
    faults = dict(item.partition("=")[::2] for item in value.split(",") if "=" in item)
    return faults.get(step)


_API_ERRORS_RAISED: set[tuple[str, str]] = set()


def api_error(migration: Mapping[str, Any], step: str) -> bool:
    """True once per (migration, step) in this process when the step has an `api-error` fault."""
    key = ((migration.get("metadata") or {}).get("uid") or "", step)
    if fault_for(migration, step) != "api-error" or key in _API_ERRORS_RAISED:
        return False
    _API_ERRORS_RAISED.add(key)
    return True


def apply_fault(job: Obj, migration: Mapping[str, Any], step: str) -> Obj:
    fault = fault_for(migration, step)
    pod = job["spec"]["template"]["spec"]
    if fault == "engine-fails":
        pod["containers"][0]["env"].append({"name": "COAI_ENGINE_FAIL", "value": f"injected fault in {step}"})
    elif fault == "never-starts":
        pod["nodeSelector"] = {**(pod.get("nodeSelector") or {}), NO_NODE_LABEL: "true"}
    return job
