"""A real worker node for the local control plane: containerd (+ Debian's runc), the kubelet,
kube-proxy (iptables mode), CoreDNS, an apiserver relay and the PVC provisioner.

Only one such node can exist per machine (the kubelet hard-codes some host paths, and the bridge
is fixed), so the node holds LOCK for its whole life; a second cluster waits for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from e2e.localcluster import build_binaries, netpol, network, pause, pki
from e2e.localcluster.network import GATEWAY

if TYPE_CHECKING:
    from e2e.localcluster.cluster import LocalCluster

NODE_NAME = "local-node"
LOCK = Path(os.environ.get("COAI_E2E_NODE_LOCK", "/run/lock/coai-e2e-node.lock"))
LOCK_TIMEOUT = float(os.environ.get("COAI_E2E_NODE_LOCK_TIMEOUT", "1800"))
CNI_BIN = "/usr/lib/cni"
RUNC = "/usr/sbin/runc"
# Stopped in this order; containerd last, after its containers are gone.
PROCESSES = ("kube-router", "provisioner", "coredns", "apiserver-relay", "kube-proxy", "kubelet", "containerd")


def acquire_lock() -> TextIO:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    handle = LOCK.open("a+")
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                holder = LOCK.read_text().strip()
                handle.close()
                raise TimeoutError(
                    f"another local cluster (pid {holder}) holds the real node ({LOCK}) for more than "
                    f"{LOCK_TIMEOUT:.0f}s; only one node can run per machine (COAI_E2E_NODE_LOCK_TIMEOUT)") from None
            time.sleep(1)


def kubeconfig_with_cert(server: str, ca: Path, cert: Path, key: Path) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "coai-e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "u", "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "coai-e2e", "context": {"cluster": "coai-e2e", "user": "u"}}],
        "current-context": "coai-e2e",
    })


class LocalNode:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.dir = cluster.state_dir / "node"
        self.bins = build_binaries.node_bin_dir()
        self.lock: TextIO | None = None
        self.timings: dict[str, float] = {}
        self._before_firewall: tuple[dict[str, list[str]], list[str]] | None = None

    @property
    def socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    def _timed(self, what: str, started: float) -> None:
        self.timings[what] = round(time.monotonic() - started, 2)

    def start(self, images: dict[str, Path]) -> None:
        t = time.monotonic()
        build_binaries.ensure_built(["containerd", "coredns"])
        pause_image = pause.ensure_pause_image()
        self._timed("build", t)
        t = time.monotonic()
        self.lock = acquire_lock()
        self._timed("lock", t)
        network.restore_host()  # whatever a killed earlier run left behind
        network.record_host_state()
        network.setup_bridge()
        self.dir.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        self._start_containerd()
        self._import({pause.PAUSE_IMAGE: pause_image, **images})
        self._timed("containerd+images", t)
        t = time.monotonic()
        self._start_kubelet()
        self._start_proxy_dns_relay()
        self._timed("kubelet+proxy+dns", t)

    def _ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bins / "ctr"), "--address", str(self.socket), "-n", "k8s.io", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def _start_containerd(self) -> None:
        root = self.dir / "containerd"
        (self.dir / "cni").mkdir(parents=True, exist_ok=True)
        (self.dir / "cni" / "10-coai-e2e.conflist").write_text(json.dumps(network.cni_config(self.dir / "ipam")))
        config = root / "config.toml"
        root.mkdir(parents=True, exist_ok=True)
        config.write_text(f"""version = 3
