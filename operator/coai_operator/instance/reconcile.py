"""CoaiInstance reconcile, level-based: read spec, validate, render, apply each child, compute status.

Whatever triggered it (a spec change, a child edited or deleted by hand, the periodic drift check),
a reconcile reads the current CoaiInstance and converges; a reconcile that finds nothing to change
makes no write request.

A CoaiMigration drives an upgrade through this instance's spec (maintenance, config, version,
image); this controller does the work and reports phase Migrating while the migration holds the
lock (status.activeMigration, which only the migration controller writes).
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from coai_operator import constants, events
from coai_operator.bundles import load_bundle
from coai_operator.conditions import get_condition
from coai_operator.instance import adminpw, secure
from coai_operator.instance import render as r
from coai_operator.instance import status as st
from coai_operator.instance import upgrade as up
from coai_operator.instance.index import CACHE
from coai_operator.instance.spec import Names, Problem, Spec, maintenance, secret_refs, validate, with_defaults
from coai_operator.kube import Kube, KubeError, RequestStats, apply, describe
from coai_operator.metrics import METRICS

log = logging.getLogger("coai_operator.instance")

Obj = dict[str, Any]
T = TypeVar("T")


@dataclass
class Outcome:
    """What one reconcile found and did."""

    phase: str | None = None
    problem: Problem | None = None
    retry: bool = False  # the problem can heal without a spec change (a Secret appears): try again later
    changed: list[str] = field(default_factory=list)
    stats: RequestStats = field(default_factory=RequestStats)
    skipped: str | None = None


def _live(kube: Kube, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
    """An object from the watch cache when it covers the kind (the running operator), else a GET."""
    if CACHE.bound and CACHE.cached(kind):
        return CACHE.get(kind, namespace, name)
    return kube.get(api_version, kind, namespace, name)


# (namespace, instance) -> (generation, Secret refs) of the last check that found everything: the
# operator may not watch Secrets, so reconciles of the same spec (child events, the drift check)
# do not GET them again. A spec change, a failed check or a restart checks again.
_secrets_found: dict[tuple[str, str], tuple[int, tuple[Any, ...]]] = {}


def check_secrets_once(kube: Kube, spec: Spec, meta: Mapping[str, Any]) -> Problem | None:
    if not CACHE.bound:  # outside the running operator: always check
        return check_secrets(kube, spec, meta["namespace"])
    key = (meta["namespace"], meta["name"])
    seen = (int(meta.get("generation") or 0), tuple(secret_refs(spec)))
    if _secrets_found.get(key) == seen:
        return None
    problem = check_secrets(kube, spec, key[0])
    if problem is None:
        _secrets_found[key] = seen
    else:
        _secrets_found.pop(key, None)
    return problem


def check_secrets(kube: Kube, spec: Spec, namespace: str) -> Problem | None:
    """The first Secret (or key) the pods need that is missing."""
    seen: dict[str, Obj | None] = {}
    for name, key, field_path in secret_refs(spec):
        if name not in seen:
            seen[name] = kube.get("v1", "Secret", namespace, name)
        secret = seen[name]
        if secret is None:
            return Problem("SecretNotFound", f"Secret {name} does not exist in namespace {namespace} ({field_path})")
        if key is not None and key not in (secret.get("data") or {}):
            return Problem("SecretKeyNotFound",
                           f"Secret {name} in namespace {namespace} has no key {key!r} ({field_path}.key)")
    return None


def _owned_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    return any(ref.get("uid") == owner_uid for ref in obj.get("metadata", {}).get("ownerReferences") or [])


def _remove_unmanaged_redis(kube: Kube, body: Mapping[str, Any]) -> list[str]:
    """Managed Redis switched off: delete its Deployment and Service (its PVC follows storage.retain)."""
    meta = body["metadata"]
    removed = []
    for api_version, kind in (("apps/v1", "Deployment"), ("v1", "Service")):
        live = _live(kube, api_version, kind, meta["namespace"], Names(meta["name"]).redis)
        if live is not None and _owned_by(live, meta["uid"]) and kube.delete(
                api_version, kind, meta["namespace"], live["metadata"]["name"]):
            removed.append(describe(live))
            events.normal(body, "Deleted", f"Deleted {describe(live)}: spec.redis.managed.enabled is false")
    return removed


def _apply_children(kube: Kube, body: Mapping[str, Any], rendered: r.Rendered,
                    outcome: Outcome) -> tuple[Obj | None, list[KubeError]]:
    """Apply every child; return the live CoAI Deployment and the failures (the others still applied)."""
    deployment: Obj | None = None
    errors: list[KubeError] = []
    done: dict[str, list[str]] = {"Created": [], "Updated": []}
    try:
        outcome.changed += secure.before_apply(kube, body, rendered)
    except KubeError as exc:
        errors.append(exc)
    for obj in rendered.all():
        meta = obj["metadata"]
        try:
            if CACHE.bound and CACHE.cached(obj["kind"]):
                result = apply(kube, obj, live=CACHE.get(obj["kind"], meta["namespace"], meta["name"]))
            else:
                result = apply(kube, obj)
        except KubeError as exc:  # reported once through the Degraded condition and its Event
            errors.append(exc)
            continue
        if result.changed:
            verb = "Created" if result.action == "created" else "Updated"
            outcome.changed.append(f"{verb.lower()} {describe(obj)}")
            done[verb].append(describe(obj))
        if obj is rendered.deployment:
            deployment = result.object
    for verb, described in done.items():  # one Event per reconcile and verb: each Event is a request
        if described:
            events.normal(body, verb, f"{verb} {', '.join(described)}")
    try:
        outcome.changed += secure.after_apply(kube, body, rendered)
    except KubeError as exc:
        errors.append(exc)
    if not rendered.redis:
        try:
            outcome.changed += [f"deleted {d}" for d in _remove_unmanaged_redis(kube, body)]
        except KubeError as exc:
            errors.append(exc)
    return deployment, errors


def _announce(body: Mapping[str, Any], before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    """One Event per change of phase or of the Ready reason/message: no repeats every resync."""
    old = get_condition(before.get("conditions"), "Ready") or {}
    new = get_condition(after.get("conditions"), "Ready") or {}
    if before.get("phase") == after.get("phase") and (old.get("reason"), old.get("message")) == (
            new.get("reason"), new.get("message")):
        return
    degraded = get_condition(after.get("conditions"), "Degraded") or {}
    if degraded.get("status") == "True":
        events.warning(body, str(degraded.get("reason")), str(degraded.get("message")))
    else:
        events.normal(body, str(after.get("phase")), str(new.get("message", "")))


def reconcile(body: Mapping[str, Any], kube: Kube) -> Outcome:
    """Converge the children of one CoaiInstance `body` (as read from the API) and write its status."""
    outcome = Outcome(stats=kube.stats)
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    if meta.get("deletionTimestamp"):
        outcome.skipped = "being deleted"
        return outcome
    current = dict(body.get("status") or {})
    decision = decide_upgrade(kube, body)
    spec = with_defaults(up.effective_spec(body.get("spec") or {}, current, decision.version))

    problem = validate(spec)
    deployment: Obj | None = None
    applied = False
    if problem is None:
        try:
            problem = check_secrets_once(kube, spec, meta)
        except KubeError as exc:
            problem = Problem("SecretUnreadable", exc.message)
        outcome.retry = problem is not None
    rendered: r.Rendered | None = None
    if problem is None:
        try:
            rendered = r.render(spec, name, namespace, owner=body)
        except Exception as exc:  # validate() accepted the spec: a failure here is a bug of the operator
            log.exception("rendering CoaiInstance %s/%s failed", namespace, name)
            problem = Problem("OperatorError", f"the operator failed to render this spec ({type(exc).__name__}: "
                                               f"{exc}); this is an operator bug, please report it with the spec")
    if rendered is not None:
        deployment, errors = _apply_children(kube, body, rendered, outcome)
        applied = True
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            problem, outcome.retry = Problem("ApplyFailed", errors[0].message + more), True
    if not applied:
        # Nothing was applied: running pods keep running; report how they are doing.
        deployment = _live(kube, "apps/v1", "Deployment", namespace, Names(name).deployment)

    admin = _admin_state(kube, body, spec, deployment, name, namespace) if problem is None else None
    if admin is not None and admin.configured and not admin.done:
        outcome.retry = True  # the Job's end is noticed by the retry, not by a watch on Jobs
    desired = st.compute(
        admin=admin,
        current=current,
        generation=int(meta.get("generation") or 0),
        endpoint=r.endpoint(spec, name, namespace),
        deployment=deployment,
        problem=problem,
        maintenance=maintenance(spec),
        maintenance_message=spec["maintenance"].get("message"),
        upgrade=st.UpgradeView(decision.pending, decision.message, decision.refused),
    )
    patch = {**(st.patch(current, desired) or {}), **up.status_fields(decision, body.get("spec") or {}, current)}
    outcome.retry = outcome.retry or decision.pending is not None
    if patch:
        try:
            kube.patch(constants.API_VERSION, constants.INSTANCE_KIND, namespace, name, {"status": patch},
                       subresource="status")
        except KubeError as exc:
            if exc.status != 404:  # 404: deleted meanwhile
                raise
        _announce(body, current, desired)
    outcome.phase = str(desired["phase"])
    outcome.problem = problem
    return outcome


def decide_upgrade(kube: Kube, body: Mapping[str, Any]) -> up.Decision:
    """What version to deploy (upgrade.decide), creating an Automatic upgrade's CoaiMigration."""
    status = body.get("status") or {}
    spec_version = str((body.get("spec") or {}).get("version"))
    if up.deployed_version(status) in (None, spec_version) or up.legacy_migration(status):
        return up.decide(body, load_bundle().table, [])  # no version change: no API call
    try:
        migrations = kube.list(constants.API_VERSION, constants.MIGRATION_KIND, body["metadata"]["namespace"])
    except KubeError as exc:
        deployed = str(up.deployed_version(status))
        return up.Decision(deployed, pending="Upgrading", message=f"cannot list CoaiMigrations: {exc.message}")
    pending = get_condition(status.get("conditions"), "UpgradePending") or {}
    since = pending.get("lastTransitionTime") if pending.get("status") == "True" else None
    decision = up.decide(body, load_bundle().table, migrations, seconds_since(since) if since else None)
    if decision.create is not None:
        try:
            kube.create(decision.create)
            events.normal(body, "UpgradeStarted", f"Created CoaiMigration {decision.create['metadata']['name']} "
                                                  f"(spec.upgrade.policy Automatic): {decision.message}")
        except KubeError as exc:
            if exc.status != 409:  # 409: created already; the next look finds it
                return replace(decision, message=f"{decision.message}; creating it failed: {exc.message}")
    return decision


