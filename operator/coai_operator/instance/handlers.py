"""CoaiInstance handlers (registered by importing this module). Thin: each one calls reconcile.

Triggers:
- create / update / resume of a CoaiInstance;
- any event on a child (a Deployment, Service, ConfigMap or NetworkPolicy owned by a CoaiInstance,
  or one of its kept PVCs), so a child edited or deleted by hand is put back at once and status follows the
  rollout;
- one operator-wide loop over a kopf index of all instances: a drift check of every instance each
  COAI_RESYNC_SECONDS (600), and every COAI_RETRY_SECONDS (20) a retry of the instances whose last
  reconcile hit a problem that can heal by itself (a missing Secret, a refused write).

Why not a kopf timer and kopf.TemporaryError: kopf puts a finalizer on every object that has a
timer, and a finalizer blocks `kubectl delete` whenever the operator is not running; and each
TemporaryError retry writes kopf's progress annotation and an Error Event, every 20 s, for as long
as the Secret is missing. The status condition already says what is wrong, once.

No finalizer and no on.delete handler: children go by garbage collection (owner references) and
PVCs are kept unless spec.storage.retain is false, in which case they are owned too.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from coai_operator import constants
from coai_operator.instance.reconcile import Outcome, owner_of, reconcile_named
from coai_operator.kube import is_own_write_echo
from coai_operator.kube.echo import forget_object, owned_fields_unchanged

RETRY_SECONDS = float(os.environ.get("COAI_RETRY_SECONDS", "20"))
# The drift check is a safety net: child watches already repair hand edits at once.
RESYNC_SECONDS = float(os.environ.get("COAI_RESYNC_SECONDS", "600"))
CHILD_RESOURCES = (
    ("apps", "v1", "deployments", "Deployment"),
    ("", "v1", "services", "Service"),
    ("", "v1", "configmaps", "ConfigMap"),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
)
INSTANCES = (constants.GROUP, constants.VERSION, constants.INSTANCE_PLURAL)
# Children whose status the instance's status is computed from: every change of theirs counts.
STATUS_READ = frozenset({"Deployment"})

# Instances whose last reconcile should be repeated soon (set membership is atomic under the GIL).
_needs_retry: set[tuple[str, str]] = set()


def _reconcile(namespace: str, name: str, trigger: str, *, coalesce: bool = False) -> Outcome | None:
    outcome = reconcile_named(namespace, name, trigger, coalesce=coalesce)
    if outcome is not None:
        if outcome.retry:
            _needs_retry.add((namespace, name))
        else:
            _needs_retry.discard((namespace, name))
    return outcome


@kopf.on.create(*INSTANCES)
def instance_created(namespace: str, name: str, **_: Any) -> None:
    _reconcile(namespace, name, "create")


@kopf.on.update(*INSTANCES)
def instance_updated(namespace: str, name: str, **_: Any) -> None:
    _reconcile(namespace, name, "update")


@kopf.on.resume(*INSTANCES)
def instance_resumed(namespace: str, name: str, **_: Any) -> None:
    _reconcile(namespace, name, "resume")


def _child_handler(kind: str) -> tuple[Any, Any]:
    def is_ours(body: kopf.Body, **_: Any) -> bool:
        return owner_of(body, kind) is not None

    def on_child_event(body: kopf.Body, type: str | None, namespace: str, name: str, **_: Any) -> None:
        owner = owner_of(body, kind)
        if type in ("ADDED", "MODIFIED") and is_own_write_echo(body, kind):
            # The write already recorded its fingerprint (kube.remember_own_write).
            return  # the echo of our own write: the reconcile that wrote it already accounted for it
        if type == "DELETED":
            forget_object(body, kind)
        elif kind not in STATUS_READ:
            unchanged = owned_fields_unchanged(body, kind)  # remembered for the next event either way
            if unchanged and type == "MODIFIED":
                return  # e.g. the PV controller binding a claim: nothing we own or read changed
        if owner:
            _reconcile(namespace, owner, f"{kind} {name} {(type or 'listed').lower()}", coalesce=True)

    return is_ours, on_child_event


# Filtered by owner reference rather than by label: a child whose managed-by label was edited
# away must still bring its owner back to fix it.
for _group, _version, _plural, _kind in CHILD_RESOURCES:
    _when, _handler = _child_handler(_kind)
    kopf.on.event(_group, _version, _plural, when=_when, id=f"child-{_plural}")(_handler)


async def _background_loop(index: kopf.Index, logger: logging.Logger) -> None:
    since_resync = 0.0
    while True:
        await asyncio.sleep(RETRY_SECONDS)
        since_resync += RETRY_SECONDS
        known = set(index)
        _needs_retry.intersection_update(known)  # forget deleted instances
        if since_resync >= RESYNC_SECONDS:
            since_resync, trigger, keys = 0.0, "drift-check", sorted(known)
        else:
            trigger, keys = "retry", sorted(_needs_retry)
        for namespace, name in keys:
            try:
                await asyncio.to_thread(_reconcile, namespace, name, trigger, coalesce=True)
            except Exception:  # one broken instance must not stop the checks of the others
                logger.exception("%s of CoaiInstance %s/%s failed", trigger, namespace, name)


@kopf.on.startup()
async def start_background_loop(memo: kopf.Memo, coai_instances: kopf.Index, logger: logging.Logger,
                                **_: Any) -> None:
    # coai_instances: the watch cache's index of every CoaiInstance (index.py), keyed (namespace, name)
    memo["instance_loop"] = asyncio.create_task(_background_loop(coai_instances, logger))


@kopf.on.cleanup()
async def stop_background_loop(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("instance_loop")
    if task is not None:
        task.cancel()
