"""What the engine Jobs of a migration on the real 3.x/4.x line do differently (pure).

Preflight and Migrate run `engine migrate-real` (upstream's missing fixes; the app migrates its
schema itself at start) with the version the instance runs, since the real app keeps no schema
version. Validation talks to the app's API under its prefix (/api with SERVE_STATIC on), checks
the version fingerprint, and logs in as root with the instance's admin password Secret.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from coai_operator.bundles.realline import is_real
from coai_operator.instance.spec import admin_password_ref, api_prefix, with_defaults

Obj = dict[str, Any]  # the steps that use these are declared in migration/steps.py


def applies(migration: Mapping[str, Any]) -> bool:
    return is_real(str(migration["spec"]["targetVersion"]))


def from_version(migration: Mapping[str, Any], instance: Mapping[str, Any]) -> str:
    from coai_operator.migration import planner  # planner -> steps -> this module

    status = migration.get("status") or {}
    return str(status.get("fromVersion") or planner.current_version(instance))


def preflight_args(migration: Mapping[str, Any], instance: Mapping[str, Any]) -> list[str]:
    return [*migrate_args(migration, instance), "--plan-only"]


def migrate_args(migration: Mapping[str, Any], instance: Mapping[str, Any]) -> list[str]:
    target = str(migration["spec"]["targetVersion"])
    return ["migrate-real", "--target", target, "--from", from_version(migration, instance)]


def validate_args(instance: Mapping[str, Any], target: str) -> list[str]:
    spec = with_defaults(copy.deepcopy(dict(instance.get("spec") or {})))
    prefix = api_prefix(spec)
    return ["--api-prefix", prefix, "--chat-path", f"{prefix}/v1/chat/completions", "--expect-version", target]


def validate_env(instance: Mapping[str, Any]) -> list[Obj]:
    """root's password for the login, quota and fingerprint checks (optional: skipped without it)."""
    spec = with_defaults(copy.deepcopy(dict(instance.get("spec") or {})))
    ref = admin_password_ref(spec)
    if ref is None:
        return []
    return [{"name": "COAI_ADMIN_PASSWORD", "valueFrom": {"secretKeyRef": {
        "name": ref["name"], "key": ref["key"], "optional": True}}}]