def seconds_since(timestamp: str) -> float:
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds()


def _admin_state(kube: Kube, body: Mapping[str, Any], spec: Spec, deployment: Obj | None, name: str,
                 namespace: str) -> adminpw.AdminState:
    try:
        rollout = st.rollout(deployment)
        serving = rollout.complete and rollout.replicas > 0  # not while scaled down (maintenance)
        return adminpw.ensure(kube, body, spec, r.endpoint(spec, name, namespace), serving)
    except KubeError as exc:
        return adminpw.AdminState(applies=True, configured=True, message=f"cannot start the Job: {exc.message}")


class Serializer:
    """One reconcile at a time per instance.

    Triggers from child events and the drift check are coalesced: while one such run waits for
    the lock, more triggers add nothing, because that run reads the latest state once it starts.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._queued: set[tuple[str, str]] = set()

    def run(self, key: tuple[str, str], fn: Callable[[], T], *, coalesce: bool = False) -> T | None:
        with self._guard:
            if coalesce and key in self._queued:
                return None
            lock = self._locks.setdefault(key, threading.Lock())
            if coalesce:
                self._queued.add(key)
        with lock:
            if coalesce:
                with self._guard:
                    self._queued.discard(key)
            return fn()


SERIALIZER = Serializer()


def reconcile_named(namespace: str, name: str, trigger: str, *, coalesce: bool = False,
                    kube_factory: Callable[[], Kube] = Kube) -> Outcome | None:
    """Read CoaiInstance namespace/name and reconcile it (serialized per instance).

    None when it no longer exists or another queued run will cover this trigger.
    """

    def run() -> Outcome | None:
        kube = kube_factory()
        body = _live(kube, constants.API_VERSION, constants.INSTANCE_KIND, namespace, name)
        if body is None:
            log.debug("CoaiInstance %s/%s is gone (%s)", namespace, name, trigger)
            return None
        with METRICS.reconcile(constants.INSTANCE_KIND) as result:
            outcome = reconcile(body, kube)
            result["result"] = "skipped" if outcome.skipped else "problem" if outcome.problem else "ok"
        if outcome.skipped:
            log.debug("reconcile %s/%s skipped (%s): %s", namespace, name, trigger, outcome.skipped)
        else:
            log.info("reconciled %s/%s (%s): phase %s; %s%s", namespace, name, trigger, outcome.phase,
                     outcome.stats, f"; {', '.join(outcome.changed)}" if outcome.changed else "")
        return outcome

    return SERIALIZER.run((namespace, name), run, coalesce=coalesce)


def owner_of(child: Mapping[str, Any], kind: str) -> str | None:
    """The CoaiInstance a child belongs to: its owner reference, or for a kept (unowned) PVC its labels."""
    meta = child.get("metadata", {})
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == constants.INSTANCE_KIND and str(ref.get("apiVersion", "")).startswith(
                constants.GROUP + "/"):
            return str(ref.get("name"))
    labels = meta.get("labels") or {}
    if (kind == "PersistentVolumeClaim" and labels.get(constants.LABEL_MANAGED_BY) == constants.MANAGED_BY
            and labels.get(constants.LABEL_COMPONENT) in r.PVC_COMPONENTS.values()):
        return labels.get(constants.LABEL_INSTANCE)
    return None
