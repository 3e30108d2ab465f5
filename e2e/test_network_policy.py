"""NetworkPolicies enforced on the real node (kube-router's firewall, e2e/localcluster/netpol.py).

- On a cluster that enforces policies (the local node with kube-router's firewall, on for that test
  only: `LocalNode.start_firewall()`; or an existing cluster with COAI_E2E_NETPOL_ENFORCED=1): the real app
  with managed Redis (generated password): a pod in another namespace cannot open a TCP connection
  to the Redis Service, a pod of the instance's namespace without the app's labels cannot either, a
  pod with them can; the app's port is closed to other namespaces; a login through the app (which
  needs Redis) still works.
- On the local control plane with any node: kube-router, in a private network namespace (its
  iptables and ipsets touch nothing of the host), turns the operator's rendered policies into
  rules for the instance's pods. This proves kube-router runs here against our cluster and reads
  our policies; the packet-level proof is the test above.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from coai_operator import constants
from coai_operator.engine.dbconfig import DbConfig
from coai_operator.instance import redis_auth
from coai_operator.instance import render as r
from e2e.conftest import Cluster, OperatorProcess
from e2e.helpers import wait_for
from e2e.localcluster import netpol
from e2e.localcluster.node import NODE_NAME

pytestmark = pytest.mark.e2e

APP_IMAGE = os.environ.get("COAI_E2E_APP_IMAGE", constants.DEFAULT_APP_IMAGE)
APP_VERSION = os.environ.get("COAI_E2E_APP_VERSION", "3.11.1")
PROBE_IMAGE = os.environ.get("COAI_ENGINE_IMAGE", constants.OPERATOR_IMAGE)  # has python3
# The upstream app's first user (created when `auth` is empty), see shared/docs/coai-facts.md.
LOGIN = {"username": "root", "password": "chatnio123456"}

# argv: host, port[, attempts]. A policy engine programs a new pod's address a moment after the pod
# starts (kube-router: on the pod's event), so the probe that must connect tries for a while; the
# probes that must be refused try once (a refused source is refused from the first packet).
TCP_PROBE = ("import socket,sys,time\n"
             "attempts = int(sys.argv[3]) if len(sys.argv) > 3 else 1\n"
             "for n in range(attempts):\n"
             " try:\n  socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close(); sys.exit(0)\n"
             " except OSError as e:\n  print(e); time.sleep(1)\n"
             "sys.exit(1)\n")
CONNECTS = "30"  # attempts for a probe that must get through
LOGIN_PROBE = ("import json,sys,time,urllib.request\n"
               "req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), "
               "headers={'Content-Type': 'application/json'})\n"
               "for n in range(30):  # the new pod's address reaches the app's policy a moment late\n"
               " try:\n  body = json.load(urllib.request.urlopen(req, timeout=10)); break\n"
               " except OSError as e:\n  print(e); time.sleep(1)\n"
               "else:\n sys.exit(1)\n"
               "print(json.dumps({k: v for k, v in body.items() if k != 'token'}))\n"
               "sys.exit(0 if body.get('status') is True and body.get('token') else 1)\n")


@pytest.fixture
def enforced(cluster: Cluster) -> Iterator[Cluster]:
    """The local node with kube-router's firewall on for this test; an existing cluster must say it
    enforces policies (COAI_E2E_NETPOL_ENFORCED=1)."""
    if cluster.local is None:
        if os.environ.get("COAI_E2E_NETPOL_ENFORCED") != "1":
            pytest.skip("an existing cluster without COAI_E2E_NETPOL_ENFORCED=1 may not enforce NetworkPolicies")
        yield cluster
        return
    node = cluster.local.node
    assert node is not None
    node.start_firewall()
    try:
        yield cluster
    finally:
        node.stop_firewall()


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


def instance_manifest(name: str, db: DbConfig) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION, "kind": constants.INSTANCE_KIND, "metadata": {"name": name},
        "spec": {
            "version": APP_VERSION, "image": APP_IMAGE, "offline": {"enabled": True},
            "database": {"host": db.host, "port": db.port, "name": db.database, "user": db.user,
                         "passwordSecretRef": {"name": f"{name}-db"}},
            "redis": {"managed": {"enabled": True}},
            "config": {"SERVE_STATIC": "false"},
        },
    }


def test_managed_redis_is_reachable_only_from_its_app(enforced: Cluster, operator: OperatorProcess,
                                                      namespace: str, db_config: DbConfig) -> None:
    cluster, name = enforced, "chat"
    other = f"{namespace}-other"
    cluster.kubectl("create", "namespace", other)
    try:
        cluster.kubectl("create", "secret", "generic", f"{name}-db", "-n", namespace,
                        f"--from-literal=password={db_config.password}")
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(instance_manifest(name, db_config)))
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
        phase, log = run_pod(cluster, namespace, "redis-as-app", TCP_PROBE, [redis, "6379", CONNECTS],
                             labels=app_labels)
        assert phase == "Succeeded", f"a pod with the app's labels could not reach Redis: {log}"
        phase, log = run_pod(cluster, other, "app-from-other-ns", TCP_PROBE, [app, "80"])
        assert phase == "Failed", f"the app's port is open to another namespace: {log}"
        # Login needs Redis (rate limit): this proves the app reaches it with the generated password.
        phase, log = run_pod(cluster, namespace, "login", LOGIN_PROBE, [f"http://{app}/login", json.dumps(LOGIN)])
        assert phase == "Succeeded", f"login through the app failed: {log}"
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


# --- kube-router against the local control plane, in a private network namespace ------------------

@pytest.fixture
def netns_firewall(cluster: Cluster, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """kube-router's firewall in its own network namespace; the API server reached through a socat
    relay over a unix socket (the namespace has only its own loopback)."""
    if cluster.local is None:
        pytest.skip("needs the local control plane")
    if not netpol.binary().exists() or netpol.missing_commands():
        pytest.skip(f"kube-router not built or {netpol.missing_commands()} missing (e2e/setup.sh)")
    if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    api_port = urlparse(cluster.local.api_url).port
    sock = tmp_path / "api.sock"
    log = (tmp_path / "kube-router.log").open("ab")
    relay = subprocess.Popen(["socat", f"UNIX-LISTEN:{sock},fork", f"TCP:127.0.0.1:{api_port}"],
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    inner = (f"ip link set lo up && (socat TCP-LISTEN:{api_port},bind=127.0.0.1,fork,reuseaddr "
             f"UNIX-CONNECT:{sock} &) && exec "
             + shlex.join(netpol.firewall_args(cluster.local.kubeconfig, NODE_NAME)))
    proc = subprocess.Popen(["unshare", "--net", "--fork", "--kill-child", "sh", "-c", inner], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        yield proc
    finally:
        for p in (proc, relay):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        print((tmp_path / "kube-router.log").read_text(errors="replace")[-3000:])


def _in_netns(proc: subprocess.Popen, *argv: str) -> str:
    # `unshare --fork` makes the shell (then kube-router) its child: enter through that child.
    child = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    target = child[0] if child else str(proc.pid)
    return subprocess.run(["nsenter", "--target", target, "--net", *argv], capture_output=True, text=True,
                          check=True).stdout


def test_kube_router_turns_the_operators_policies_into_rules(cluster: Cluster, namespace: str,
                                                             netns_firewall: subprocess.Popen) -> None:
    spec = {"version": APP_VERSION, "database": {"host": "10.0.0.5", "passwordSecretRef": {"name": "chat-db"}},
            "redis": {"managed": {"enabled": True}}}
    rendered = r.render(spec, "chat", namespace)
    secrets = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chat-db", "namespace": namespace},
                "stringData": {"password": "x"}},
               redis_auth.secret("chat", namespace, None, redis_auth.new_password())]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([*secrets, *rendered.all()]))

    def pod_ip(component: str) -> str | None:
        out = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"{constants.LABEL_COMPONENT}={component}",
                              "-o", "jsonpath={.items[*].status.podIP}", check=False).stdout.split()
        return out[0] if out else None

    app_ip = wait_for(lambda: pod_ip("app"), timeout=120, message="app pod IP")
    redis_ip = wait_for(lambda: pod_ip("redis"), timeout=120, message="redis pod IP")

    def rule(policy: str, port: int) -> str | None:
        """kube-router's ACCEPT rule of `policy` for `port`, once programmed."""
        assert netns_firewall.poll() is None, "kube-router exited"
        rules = _in_netns(netns_firewall, "iptables-save").splitlines()
        name = re.compile(rf"policy name:? {re.escape(policy)} namespace {re.escape(namespace)}\b")
        return next((line for line in rules if name.search(line) and f"--dport {port} " in line
                     and "-j MARK" in line), None)

    def members(ipset: str) -> list[str]:
        out = _in_netns(netns_firewall, "ipset", "list", ipset)
        return [line.split()[0] for line in out.split("Members:", 1)[1].splitlines() if line.strip()]

    redis_rule = wait_for(lambda: rule("chat-redis", 6379), timeout=180, message="kube-router's rule for chat-redis")
    src, dst = re.findall(r"--match-set (\S+) (?:src|dst)", redis_rule)
    assert members(src) == [app_ip], "only the app pod may reach Redis"
    assert members(dst) == [redis_ip]
    app_rule = wait_for(lambda: rule("chat", 8000), timeout=60, message="kube-router's rule for the app")
    assert "--match-set" in app_rule  # from the namespace's pods, not from anywhere
    # The migration Jobs: DNS to anywhere, the database's /32, the app's port.
    assert wait_for(lambda: rule("chat-migration", 3306), timeout=60, message="migration database egress")
