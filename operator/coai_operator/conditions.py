"""Kubernetes-style conditions, computed rather than accumulated (kstatus compatible)."""

from __future__ import annotations

import datetime as dt
from typing import Any

Condition = dict[str, Any]


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: list[Condition] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    observed_generation: int | None = None,
    now: str | None = None,
) -> list[Condition]:
    """Return a new list with condition `type_` set.

    lastTransitionTime only moves when the status changes, so re-computing the same state is a
    no-op and a status patch built from it makes no write.
    """
    status_str = status if isinstance(status, str) else ("True" if status else "False")
    result: list[Condition] = []
    previous: Condition | None = None
    for cond in conditions or []:
        if cond.get("type") == type_:
            previous = cond
        else:
            result.append(dict(cond))
    transition = (
        previous["lastTransitionTime"]
        if previous and previous.get("status") == status_str and previous.get("lastTransitionTime")
        else (now or now_rfc3339())
    )
    new: Condition = {
        "type": type_,
        "status": status_str,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if observed_generation is not None:
        new["observedGeneration"] = observed_generation
    result.append(new)
    result.sort(key=lambda c: c["type"])
    return result


def get_condition(conditions: list[Condition] | None, type_: str) -> Condition | None:
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None


def is_true(conditions: list[Condition] | None, type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return bool(cond and cond.get("status") == "True")
