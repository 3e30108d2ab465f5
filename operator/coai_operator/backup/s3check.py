"""Reachability of an S3 location, checked from the operator process (credentials read from the
Secret into memory only; a CA bundle goes to a private temp file for the TLS library)."""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from coai_operator.engine.store import S3Settings, S3Store, StoreError
from coai_operator.kube import Kube


def _secret_value(kube: Kube, namespace: str, name: str, key: str) -> str:
    from coai_operator.backup.controller import ProblemError

    secret = kube.get("v1", "Secret", namespace, name)
    if secret is None:
        raise ProblemError("SecretNotFound", f"Secret {name} does not exist in {namespace}")
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        raise ProblemError("SecretKeyMissing", f"Secret {name} has no key {key}")
    return base64.b64decode(raw).decode()


def bucket_reachable(kube: Kube, namespace: str, s3: Mapping[str, Any]) -> None:
    from coai_operator.backup.controller import ProblemError

    creds = s3.get("credentialsSecretRef") or {}
    access = _secret_value(kube, namespace, creds["name"], creds.get("accessKeyIdKey") or "AWS_ACCESS_KEY_ID")
    secret = _secret_value(kube, namespace, creds["name"], creds.get("secretAccessKeyKey") or "AWS_SECRET_ACCESS_KEY")
    ca_ref = s3.get("caBundleSecretRef") or {}
    ca_file = ""
    try:
        if ca_ref.get("name"):
            fd, ca_file = tempfile.mkstemp(prefix="coai-ca-", suffix=".pem")
            os.write(fd, _secret_value(kube, namespace, ca_ref["name"], ca_ref.get("key") or "ca.crt").encode())
            os.close(fd)
        settings = S3Settings(endpoint=str(s3["endpoint"]).rstrip("/"), bucket=str(s3["bucket"]),
                              region=str(s3.get("region") or "us-east-1"), path_style=bool(s3.get("pathStyle", True)),
                              ca_file=ca_file, access_key=access, secret_key=secret)
        S3Store(settings, str(s3.get("prefix") or "")).prepare()
    except StoreError as exc:
        raise ProblemError("Unreachable", str(exc)) from exc
    finally:
        if ca_file:
            os.unlink(ca_file)
