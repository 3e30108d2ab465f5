"""NetworkPolicies enforced on the real node (kube-router's firewall, e2e/localcluster/netpol.py).

A CoaiInstance with managed Redis (generated password): a pod in another namespace cannot open a
TCP connection to the Redis Service, a pod of the instance's namespace without the app's labels
cannot either, a pod with them can; the app's port is closed to other namespaces; a login through
the app (which needs Redis) still works.

Runs only on a cluster that enforces policies: the local cluster once its real node starts the
firewall (`LocalCluster.firewall`), or an existing cluster with COAI_E2E_NETPOL_ENFORCED=1.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import yaml

from coai_operator import constants
from e2e.conftest import Cluster, OperatorProcess
from e2e.helpers import wait_for

pytestmark = pytest.mark.e2e

APP_IMAGE = os.environ.get("COAI_E2E_APP_IMAGE", constants.DEFAULT_APP_IMAGE)
APP_VERSION = os.environ.get("COAI_E2E_APP_VERSION", "3.11.2")
PROBE_IMAGE = os.environ.get("COAI_ENGINE_IMAGE", constants.OPERATOR_IMAGE)  # has python3
DB_HOST = os.environ.get("COAI_E2E_DB_HOST", "")
# The upstream app's first user (created when `auth` is empty), see shared/docs/coai-facts.md.
LOGIN = {"username": "root", "password": "chatnio123456"}

TCP_PROBE = ("import socket,sys\n"
             "try:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()\n"
             "except OSError as e:\n print(e); sys.exit(1)\n")
LOGIN_PROBE = ("import json,sys,urllib.request\n"
               "req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), "
               "headers={'Content-Type': 'application/json'})\n"
               "body = json.load(urllib.request.urlopen(req, timeout=10))\n"
               "print(json.dumps({k: v for k, v in body.items() if k != 'token'}))\n"
               "sys.exit(0 if body.get('status') is True and body.get('token') else 1)\n")


def enforcing(cluster: Cluster) -> bool:
    if cluster.local is not None:
        proc = getattr(cluster.local, "firewall", None)
        return proc is not None and proc.poll() is None
    return os.environ.get("COAI_E2E_NETPOL_ENFORCED") == "1"


@pytest.fixture
def enforced(cluster: Cluster) -> Cluster:
    if not enforcing(cluster):
        pytest.skip("the cluster does not enforce NetworkPolicies (no real node with kube-router's firewall)")
    if not DB_HOST:
        pytest.skip("COAI_E2E_DB_HOST: a MariaDB the real node's pods can reach")
    return cluster


def run_pod(cluster: Cluster, namespace: str, name: str, script: str, args: list[str],
            labels: dict[str, str] | None = None, timeout: float = 120) -> tuple[str, str]:
    """Run a one-shot python pod; (phase Succeeded/Failed, its log)."""
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": PROBE_IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-c", script, *args],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))

    def finished() -> str | None:
        out = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False)
        return out.stdout if out.stdout in ("Succeeded", "Failed") else None

    phase = wait_for(finished, timeout=timeout, message=f"pod {namespace}/{name} finished")
    log = cluster.kubectl("logs", name, "-n", namespace, check=False).stdout
    return phase, log


def instance_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION, "kind": constants.INSTANCE_KIND, "metadata": {"name": name},
        "spec": {
            "version": APP_VERSION, "image": APP_IMAGE, "healthPath": "/",
            "database": {"host": DB_HOST, "passwordSecretRef": {"name": f"{name}-db"}},
            "redis": {"managed": {"enabled": True}},
            "config": {"SERVE_STATIC": "false"},
        },
    }


def test_managed_redis_is_reachable_only_from_its_app(enforced: Cluster, operator: OperatorProcess,
                                                      namespace: str) -> None:
    cluster, name = enforced, "chat"
    other = f"{namespace}-other"
    cluster.kubectl("create", "namespace", other)
    try:
        cluster.kubectl("create", "secret", "generic", f"{name}-db", "-n", namespace,
                        f"--from-literal=password={os.environ.get('COAI_E2E_DB_PASSWORD', '')}")
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(instance_manifest(name)))
        wait_for(lambda: cluster.kubectl("wait", "--for=condition=Ready", f"coai/{name}", "-n", namespace,
                                         "--timeout=5s", check=False).returncode == 0,
                 timeout=600, message="CoaiInstance Ready")
        policies = json.loads(cluster.kubectl("get", "networkpolicy", "-n", namespace, "-o", "json").stdout)
        assert {p["metadata"]["name"] for p in policies["items"]} == {name, f"{name}-redis", f"{name}-migration"}
        secret = json.loads(cluster.kubectl("get", "secret", f"{name}-redis-auth", "-n", namespace,
                                            "-o", "json").stdout)
        assert secret["metadata"]["ownerReferences"][0]["name"] == name

        redis = f"{name}-redis.{namespace}.svc"
        app = f"{name}.{namespace}.svc"
        app_labels = constants.selector_labels(name, "app")
        phase, log = run_pod(cluster, other, "redis-from-other-ns", TCP_PROBE, [redis, "6379"])
        assert phase == "Failed", f"a pod in another namespace reached the managed Redis: {log}"
        phase, log = run_pod(cluster, namespace, "redis-unlabelled", TCP_PROBE, [redis, "6379"])
        assert phase == "Failed", f"a pod without the app's labels reached the managed Redis: {log}"
        phase, log = run_pod(cluster, namespace, "redis-as-app", TCP_PROBE, [redis, "6379"], labels=app_labels)
        assert phase == "Succeeded", f"a pod with the app's labels could not reach Redis: {log}"
        phase, log = run_pod(cluster, other, "app-from-other-ns", TCP_PROBE, [app, "80"])
        assert phase == "Failed", f"the app's port is open to another namespace: {log}"
        # Login needs Redis (rate limit): this proves the app reaches it with the generated password.
        phase, log = run_pod(cluster, namespace, "login", LOGIN_PROBE, [f"http://{app}/login", json.dumps(LOGIN)])
        assert phase == "Succeeded", f"login through the app failed: {log}"
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