root = "{root / 'root'}"
state = "{root / 'state'}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{pause.PAUSE_IMAGE}'
[plugins.'io.containerd.cri.v1.runtime']
  # No process here has CAP_SYS_RESOURCE: runc may not lower oom_score_adj below its own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = '{RUNC}'
      Root = '{root / 'runc'}'
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{CNI_BIN}']
    conf_dir = '{self.dir / 'cni'}'
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
""")
        env = {**os.environ, "PATH": f"{self.bins}:{os.environ['PATH']}"}
        self.cluster._spawn("containerd", [str(self.bins / "containerd"), "--config", str(config)], env=env)
        self.cluster.wait(lambda: self._ctr("version", timeout=5).returncode == 0, "containerd to answer")

    def _import(self, images: dict[str, Path]) -> None:
        """Each distinct archive once: one archive can hold several names (all its tags are imported)."""
        by_archive: dict[Path, list[str]] = {}
        for name, archive in images.items():
            by_archive.setdefault(archive, []).append(name)
        for archive, names in by_archive.items():
            t = time.monotonic()
            done = self._ctr("images", "import", "--local", str(archive))
            if done.returncode != 0:
                raise RuntimeError(f"importing {names} from {archive} failed: {done.stderr}")
            self._timed(f"import {names[0]}" + (f" (+{len(names) - 1} tags)" if len(names) > 1 else ""), t)
        self._add_digest_references()

    def _add_digest_references(self) -> None:
        """A registry pull leaves `repo@sha256:<manifest>` beside `repo:tag`, and the kubelet reports
        it as the container's imageID (the operator records it and a rollback pins it); an import
        leaves the tag only. Add the digest reference, so digests resolve as after a pull."""
        lines = self._ctr("images", "ls").stdout.splitlines()[1:]
        refs = {line.split()[0] for line in lines if line.split()}
        for line in lines:
            fields = line.split()
            if len(fields) < 3 or "@" in fields[0] or not fields[2].startswith("sha256:"):
                continue
            repo = fields[0].rsplit(":", 1)[0] if ":" in fields[0].rsplit("/", 1)[-1] else fields[0]
            pinned = f"{repo}@{fields[2]}"
            if pinned not in refs:
                done = self._ctr("images", "tag", fields[0], pinned)
                if done.returncode != 0:
                    raise RuntimeError(f"adding {pinned}: {done.stderr}")
                refs.add(pinned)

    def _start_kubelet(self) -> None:
        ca = self.cluster.pki / "ca.crt"
        cert, key = pki.issue(self.cluster.pki, "kubelet-client", f"/O=system:nodes/CN=system:node:{NODE_NAME}",
                              "clientAuth")
        serving = pki.issue(self.cluster.pki, "kubelet-serving", f"/CN={NODE_NAME}", "serverAuth",
                            (f"IP:{GATEWAY}", f"DNS:{NODE_NAME}"))
        kubeconfig = self.dir / "kubelet.kubeconfig"
        kubeconfig.write_text(kubeconfig_with_cert(self.cluster.api_url, ca, cert, key))
        (self.dir / "resolv.conf").write_text(f"nameserver {GATEWAY}\n")
        self.kubelet_port = self.cluster.free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            # This VM has cgroup v1 hierarchies; the kubelet refuses them unless told.
            "failCgroupV1": False, "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": GATEWAY, "port": self.kubelet_port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": self.cluster.free_port(),
            "tlsCertFile": str(serving[0]), "tlsPrivateKeyFile": str(serving[1]),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(ca)}},
            "authorization": {"mode": "Webhook"},
            "clusterDomain": "cluster.local", "clusterDNS": [GATEWAY], "resolvConf": str(self.dir / "resolv.conf"),
            "podLogsDir": str(self.dir / "pod-logs"), "failSwapOn": False, "syncFrequency": "10s",
            "serializeImagePulls": False, "maxPods": 250,
            # No registry: images imported once must never be garbage-collected or evicted.
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
        }
        (self.dir / "kubelet.yaml").write_text(json.dumps(config))
        self.cluster._spawn("kubelet", [
            str(self.cluster.bin_dir / "kubelet"), f"--config={self.dir / 'kubelet.yaml'}",
            f"--kubeconfig={kubeconfig}", f"--root-dir={self.dir / 'kubelet'}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={GATEWAY}", "--v=1",
        ], env={**os.environ, "PATH": f"{self.bins}:{os.environ['PATH']}"})

    def _start_proxy_dns_relay(self) -> None:
        c = self.cluster
        ca = c.pki / "ca.crt"
        cert, key = pki.issue(c.pki, "kube-proxy", "/CN=system:kube-proxy", "clientAuth")
        kubeconfig = self.dir / "kube-proxy.kubeconfig"
        kubeconfig.write_text(kubeconfig_with_cert(c.api_url, ca, cert, key))
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "mode": "iptables", "clientConnection": {"kubeconfig": str(kubeconfig)}, "hostnameOverride": NODE_NAME,
            "clusterCIDR": network.POD_CIDR, "nodePortAddresses": [network.POD_CIDR],
            # Zero values: kube-proxy leaves the host's conntrack and route_localnet sysctls alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
                          "udpTimeout": "0s", "udpStreamTimeout": "0s"},
            # masqueradeAll: pod -> Service -> pod on one bridge answers through the host, not around it.
            "iptables": {"localhostNodePorts": False, "masqueradeAll": True},
            "healthzBindAddress": f"127.0.0.1:{c.free_port()}", "metricsBindAddress": f"127.0.0.1:{c.free_port()}",
        }
        (self.dir / "kube-proxy.yaml").write_text(json.dumps(config))
        c._spawn("kube-proxy", [str(c.bin_dir / "kube-proxy"), f"--config={self.dir / 'kube-proxy.yaml'}", "--v=0"])
        # Pods reach the apiserver (loopback only) through the Service `kubernetes` -> this relay.
        c._spawn("apiserver-relay", ["socat", f"TCP-LISTEN:{c.api_port},bind={GATEWAY},fork,reuseaddr",
                                     f"TCP:127.0.0.1:{c.api_port}"])
        c.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "kubernetes",
                                    "endpointslice.kubernetes.io/managed-by": "coai-e2e.local"}},
            "addressType": "IPv4", "endpoints": [{"addresses": [GATEWAY], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": c.api_port, "protocol": "TCP"}]}))
        ready = c.free_port()
        (self.dir / "Corefile").write_text(f"""cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {GATEWAY}
    errors
    ready 127.0.0.1:{ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {c.kubeconfig} coai-e2e
        pods insecure
    }}
    cache 5
}}
.:53 {{
    bind {GATEWAY}
    # No upstream resolver for pods: names outside the cluster do not exist.
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
""")
        c._spawn("coredns", [str(self.bins / "coredns"), "-conf", str(self.dir / "Corefile")])
        c._spawn("provisioner", [c.python, "-m", "e2e.localcluster.provisioner", f"--kubeconfig={c.kubeconfig}",
                                 f"--volumes-dir={self.dir / 'volumes'}", f"--node={NODE_NAME}"],
                 env={**c.env(), "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        c.wait(lambda: c.http_ok(f"http://127.0.0.1:{ready}/ready"), "CoreDNS ready")

    @property
    def firewall(self) -> subprocess.Popen | None:
        """kube-router's NetworkPolicy firewall, while it runs (start_firewall)."""
        return self.cluster.processes.get("kube-router")

    def start_firewall(self) -> None:
        """Enforce NetworkPolicies on this node with kube-router (netpol.py) until stop_firewall().
        Off unless asked for: the other scenarios run with the operator's policies present but not
        enforced, as on a cluster without a policy engine."""
        if self.firewall is not None:
            return
        missing = netpol.missing_commands()
        if missing:
            raise RuntimeError(f"kube-router needs {', '.join(missing)} (e2e/setup.sh installs ipset and iptables)")
        netpol.ensure_built()
        self._before_firewall = (network.all_chains(), network.ipsets())
        c = self.cluster
        c._spawn("kube-router", netpol.firewall_args(c.kubeconfig, NODE_NAME))
        c.wait(lambda: any(chain.startswith("KUBE-ROUTER-") for chain in network.all_chains()["iptables/filter"]),
               "kube-router's firewall chains")

    def stop_firewall(self) -> None:
        self.cluster.stop_process("kube-router")
        if self._before_firewall is not None:
            network.remove_firewall(*self._before_firewall)
            self._before_firewall = None

    def wait_ready(self) -> None:
        c = self.cluster
        c.wait(lambda: "True" in c.kubectl(
            "get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False).stdout, "the node to be Ready")

    def stop(self) -> None:
        c = self.cluster
        if self.lock is None:
            # The lock was never ours (start() failed or was interrupted while waiting): the
            # bridge, chains, cgroups and record belong to the cluster that holds it. Touch nothing.
            return
        for name in PROCESSES[:-1]:
            c.stop_process(name)
        if self.socket.exists():
            self._remove_containers()
        network.kill_pod_processes()
        c.stop_process("containerd")
        # A shim whose task was created while the node stopped outlives `tasks delete` (seen:
        # two idle shims after a run); each names our socket, so they are ours to kill.
        network.kill_processes_naming(f"-address {self.socket}")
        network.unmount_under(str(self.dir))
        network.restore_host()
        if self.lock:
            self.lock.close()
            self.lock = None

    def _remove_containers(self) -> None:
        """Kill and delete every task: their shims exit with them."""
        tasks = self._ctr("tasks", "ls", "-q", timeout=30).stdout.split()
        for task in tasks:
            self._ctr("tasks", "kill", "-s", "SIGKILL", "--all", task, timeout=30)
        for task in tasks:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._ctr("tasks", "delete", "-f", task, timeout=30)
