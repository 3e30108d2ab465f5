"""Git owns the spec: what the operator deploys is computed from the spec AND status.upgrade (pure).

status.upgrade is the operator's side of a version change (see docs/gitops.md):
- version: the version the operator deploys. Set at install, on an image-only change (a patch
  release of the same line), and by a CoaiMigration (rollout, rollback). A spec.version that
  needs more than an image change never reaches the Deployment by itself.
- maintenance: {migration, message} while a CoaiMigration holds the app scaled down.
- certs: the 2.0 JWT key pair Secret a CoaiMigration generated (used while spec.certs is absent).
- configRules: the env rules ({rename, set, remove} per hop) a CoaiMigration applied; they act on
  the RENDERED env, so a spec.config in Git that still has the old names keeps working.
The instance controller reports in status.gitConfigChanges what Git could change so the rules
have nothing left to do, and forgets the rules once that is so.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coai_operator import constants
from coai_operator.bundles import realline
from coai_operator.bundles.config_migration import ConfigRules, ConfigRulesError, is_secret_key, migrate_env
from coai_operator.engine.errors import PlanError
from coai_operator.engine.versions import CompatTable, DowngradeError, UnknownVersionError, Version, plan_path

Obj = dict[str, Any]

AUTOMATIC, MANUAL = "Automatic", "Manual"
# Why Automatic: a commit is the change request in GitOps, and the migration is guarded (backup,
# validation, rollback); Manual leaves a bumped spec.version doing nothing until a second commit.
DEFAULT_POLICY = AUTOMATIC
# A CoaiMigration committed together with the bump reaches the API a moment after the instance:
# an Automatic upgrade waits this long for it before creating its own.
AUTOMATIC_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Decision:
    """What the instance controller deploys, and what it says about a requested version change."""

    version: str  # the version rendered
    record: bool = False  # write status.upgrade.version = version
    pending: str | None = None  # UpgradePending reason (None: no pending upgrade)
    message: str = ""
    refused: bool = False  # the requested version can never be reached this way (Stalled)
    create: Obj | None = None  # an Automatic upgrade's CoaiMigration to create
    path: tuple[str, ...] = field(default=())


def policy(spec: Mapping[str, Any]) -> str:
    return str((spec.get("upgrade") or {}).get("policy") or DEFAULT_POLICY)


def deployed_version(status: Mapping[str, Any]) -> str | None:
    """The version the operator deploys now (status.version for instances older than status.upgrade)."""
    return (status.get("upgrade") or {}).get("version") or status.get("version") or None


def legacy_migration(status: Mapping[str, Any]) -> bool:
    """A CoaiMigration that drives the upgrade through the instance spec (migration/ before it
    adopted upgrade_state.py) holds the lock: follow spec.version as before, so it still works."""
    active = status.get("activeMigration")
    return bool(active) and (status.get("upgrade") or {}).get("migration") != active


def migration_name(instance: str, version: str) -> str:
    """Deterministic: one Automatic CoaiMigration per instance and target version."""
    slug = re.sub(r"[^a-z0-9-]", "-", version.lower())
    return f"{instance}-upgrade-{slug}"[:253].rstrip("-")


def automatic_migration(instance: Mapping[str, Any], version: str) -> Obj:
    """The CoaiMigration an Automatic upgrade creates: spec.upgrade.migration as its defaults,
    owned by the instance (deleted with it)."""
    meta = instance["metadata"]
    spec = copy.deepcopy((instance.get("spec") or {}).get("upgrade", {}).get("migration") or {})
    spec.update(instanceRef={"name": meta["name"]}, targetVersion=version)
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.MIGRATION_KIND,
        "metadata": {
            "name": migration_name(meta["name"], version),
            "namespace": meta["namespace"],
            "labels": constants.labels(meta["name"], "upgrade"),
            "ownerReferences": [{"apiVersion": instance.get("apiVersion", constants.API_VERSION),
                                 "kind": constants.INSTANCE_KIND, "name": meta["name"], "uid": meta["uid"]}],
        },
        "spec": spec,
    }


def matching(migrations: Sequence[Mapping[str, Any]], instance: str, version: str) -> Mapping[str, Any] | None:
    """The CoaiMigration (from Git or ours) that takes `instance` to `version`, newest first."""
    found = [m for m in migrations
             if (m.get("spec") or {}).get("instanceRef", {}).get("name") == instance
             and str((m.get("spec") or {}).get("targetVersion")) == version
             and not (m.get("spec") or {}).get("dryRun")]
    found.sort(key=lambda m: str(m["metadata"].get("creationTimestamp") or ""), reverse=True)
    return found[0] if found else None


def decide(instance: Mapping[str, Any], table: CompatTable, migrations: Sequence[Mapping[str, Any]],
           pending_for: float | None = None) -> Decision:
    """`pending_for`: seconds the UpgradePending condition has been True (None: it is not)."""
    spec, status = instance.get("spec") or {}, instance.get("status") or {}
    requested = str(spec.get("version"))
    deployed = deployed_version(status)
    if deployed is None or legacy_migration(status):
        return Decision(requested, record=(status.get("upgrade") or {}).get("version") != requested)
    if requested == deployed:
        return Decision(deployed)
    try:
        old, new = Version.parse(deployed), Version.parse(requested)
        if realline.is_real(old) and realline.is_real(new):
            # The real 3.x/4.x line: the app migrates its schema at start, but upstream's missing
            # fixes and the config.yaml backup make a hop a migration (docs/real-app.md).
            if new < old:
                raise DowngradeError(f"{new} is older than {old}: downgrades are refused")
            real = realline.plan_real(deployed, requested)
            return _needs_migration(instance, migrations, deployed, requested, real.hops, pending_for)
        if table.get(old) is None and table.get(new) is None:
            # A line the bundle has no migrations for: an image change, but never backwards.
            if new < old:
                raise DowngradeError(f"{new} is older than {old}: downgrades are refused")
            return Decision(requested, record=True)
        plan = plan_path(old, new, table, direct=True)
    except (DowngradeError, UnknownVersionError) as exc:
        return Decision(deployed, pending=exc.reason, refused=True,
                        message=f"spec.version {requested} is refused, {deployed} keeps running: {exc}")
    except PlanError as exc:
        return Decision(deployed, pending="UnsupportedPath", refused=True,
                        message=f"spec.version {requested} is refused, {deployed} keeps running: {exc}")
    if plan.noop:  # a patch release of the running line: same schema, an image change only
        return Decision(requested, record=True)
    return _needs_migration(instance, migrations, deployed, requested, tuple(h.id for h in plan.hops), pending_for)


def _needs_migration(instance: Mapping[str, Any], migrations: Sequence[Mapping[str, Any]], deployed: str,
                     requested: str, path: tuple[str, ...], pending_for: float | None) -> Decision:
    spec, name = instance.get("spec") or {}, instance["metadata"]["name"]
    where = f"{deployed} -> {requested} needs a migration ({', '.join(path)}); {deployed} keeps running"
    found = matching(migrations, name, requested)
    if found is not None:
        mig_name, phase = found["metadata"]["name"], (found.get("status") or {}).get("phase") or "Pending"
        if phase in ("Failed", "RolledBack"):
            return Decision(deployed, pending="UpgradeFailed", path=path, refused=True,
                            message=f"{where}: CoaiMigration {mig_name} ended {phase}; see its status. "
                                    f"Revert spec.version to {deployed} in Git, or delete {mig_name} to try again")
        return Decision(deployed, pending="Upgrading", path=path,
                        message=f"{where}: CoaiMigration {mig_name} is {phase}")
    if policy(spec) == MANUAL:
        return Decision(deployed, pending="AwaitingMigration", path=path,
                        message=f"{where}: spec.upgrade.policy is Manual, apply a CoaiMigration with "
                                f"instanceRef.name {name} and targetVersion {requested}")
    create = None
    if pending_for is not None and pending_for >= AUTOMATIC_GRACE_SECONDS:
        create = automatic_migration(instance, requested)
    return Decision(deployed, pending="Upgrading", path=path, create=create,
                    message=f"{where}: spec.upgrade.policy is Automatic, the operator creates CoaiMigration "
                            f"{migration_name(name, requested)}")


def config_rules(status: Mapping[str, Any]) -> list[ConfigRules]:
    try:
        return [ConfigRules.from_mapping(r) for r in (status.get("upgrade") or {}).get("configRules") or []]
    except ConfigRulesError:  # written by the operator; a bad entry is ignored rather than crash
        return []


def git_config_changes(config: Mapping[str, Any], rules: Sequence[ConfigRules]) -> list[str]:
    """What Git could change in spec.config so that the rules change nothing (values of secret keys
    are never shown)."""
    env = {str(k): ("true" if v is True else "false" if v is False else str(v)) for k, v in config.items()}
    _, changes = migrate_env(env, rules)
    out = []
    for c in changes:
        if c.op in ("rename", "drop"):
            out.append(f"rename {c.key} to {c.new_key}" if c.op == "rename" else f"remove {c.key} ({c.note})")
        elif c.op == "remove":
            out.append(f"remove {c.key}")
        else:
            out.append(f"set {c.key}" if c.secret or is_secret_key(c.key) else f"set {c.key}={c.new_value}")
    return out


def effective_spec(spec: Mapping[str, Any], status: Mapping[str, Any], version: str) -> Obj:
    """The spec the children are rendered from: Git's spec with the deployed version, maintenance
    held by a migration, the key pair it generated and its env rules applied. Never written anywhere."""
    out = copy.deepcopy(dict(spec))
    out["version"] = version
    held = (status.get("upgrade") or {}).get("maintenance")
    if held and not legacy_migration(status):
        out["maintenance"] = {"enabled": True, "message": held.get("message")
                              or f"CoaiMigration {held.get('migration')} holds maintenance"}
    certs = (status.get("upgrade") or {}).get("certs")
    if certs and not out.get("certs"):
        out["certs"] = copy.deepcopy(certs)
    digest = (status.get("upgrade") or {}).get("imageDigest")
    if digest:  # a rollback pinned what ran before
        out["imageDigest"] = digest
    rules = config_rules(status)
    if rules and isinstance(out.get("config"), dict):
        env = {str(k): ("true" if v is True else "false" if v is False else str(v)) for k, v in out["config"].items()}
        out["config"], _ = migrate_env(env, rules)
    return out


def status_fields(decision: Decision, spec: Mapping[str, Any], status: Mapping[str, Any]) -> Obj:
    """The status.upgrade / status.gitConfigChanges merge patch this decision needs (empty: none)."""
    patch: Obj = {}
    upgrade = status.get("upgrade") or {}
    if decision.record and upgrade.get("version") != decision.version:
        patch.setdefault("upgrade", {})["version"] = decision.version
    rules = config_rules(status)
    changes = git_config_changes(spec.get("config") or {}, rules) if rules else []
    if rules and not changes and not status.get("activeMigration"):
        patch.setdefault("upgrade", {})["configRules"] = None  # Git has caught up: Git alone decides again
    if (status.get("gitConfigChanges") or []) != changes:
        patch["gitConfigChanges"] = changes or None
    return patch
