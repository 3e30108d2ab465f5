"""The Kubernetes API for the controllers: `client` (requests, KubeError), `diff` (create-or-update
of owned objects), `echo` (telling our own writes apart in the watch)."""

from coai_operator.kube.client import (
    RESOURCES,
    WRITE_LISTENERS,
    Kube,
    KubeError,
    RequestStats,
    default_api_client,
    describe,
)
from coai_operator.kube.diff import (
    APPLIED_ANNOTATIONS_ANNOTATION,
    APPLIED_HASH_ANNOTATION,
    ApplyResult,
    apply,
    contains,
    desired_hash,
    plan_update,
    with_applied_hash,
)
from coai_operator.kube.echo import is_own_write_echo, remember_own_write

__all__ = [
    "APPLIED_ANNOTATIONS_ANNOTATION", "APPLIED_HASH_ANNOTATION", "RESOURCES", "WRITE_LISTENERS", "ApplyResult", "Kube",
    "KubeError",
    "RequestStats", "apply", "contains", "default_api_client", "describe", "desired_hash", "is_own_write_echo",
    "plan_update", "remember_own_write", "with_applied_hash",
]
