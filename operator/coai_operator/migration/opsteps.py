"""The steps the operator runs itself (no Job): the snapshot, maintenance, config, rollout and their
rollback counterparts. Each computes its patch from the snapshot, so repeating it is harmless. They
act on the instance through status.upgrade (instance_writes.py), never its spec."""

from __future__ import annotations

from coai_operator import constants
from coai_operator.bundles import load_bundle
from coai_operator.bundles.config_migration import ConfigRulesError, merge_rules
from coai_operator.domain.versions import Hop, Version
from coai_operator.instance import upgrade_state as us
from coai_operator.kube import KubeError
from coai_operator.migration import certs, digest, realjobs
from coai_operator.migration.context import Ctx
from coai_operator.migration.instance_writes import hold_maintenance, write_upgrade
from coai_operator.migration.model import Obj, Outcome, StepOutcome
from coai_operator.migration.snapshot import (
    Snapshot,
    encode_secret,
    map_merge_patch,
    migrated_config,
    snapshot_name,
    snapshot_objects,
    take_snapshot,
)

DONE, RUNNING, FAILED = Outcome.DONE, Outcome.RUNNING, Outcome.FAILED


# --- the snapshot ------------------------------------------------------------------------------

class SnapshotIncomplete(Exception):  # noqa: N818  (a condition reason)
    """The snapshot is missing a part: nothing may be migrated or restored from it."""


def load_snapshot(ctx: Ctx) -> Snapshot:
    name = snapshot_name(ctx.migration)
    cm = ctx.kube.get("v1", "ConfigMap", ctx.namespace, name)
    if cm is None:
        raise SnapshotIncomplete(f"the config snapshot ConfigMap {name} is gone")
    snap = Snapshot.from_objects(cm, None)
    secret = ctx.kube.get("v1", "Secret", ctx.namespace, name) if snap.secret_name else None
    if snap.secret_name and secret is None:
        raise SnapshotIncomplete(f"the snapshot's Secret copy {name} of Secret {snap.secret_name} is gone; "
                                 "nothing is migrated or restored from an incomplete snapshot")
    return Snapshot.from_objects(cm, secret)


def ensure_snapshot(ctx: Ctx) -> Snapshot:
    """Create the snapshot once; later calls read it back (it must never capture a migrated state)."""
    existing = ctx.kube.get("v1", "ConfigMap", ctx.namespace, snapshot_name(ctx.migration))
    snap = load_snapshot(ctx) if existing is not None else _create_snapshot(ctx)
    ctx.status["previous"] = {
        "version": snap.version,
        "image": snap.image or "",
        "configSnapshot": {"configMap": snapshot_name(ctx.migration),
                           "secret": snapshot_name(ctx.migration) if snap.secret_name else ""},
    }
    if snap.image_digest:
        ctx.status["previous"]["imageDigest"] = snap.image_digest
    return snap


def _create_snapshot(ctx: Ctx) -> Snapshot:
    assert ctx.instance is not None
    secret_name = ((ctx.instance.get("spec") or {}).get("secretRef") or {}).get("name")
    secret = ctx.kube.get("v1", "Secret", ctx.namespace, secret_name) if secret_name else None
    snap = take_snapshot(ctx.instance, ctx.status.get("fromVersion") or "", secret,
                         digest.running_digest(ctx.kube, ctx.namespace, ctx.instance_name))
    if secret_name and secret is None:
        raise SnapshotIncomplete(f"Secret {secret_name} (spec.secretRef) does not exist: there is nothing to snapshot")
    configmap, secret_copy = snapshot_objects(ctx.migration, snap)
    # The Secret first: the ConfigMap's presence means "snapshot complete". Only "already exists" (an
    # earlier attempt of this step) is tolerated; a transient error retries the step, a permanent one fails it.
    for obj in (secret_copy, configmap):
        if obj is None:
            continue
        try:
            ctx.kube.create(obj)
        except KubeError as exc:
            if exc.status == 409:
                continue
            if exc.status in (0, 429) or exc.status >= 500:
                raise
            raise SnapshotIncomplete(f"cannot write the snapshot {obj['kind']} {obj['metadata']['name']}: "
                                     f"{exc.message}") from exc
    ctx.event("ConfigSnapshotTaken", f"snapshot of CoaiInstance {ctx.instance_name} config kept in "
                                     f"ConfigMap/Secret {snapshot_name(ctx.migration)}")
    return snap


