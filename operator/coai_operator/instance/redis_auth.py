"""The managed Redis's password: generated once into a Secret, kept off every command line (pure).

Without spec.redis.passwordSecretRef the operator creates `<instance>-redis-auth` (key `password`,
owned by the instance) the first time it sees the instance with managed Redis, and never writes it
again: rotating is editing that Secret and restarting both Deployments (docs/security.md).

redis-server gets the password from a config file: an init container writes
`requirepass "<password>"` from its environment into an in-memory emptyDir (file mode 0600),
and the server starts with that file as its config. The password is in no process's arguments:
`printf` is a shell builtin and `sed` reads it from a pipe.
"""

from __future__ import annotations

import base64
import copy
import secrets
from collections.abc import Mapping
from typing import Any

from coai_operator import constants
from coai_operator.instance.spec import DEFAULT_SECRET_KEY, Spec, redis_managed

Obj = dict[str, Any]

CONFIG_DIR = "/run/redis"
CONFIG_FILE = f"{CONFIG_DIR}/redis.conf"
CONFIG_VOLUME = "redis-config"
PASSWORD_BYTES = 32
# Escapes \ and " for a double-quoted redis.conf string; the password never is an argument.
WRITE_CONFIG = (
    "set -eu\n"
    "umask 077\n"
    "escaped=$(printf '%s' \"$REDIS_PASSWORD\" | sed -e 's/\\\\/\\\\\\\\/g' -e 's/\"/\\\\\"/g')\n"
    f"printf 'requirepass \"%s\"\\n' \"$escaped\" > {CONFIG_FILE}\n"
)


def secret_name(instance: str) -> str:
    return f"{instance}-redis-auth"


def password_ref(spec: Spec, instance: str) -> Mapping[str, Any] | None:
    """The Secret key holding REDIS_PASSWORD: the user's, else the generated one for managed Redis."""
    ref = spec["redis"].get("passwordSecretRef")
    if isinstance(ref, Mapping) and ref.get("name"):
        return ref
    if redis_managed(spec):
        return {"name": secret_name(instance), "key": DEFAULT_SECRET_KEY}
    return None


def generates_secret(spec: Spec) -> bool:
    ref = spec["redis"].get("passwordSecretRef")
    return redis_managed(spec) and not (isinstance(ref, Mapping) and ref.get("name"))


def secret(instance: str, namespace: str, owner_refs: list[Obj] | None, password: str) -> Obj:
    meta: Obj = {"name": secret_name(instance), "namespace": namespace,
                 "labels": constants.labels(instance, "redis")}
    if owner_refs is not None:
        meta["ownerReferences"] = copy.deepcopy(owner_refs)
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
            "data": {DEFAULT_SECRET_KEY: base64.b64encode(password.encode()).decode()}}


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def init_container(spec: Spec, instance: str, security_context: Obj, resources: Obj) -> Obj:
    """Writes redis.conf with requirepass from the Secret (env, not args)."""
    ref = password_ref(spec, instance) or {}
    return {
        "name": "redis-config",
        "image": spec["redis"]["managed"]["image"],
        "command": ["sh", "-c", WRITE_CONFIG],
        "env": [{"name": "REDIS_PASSWORD",
                 "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref["key"]}}}],
        "resources": copy.deepcopy(resources),
        "securityContext": copy.deepcopy(security_context),
        "volumeMounts": [{"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR}],
    }


def config_volume() -> Obj:
    # In memory: the password file never reaches the node's disk.
    return {"name": CONFIG_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}


def config_mount() -> Obj:
    return {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}
