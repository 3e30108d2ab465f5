"""The pod of every engine Job (migration steps, backups, restores): restricted Pod Security with
the instance's data identity, default resources, the engine image, the database's env (the
password by secretKeyRef, never a value). Pure."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

from coai_operator import constants
from coai_operator.instance.render import DEFAULT_CONTAINER_SECURITY_CONTEXT, data_identity
from coai_operator.instance.spec import with_defaults

Obj = dict[str, Any]


RESTRICTED_POD_SECURITY: Obj = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# The same restricted container context as the app's (read-only root, no capabilities).
RESTRICTED_CONTAINER_SECURITY: Obj = DEFAULT_CONTAINER_SECURITY_CONTEXT


def job_pod_security(instance: Mapping[str, Any] | None, template: Mapping[str, Any]) -> Obj:
    """Restricted, with the instance's data identity (files the app wrote stay writable), then the
    jobTemplate's own override."""
    identity = data_identity((instance or {}).get("spec")) if instance else {}
    return {**RESTRICTED_POD_SECURITY, **identity, **(template.get("podSecurityContext") or {})}


DEFAULT_RESOURCES: Obj = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def engine_image(spec: Mapping[str, Any]) -> str:
    template = spec.get("jobTemplate") or {}
    return str(template.get("image") or os.environ.get("COAI_ENGINE_IMAGE") or constants.OPERATOR_IMAGE)


def database_env(instance_spec: Mapping[str, Any]) -> list[Obj]:
    db = with_defaults(copy.deepcopy(dict(instance_spec)))["database"]
    env: list[Obj] = [
        {"name": "MYSQL_HOST", "value": str(db.get("host", ""))},
        {"name": "MYSQL_PORT", "value": str(db.get("port", 3306))},
        {"name": "MYSQL_USER", "value": str(db.get("user", "root"))},
        {"name": "MYSQL_DB", "value": str(db.get("name", "chatnio"))},
    ]
    ref = db.get("passwordSecretRef") or {}
    if ref.get("name"):
        env.append({"name": "MYSQL_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref.get("key") or "password"}}})
    return env