def restore_secret(ctx: Ctx, name: str, desired_values: dict[str, str]) -> None:
    live = ctx.kube.get("v1", "Secret", ctx.namespace, name)
    desired = encode_secret(desired_values)
    if live is not None and (live.get("data") or {}) != desired:
        ctx.kube.patch("v1", "Secret", ctx.namespace, name, {"data": map_merge_patch(live.get("data") or {}, desired)})


# --- helpers -----------------------------------------------------------------------------------

def wait_scaled_down(ctx: Ctx) -> StepOutcome:
    deployment = ctx.kube.get("apps/v1", "Deployment", ctx.namespace, ctx.instance_name)
    if deployment is None:
        return StepOutcome(DONE, "no Deployment: nothing serves traffic")
    spec_replicas = (deployment.get("spec") or {}).get("replicas", 1)
    status = deployment.get("status") or {}
    if spec_replicas != 0 or status.get("replicas") or status.get("readyReplicas"):
        return StepOutcome(RUNNING, f"waiting for Deployment {ctx.instance_name} to scale down")
    # status.replicas leaves out terminating pods, whose app may still run (and write) for up to
    # their grace period: maintenance holds only once they are gone.
    stopping = app_pods_running(ctx, deployment)
    if stopping:
        return StepOutcome(RUNNING, f"waiting for {len(stopping)} pod(s) of Deployment {ctx.instance_name} to stop: "
                                    f"{', '.join(sorted(stopping))}")
    return StepOutcome(DONE, "app scaled to 0 and its pods stopped: no writes during the migration")


