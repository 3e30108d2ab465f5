"""The RS256 JWT key pair of CoAI 2.0 (the seed's guide: `auth.jwt.algorithm: RS256` with key
files in /certs, and a certs volume in its compose file).

When the migrated config selects RS256 with key files under /certs and the instance mounts no
certs (`spec.certs` or `status.upgrade.certs`), ConfigMigration generates a key pair into a Secret
`<instance>-jwt-keys` (never logged, never in a status, an Event or a ConfigMap; owned by the
instance, so it goes with it) and points `status.upgrade.certs` at it (Git owns the spec); the
rollback puts `status.upgrade` back as the snapshot has it. The operator may never delete Secrets
(RBAC), so the unused key Secret stays until the instance goes; a later migration to 2.0 reuses it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from coai_operator import constants
from coai_operator.kube import KubeError
from coai_operator.migration.context import Ctx
from coai_operator.migration.names import CERTS_MOUNT, owner_reference

Obj = dict[str, Any]
ALGORITHM_KEY = "JWT_ALGORITHM"
KEY_FILES = ("JWT_PUBLIC_KEY_FILE", "JWT_PRIVATE_KEY_FILE")
LABEL_MIGRATION = f"{constants.GROUP}/migration"
ANNOTATION_UID = f"{constants.GROUP}/generated-by-uid"


def wants_key_pair(config: Mapping[str, str]) -> bool:
    return config.get(ALGORITHM_KEY) == "RS256" and all(
        str(config.get(k, "")).startswith(f"{CERTS_MOUNT}/") for k in KEY_FILES)


def secret_name(instance: str) -> str:
    return f"{instance}-jwt-keys"


def generate_pem_pair() -> dict[str, bytes]:
    # Imported here: cryptography costs the operator ~8 MiB of RSS, and few migrations make keys.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"public.pem": public, "private.pem": private}


def key_secret(ctx: Ctx, config: Mapping[str, str]) -> Obj:
    pair = generate_pem_pair()
    files = {str(config[k]).rsplit("/", 1)[-1]: pair["public.pem" if "PUBLIC" in k else "private.pem"]
             for k in KEY_FILES}
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": secret_name(ctx.instance_name), "namespace": ctx.namespace,
                     "labels": {**constants.labels(ctx.instance_name, "jwt-keys"), LABEL_MIGRATION: ctx.name},
                     "annotations": {ANNOTATION_UID: ctx.migration["metadata"]["uid"]},
                     "ownerReferences": [owner_reference(ctx.instance or {})]},
        "data": {name: base64.b64encode(value).decode() for name, value in files.items()},
    }


def ensure_key_pair(ctx: Ctx, config: Mapping[str, str], current_certs: Obj | None) -> Obj | None:
    """The `status.upgrade.certs` the instance needs for `config` (None: leave it as it is)."""
    if current_certs or not wants_key_pair(config):
        return None
    try:
        ctx.kube.create(key_secret(ctx, config))
        ctx.event("JwtKeysGenerated", f"generated an RS256 key pair into Secret {secret_name(ctx.instance_name)} "
                                      f"(mounted at {CERTS_MOUNT})")
    except KubeError as exc:
        if exc.status != 409:  # 409: an earlier run of this step created it
            raise
    return {"secretRef": {"name": secret_name(ctx.instance_name)}}
