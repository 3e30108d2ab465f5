"""CoaiInstance handlers (registered by importing this module). Thin: each one calls reconcile.

Triggers:
- create / update / resume of a CoaiInstance;
- any event on a child (a Deployment, Service, ConfigMap or NetworkPolicy owned by a CoaiInstance,
  or one of its kept PVCs; watched by index.CHILDREN, not kopf), so a child edited or deleted by
  hand is put back at once and status follows the rollout;
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
from coai_operator.instance.index import CHILD_KINDS, CHILDREN, HANDOFF
from coai_operator.instance.reconcile import Outcome, owner_of, reconcile_named
from coai_operator.kube import is_own_write_echo
from coai_operator.kube.echo import forget_object, owned_fields_unchanged
from coai_operator.kube.informer import Listener, Obj

RETRY_SECONDS = float(os.environ.get("COAI_RETRY_SECONDS", "20"))
# The drift check is a safety net: child watches already repair hand edits at once.
RESYNC_SECONDS = float(os.environ.get("COAI_RESYNC_SECONDS", "600"))
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


def child_listener(kind: str) -> Listener:
    """What a child's watch event (index.CHILDREN) brings: nothing, or a reconcile of its owner in
    kopf's thread pool. Runs on the informer's thread, so the checks here must stay cheap."""
    def on_child_event(type_: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        owner = owner_of(obj, kind)
        if type_ in ("ADDED", "MODIFIED") and is_own_write_echo(obj, kind):
            # The write already recorded its fingerprint (kube.remember_own_write).
            return  # the echo of our own write: the reconcile that wrote it already accounted for it
        if type_ == "DELETED":
            forget_object(obj, kind)
        elif kind not in STATUS_READ:
            unchanged = owned_fields_unchanged(obj, kind)  # remembered for the next event either way
            if unchanged and type_ == "MODIFIED":
                return  # e.g. the PV controller binding a claim: nothing we own or read changed
        if owner:
            HANDOFF.to_pool(_reconcile, str(meta.get("namespace")), owner,
                            f"{kind} {meta.get('name')} {type_.lower()}", coalesce=True)

    return on_child_event


for _kind in CHILD_KINDS:
    CHILDREN.listen(_kind, child_listener(_kind))


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
