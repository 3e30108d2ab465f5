"""The real node's figures: cluster start (per component), pod create -> Ready, idle memory.

`python -m e2e.bench.node_bench [--pods 20]` starts a LocalCluster (waiting for the node lock
like the e2e suite), creates pods of the operator image one after the other (each with an exec
readiness probe that succeeds at once) and records create -> Ready as seen by a 50 ms poll,
then the idle RSS of the node's processes. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from e2e.localcluster.cluster import LocalCluster

NODE_PROCESSES = ("containerd", "kubelet", "kube-proxy", "coredns", "apiserver-relay", "provisioner")


def rss_mib(pid: int) -> float:
    """RSS of a process and its children (containerd's shims are not children: they re-parent)."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    return round(total / 1024, 1)


def pod_ready_seconds(cluster: LocalCluster, image: str, index: int) -> float:
    name = f"bench-{index}"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
               "name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
               "command": ["python3", "-c", "import time; time.sleep(3600)"],
               "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}]}}
    started = time.monotonic()
    cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    while cluster.kubectl("get", "pod", name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                          check=False).stdout != "True":
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    cluster.kubectl("delete", "pod", name, "--wait=false")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20)
    args = parser.parse_args()
    cluster = LocalCluster(state_dir=Path(tempfile.mkdtemp(prefix="coai-node-bench-")))
    try:
        cluster.start()
        report: dict = {"startup_seconds": round(cluster.startup_seconds, 1), "timings": cluster.timings}
        times = sorted(pod_ready_seconds(cluster, cluster.operator_image, i) for i in range(args.pods))
        report["pod_create_to_ready_seconds"] = {
            "n": len(times), "p50": round(statistics.median(times), 2),
            "p95": round(times[max(0, int(len(times) * 0.95) - 1)], 2), "max": round(times[-1], 2)}
        time.sleep(10)  # idle: nothing but the node's own loops
        report["idle_rss_mib"] = {n: rss_mib(cluster.processes[n].pid) for n in NODE_PROCESSES
                                  if n in cluster.processes}
        print(json.dumps(report, indent=1))
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
