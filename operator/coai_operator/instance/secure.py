"""The reconcile's I/O for the security children that `kube.apply` cannot handle alone.

- The generated Redis password Secret is created once and never applied again (apply would
  overwrite a rotated password with a new random one on every reconcile).
- NetworkPolicies switched off (spec.networkPolicy.enabled=false, or managed Redis turned off)
  are deleted when this instance owns them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coai_operator import constants
from coai_operator.instance import netpol, redis_auth
from coai_operator.instance import render as r
from coai_operator.instance.index import CACHE
from coai_operator.kube import Kube, KubeError, describe

Obj = dict[str, Any]
NETPOL_API = "networking.k8s.io/v1"


def before_apply(kube: Kube, body: Mapping[str, Any], rendered: r.Rendered) -> list[str]:
    """Create the generated Redis Secret if needed and missing (before the pods that read it)."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    if not redis_auth.generates_secret(rendered.spec):
        return []
    if kube.get("v1", "Secret", namespace, redis_auth.secret_name(name)) is not None:
        return []  # never read for its value, never rewritten: a rotated password stays
    obj = redis_auth.secret(name, namespace, [r.owner_reference(body)], redis_auth.new_password())
    try:
        kube.create(obj)
    except KubeError as exc:
        if exc.status != 409:
            raise
        return []  # another reconcile created it between the read and the create: theirs stays
    return [f"created {describe(obj)}"]


def _policies(kube: Kube, meta: Mapping[str, Any], names: set[str]) -> list[Obj]:
    """The live policies of these names: from the watch cache in the running operator (no request),
    else one list request by instance label."""
    if CACHE.bound and CACHE.cached("NetworkPolicy"):
        found = (CACHE.get("NetworkPolicy", meta["namespace"], name) for name in sorted(names))
        return [p for p in found if p is not None]
    selector = (f"{constants.LABEL_INSTANCE}={meta['name']},"
                f"{constants.LABEL_MANAGED_BY}={constants.MANAGED_BY}")
    return kube.list(NETPOL_API, "NetworkPolicy", meta["namespace"], label_selector=selector)


def after_apply(kube: Kube, body: Mapping[str, Any], rendered: r.Rendered) -> list[str]:
    """Delete this instance's NetworkPolicies that are no longer rendered."""
    meta = body["metadata"]
    stale = set(netpol.stale_policy_names(rendered.network_policies, meta["name"]))
    if not stale:
        return []
    removed = []
    for live in _policies(kube, meta, stale):
        owned = any(ref.get("uid") == meta["uid"] for ref in live["metadata"].get("ownerReferences") or [])
        if owned and live["metadata"]["name"] in stale:
            kube.delete(NETPOL_API, "NetworkPolicy", meta["namespace"], live["metadata"]["name"])
            # Items of a list response carry no kind.
            removed.append(f"deleted {describe({**live, 'kind': 'NetworkPolicy'})}")
    return removed
