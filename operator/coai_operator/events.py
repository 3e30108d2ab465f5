"""Kubernetes Events on the objects the operator manages.

`kopf.event` is used directly (not kopf.info): main.py raises kopf's posting level to WARNING to
keep its own "Handler succeeded" chatter out of Events, and kopf.info obeys that level. Outside a
running operator (unit tests, the CLI) there is no event queue; the event is only logged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Literal

import kopf

log = logging.getLogger("coai_operator.events")

MAX_MESSAGE = 1024


def post(obj: Mapping[str, Any], type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
    meta = obj.get("metadata", {})
    log.log(logging.INFO if type_ == "Normal" else logging.WARNING, "event %s %s/%s %s: %s",
            type_, meta.get("namespace"), meta.get("name"), reason, message)
    with contextlib.suppress(LookupError):  # no kopf context: not running inside the operator
        kopf.event(dict(obj), type=type_, reason=reason, message=message[:MAX_MESSAGE])  # type: ignore[arg-type]


def normal(obj: Mapping[str, Any], reason: str, message: str) -> None:
    post(obj, "Normal", reason, message)


def warning(obj: Mapping[str, Any], reason: str, message: str) -> None:
    post(obj, "Warning", reason, message)