def app_pods_running(ctx: Ctx, deployment: Obj) -> list[str]:
    """Names of the Deployment's pods that have not ended, terminating ones included."""
    match = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    if not match:
        return []
    selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
    pods = ctx.kube.list("v1", "Pod", ctx.namespace, label_selector=selector)
    return [p["metadata"]["name"] for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


def wait_instance_ready(ctx: Ctx, version: str) -> StepOutcome:
    inst = ctx.kube.get(constants.API_VERSION, constants.INSTANCE_KIND, ctx.namespace, ctx.instance_name)
    ctx.instance = inst
    if inst is None:
        return StepOutcome(FAILED, f"CoaiInstance {ctx.instance_name} was deleted")
    status = inst.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    current = status.get("observedGeneration") == inst["metadata"].get("generation")
    if ready and current and status.get("version") == version:
        return StepOutcome(DONE, f"CoaiInstance {ctx.instance_name} Ready at {version}")
    return StepOutcome(RUNNING, f"waiting for CoaiInstance {ctx.instance_name} to be Ready at {version} "
                                f"(now {status.get('phase')})")


def config_rules(ctx: Ctx) -> list:
    if realjobs.applies(ctx.migration):  # the real line has no env renames of its own: the user's only
        return merge_rules([], ctx.spec.get("configMigration"))
    path = [Hop(Version.parse(a), Version.parse(b)) for a, b in (h.split("-to-") for h in ctx.status.get("path", []))]
    return load_bundle().config_rules(path, ctx.spec.get("configMigration"))


# --- forward steps -----------------------------------------------------------------------------

def maintenance_on(ctx: Ctx) -> StepOutcome:
    ensure_snapshot(ctx)
    message = (ctx.spec.get("maintenance") or {}).get("message") or \
        f"Upgrading to {ctx.spec['targetVersion']} (CoaiMigration {ctx.name})"
    if hold_maintenance(ctx, message):
        ctx.event("MaintenanceOn", f"CoaiInstance {ctx.instance_name} in maintenance: app scaled down")
    return wait_scaled_down(ctx)


def config_migration(ctx: Ctx) -> StepOutcome:
    snap = ensure_snapshot(ctx)
    assert ctx.instance is not None
    try:
        rules = config_rules(ctx)
        plan = migrated_config(snap, rules)
    except ConfigRulesError as exc:
        return StepOutcome(FAILED, f"spec.configMigration: {exc}")
    # The rules act on the rendered env (status.upgrade.configRules): spec.config stays as Git has it.
    new_certs = certs.ensure_key_pair(ctx, plan.config, snap.certs)
    write_upgrade(ctx, lambda inst: us.merge(
        us.config_rules_patch(inst, ctx.name, rules),
        us.certs_patch(inst, ctx.name, new_certs) if new_certs else None))
    if snap.secret_name:  # the Secret's keys are not covered by the rendered-env rules (docs/gitops.md)
        restore_secret(ctx, snap.secret_name, plan.secret)
    message = "; ".join(plan.changes) if plan.changes else "no config changes on this path"
    if plan.changes:
        ctx.event("ConfigMigrated", message[:1000])
    return StepOutcome(DONE, message[:1000])


def rollout(ctx: Ctx) -> StepOutcome:
    ensure_snapshot(ctx)
    target = str(ctx.spec["targetVersion"])
    if write_upgrade(ctx, lambda inst: us.merge(us.deployed_version_patch(inst, ctx.name, target),
                                                us.release_maintenance_patch(inst, ctx.name),
                                                # a pin from an earlier rollback would keep the old image
                                                us.image_digest_patch(inst, ctx.name, None))):
        ctx.event("RolloutStarted", f"CoaiInstance {ctx.instance_name} -> {target}; maintenance off")
    return wait_instance_ready(ctx, target)


# --- rollback steps ----------------------------------------------------------------------------

def rollback_maintenance(ctx: Ctx) -> StepOutcome:
    if hold_maintenance(ctx, f"Rolling back CoaiMigration {ctx.name}"):
        ctx.event("MaintenanceOn", f"CoaiInstance {ctx.instance_name} in maintenance: app scaled down")
    return wait_scaled_down(ctx)


def rollback_config(ctx: Ctx) -> StepOutcome:
    snap = load_snapshot(ctx)
    inst = ctx.kube.get(constants.API_VERSION, constants.INSTANCE_KIND, ctx.namespace, ctx.instance_name)
    if inst is None:
        return StepOutcome(FAILED, f"CoaiInstance {ctx.instance_name} was deleted")
    ctx.instance = inst
    before = snap.upgrade or {}  # status.upgrade as the snapshot has it: None removes what we added
    write_upgrade(ctx, lambda i: us.merge(
        us.deployed_version_patch(i, ctx.name, snap.version),
        us.config_rules_patch(i, ctx.name, before.get("configRules") or []),
        us.certs_patch(i, ctx.name, before.get("certs")),
        # what ran before, not whatever the tag means now
        us.image_digest_patch(i, ctx.name, snap.image_digest),
        us.release_maintenance_patch(i, ctx.name)))
    if snap.secret_name:
        restore_secret(ctx, snap.secret_name, snap.secret)
    ctx.event("ConfigRestored", f"CoaiInstance {ctx.instance_name} config, Secret and version {snap.version} "
                                "restored from the snapshot")
    return StepOutcome(DONE, f"config, secret and version {snap.version} restored")


def rollback_rollout(ctx: Ctx) -> StepOutcome:
    snap = load_snapshot(ctx)
    if (snap.maintenance or {}).get("enabled"):
        return StepOutcome(DONE, "instance was in maintenance before the migration; left in maintenance")
    return wait_instance_ready(ctx, snap.version)
