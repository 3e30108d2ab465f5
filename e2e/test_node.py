"""The real node: containers really run, probes, Services, cluster DNS, securityContext, Pod
Security admission, local PVs and garbage collection, with the operator image built from the
project's Dockerfile."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from coai_operator.kube import Kube
from coai_operator.migration.jobsteps import pod_log_tail
from e2e.conftest import Cluster
from e2e.helpers import wait_for
from e2e.localcluster import network

pytestmark = pytest.mark.e2e
RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
              "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}


def apply(cluster: Cluster, namespace: str, *docs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


def job(name: str, image: str, script: str, **pod: Any) -> dict[str, Any]:
    container = {"name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                 "command": ["python3", "-c", script], "securityContext": RESTRICTED}
    container.update(pod.pop("container", {}))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, **pod.pop("metadata", {})},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "containers": [container], **pod}}}}


def job_logs(cluster: Cluster, namespace: str, name: str, timeout: float = 120) -> str:
    def finished() -> dict | None:
        status = json.loads(cluster.kubectl("get", "job", name, "-n", namespace, "-o", "json").stdout)["status"]
        return status if status.get("succeeded") or status.get("failed") else None
    status = wait_for(finished, timeout=timeout, message=f"job/{name} finished")
    logs = cluster.kubectl("logs", f"job/{name}", "-n", namespace).stdout
    assert status.get("succeeded") == 1, f"job/{name} failed: {logs}"
    return logs


def test_the_node_is_a_real_kubelet_and_ready(cluster: Cluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert nodes, "no node registered"
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["status"]["conditions"]
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


def test_operator_image_is_ready_through_a_probe_and_reached_by_service_dns(
        cluster: Cluster, namespace: str, operator_image: str) -> None:
    labels = {"app": "web"}
    # The Service first: a name lookup before its rule exists would be cached by conntrack.
    apply(cluster, namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}})
    apply(cluster, namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{
                "name": "web", "image": operator_image, "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-m", "http.server", "8080", "--directory", "/etc"],
                "securityContext": {**RESTRICTED, "readOnlyRootFilesystem": True},
                "readinessProbe": {"httpGet": {"path": "/hostname", "port": 8080}, "periodSeconds": 1}}]}}}})
    cluster.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=120s")
    pod = cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=web",
                          "-o", "jsonpath={.items[0].metadata.name}").stdout
    hostname = cluster.kubectl("exec", "-n", namespace, pod, "--", "cat", "/etc/hostname").stdout.strip()
    assert hostname == pod  # kubectl exec reached the container through the kubelet

    url = f"http://web.{namespace}.svc.cluster.local/hostname"
    fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    apply(cluster, namespace, job("client", operator_image, fetch))
    assert job_logs(cluster, namespace, "client").strip() == pod


def test_security_context_really_applies(cluster: Cluster, namespace: str, operator_image: str) -> None:
    script = ("import os\nprint('uid', os.getuid())\n"
              "try:\n    open('/probe', 'w')\nexcept OSError as exc:\n    print('write /', exc.errno)\n")
    apply(cluster, namespace, job("ro", operator_image, script,
                                  container={"securityContext": {**RESTRICTED, "readOnlyRootFilesystem": True}}))
    logs = job_logs(cluster, namespace, "ro")
    assert "uid 65532" in logs
    assert "write / 30" in logs  # EROFS: the root filesystem is really read-only


def test_privileged_pod_is_rejected_in_a_restricted_namespace(cluster: Cluster, namespace: str,
                                                              operator_image: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "priv"},
           "spec": {"containers": [{"name": "c", "image": operator_image,
                                    "securityContext": {"privileged": True}}]}}
    done = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod), check=False)
    assert done.returncode != 0
    assert "violates PodSecurity" in done.stderr and "privileged" in done.stderr


def test_pvc_data_passes_between_jobs_and_the_owner_collects_them(cluster: Cluster, namespace: str,
                                                                 operator_image: str) -> None:
    apply(cluster, namespace,
          {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
          {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    owner = json.loads(cluster.kubectl("get", "configmap", "owner", "-n", namespace, "-o", "json").stdout)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    pod = {"securityContext": {"fsGroup": 65532},
           "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
           "metadata": {"ownerReferences": [ref]},
           "container": {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}}
    apply(cluster, namespace, job("writer", operator_image, "open('/data/note', 'w').write('from the writer')",
                                  **json.loads(json.dumps(pod))))
    job_logs(cluster, namespace, "writer")
    apply(cluster, namespace, job("reader", operator_image, "print(open('/data/note').read())",
                                  **json.loads(json.dumps(pod))))
    assert job_logs(cluster, namespace, "reader").strip() == "from the writer"

    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(lambda: not json.loads(cluster.kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"],
             timeout=60, message="the Jobs garbage-collected with their owner")


def test_the_operator_reads_the_tail_of_a_job_pods_log(cluster: Cluster, namespace: str, operator_image: str) -> None:
    """The fallback for a Job's result when its termination message is cut: through the apiserver
    to the kubelet, as the operator does it."""
    apply(cluster, namespace, job("lines", operator_image, "print('\\n'.join(str(i) for i in range(1, 8)))"))
    job_logs(cluster, namespace, "lines")
    pod = cluster.kubectl("get", "pods", "-n", namespace, "-l", "job-name=lines",
                          "-o", "jsonpath={.items[0].metadata.name}").stdout
    api = cluster.api_client()
    try:
        assert pod_log_tail(Kube(api=api), namespace, pod, lines=2).split() == ["6", "7"]
    finally:
        api.close()


def test_the_gateway_keeps_its_address_when_a_pod_interface_comes_and_goes(cluster: Cluster) -> None:
    """Pods cache the gateway's MAC; had it followed the bridge's lowest port, a pod leaving would
    stall every other pod's connections to host services (MariaDB) until their ARP entries expired."""
    def bridge_mac() -> str:
        return Path(f"/sys/class/net/{network.BRIDGE}/address").read_text().strip()

    before = bridge_mac()
    assert before == network.BRIDGE_MAC
    # A port whose address is lower than any the kernel or a CNI plugin would pick, as a pod's veth.
    subprocess.run(["ip", "link", "add", "coai-t-mac", "address", "02:00:00:00:00:01", "type", "veth",
                    "peer", "name", "coai-t-macp"], check=True)
    try:
        subprocess.run(["ip", "link", "set", "coai-t-mac", "master", network.BRIDGE], check=True)
        assert bridge_mac() == before
    finally:
        subprocess.run(["ip", "link", "del", "coai-t-mac"], check=True)
    assert bridge_mac() == before
