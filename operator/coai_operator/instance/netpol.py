"""NetworkPolicies of a CoaiInstance (pure: spec in, manifests out).

Three policies, on by default (spec.networkPolicy.enabled):
- `<instance>`: the app pods accept spec.port only from the namespace (or, with a NodePort or
  LoadBalancer Service, from anywhere), or from spec.networkPolicy.appIngressFrom when set; the
  instance's migration Jobs may always reach it (the validation step). App egress is not limited:
  CoAI calls LLM upstreams anywhere.
- `<instance>-redis`: the managed Redis accepts 6379 only from this instance's app pods and
  sends nothing (replies to accepted connections are not egress).
- `<instance>-migration`: the migration Job pods accept nothing and may reach DNS, the database
  port (the host's address when spec.database.host is an IP literal, else any address: a policy
  cannot name a host) and the app pods' port.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping
from typing import Any

from coai_operator import constants
from coai_operator.instance.spec import Spec, redis_managed

Obj = dict[str, Any]

APP_COMPONENT = "app"
REDIS_COMPONENT = "redis"
# The component label of every migration Job pod (migration/jobs.py labels them so).
MIGRATION_COMPONENT = "migration"
REDIS_PORT = 6379
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
EXTERNAL_SERVICE_TYPES = ("NodePort", "LoadBalancer")


def enabled(spec: Spec) -> bool:
    return bool((spec.get("networkPolicy") or {}).get("enabled", True))


def policy_names(name: str) -> dict[str, str]:
    """component -> NetworkPolicy name: deterministic, so a switched-off policy can be found."""
    return {APP_COMPONENT: name, REDIS_COMPONENT: f"{name}-redis", MIGRATION_COMPONENT: f"{name}-migration"}


def _policy(policy_name: str, namespace: str, instance: str, component: str, owner_refs: list[Obj] | None,
            spec: Obj) -> Obj:
    meta: Obj = {"name": policy_name, "namespace": namespace, "labels": constants.labels(instance, component)}
    if owner_refs is not None:
        meta["ownerReferences"] = copy.deepcopy(owner_refs)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec}


def _pods(instance: str, component: str) -> Obj:
    return {"podSelector": {"matchLabels": constants.selector_labels(instance, component)}}


def app_ingress_peers(spec: Spec, name: str) -> list[Obj] | None:
    """Who may reach the app's port; None means any source (no `from`)."""
    custom = (spec.get("networkPolicy") or {}).get("appIngressFrom")
    if custom:
        # The validation step of a CoaiMigration must keep working whatever the user narrows.
        return [*copy.deepcopy(list(custom)), _pods(name, MIGRATION_COMPONENT)]
    if spec["service"]["type"] in EXTERNAL_SERVICE_TYPES:
        return None
    return [{"podSelector": {}}]  # every pod of the namespace


def app_policy(spec: Spec, name: str, namespace: str, owner_refs: list[Obj] | None) -> Obj:
    rule: Obj = {"ports": [{"protocol": "TCP", "port": int(spec["port"])}]}
    peers = app_ingress_peers(spec, name)
    if peers is not None:
        rule["from"] = peers
    return _policy(name, namespace, name, APP_COMPONENT, owner_refs, {
        "podSelector": _pods(name, APP_COMPONENT)["podSelector"],
        "policyTypes": ["Ingress"],
        "ingress": [rule],
    })


def redis_policy(name: str, namespace: str, owner_refs: list[Obj] | None) -> Obj:
    return _policy(policy_names(name)[REDIS_COMPONENT], namespace, name, REDIS_COMPONENT, owner_refs, {
        "podSelector": _pods(name, REDIS_COMPONENT)["podSelector"],
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [_pods(name, APP_COMPONENT)], "ports": [{"protocol": "TCP", "port": REDIS_PORT}]}],
        "egress": [],
    })


def _ip_block(host: str) -> list[Obj] | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return [{"ipBlock": {"cidr": f"{address}/{address.max_prefixlen}"}}]


def migration_policy(spec: Spec, name: str, namespace: str, owner_refs: list[Obj] | None) -> Obj:
    db = spec["database"]
    database: Obj = {"ports": [{"protocol": "TCP", "port": int(db["port"])}]}
    block = _ip_block(str(db.get("host", "")))
    if block:
        database["to"] = block
    return _policy(policy_names(name)[MIGRATION_COMPONENT], namespace, name, MIGRATION_COMPONENT, owner_refs, {
        "podSelector": _pods(name, MIGRATION_COMPONENT)["podSelector"],
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [
            {"ports": copy.deepcopy(DNS_PORTS)},
            database,
            {"to": [_pods(name, APP_COMPONENT)], "ports": [{"protocol": "TCP", "port": int(spec["port"])}]},
        ],
    })


def network_policies(spec: Spec, name: str, namespace: str, owner_refs: list[Obj] | None) -> list[Obj]:
    """The instance's NetworkPolicies (`spec` already defaulted); empty when switched off."""
    if not enabled(spec):
        return []
    policies = [app_policy(spec, name, namespace, owner_refs)]
    if redis_managed(spec):
        policies.append(redis_policy(name, namespace, owner_refs))
    policies.append(migration_policy(spec, name, namespace, owner_refs))
    return policies


def stale_policy_names(rendered: list[Mapping[str, Any]], name: str) -> list[str]:
    """Names of this instance's policies that are not rendered now (switched off): to delete if owned."""
    wanted = {o["metadata"]["name"] for o in rendered if o.get("kind") == "NetworkPolicy"}
    return [n for n in policy_names(name).values() if n not in wanted]
