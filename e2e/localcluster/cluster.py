"""A real Kubernetes cluster on this machine: the control plane on loopback (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, built by build_binaries.py) and one real node (node.py:
containerd, kubelet, kube-proxy, CoreDNS) on a bridge of its own.

`LocalCluster(state_dir).start()` generates credentials, starts every process in its own process
group, writes a kubeconfig, imports the images (images.py, pause.py) and waits until the
controllers work (the `default` ServiceAccount exists) and the node is Ready. `stop()` ends every
process, undoes every host change of the node and removes the state directory.

Run by hand: `python e2e/localcluster/cluster.py up` (foreground, Ctrl-C tears down).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if __name__ == "__main__":  # run as a script: make the package importable
    sys.path.insert(0, str(REPO))

from e2e.localcluster import build_binaries  # noqa: E402
from e2e.localcluster.node import LocalNode  # noqa: E402
from e2e.localcluster.pki import generate_pki  # noqa: E402

SERVICE_CIDR = "10.96.0.0/16"
ADMIN_USER = "coai-admin"
# A token-file user that the RBAC tests bind to the chart's operator role (issue 6).
OPERATOR_USER = "system:serviceaccount:coai-system:coai-operator"
OPERATOR_GROUPS = "system:serviceaccounts,system:serviceaccounts:coai-system,system:authenticated"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def load_images() -> dict[str, Path]:
    """Every image the suite deploys (images.py). COAI_E2E_IMAGES narrows the groups (comma list)."""
    from e2e.localcluster.images import ensure_images

    groups = [g for g in os.environ.get("COAI_E2E_IMAGES", "").split(",") if g] or None
    if groups is None and importlib.util.find_spec("e2e.localcluster.build_coai") is None:
        groups = ["operator", "redis", "standin"]  # the real CoAI images need build_coai.py
    return ensure_images(groups)


def kubeconfig_yaml(server: str, ca_file: Path, user: str, token: str) -> str:
    return json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "coai-e2e", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "coai-e2e", "context": {"cluster": "coai-e2e", "user": user}}],
        "current-context": "coai-e2e",
    }, indent=2)


@dataclass
class LocalCluster:
    state_dir: Path
    bin_dir: Path = field(default_factory=build_binaries.bin_dir)
    python: str = sys.executable
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    keep_state: bool = False
    node: LocalNode | None = None
    images: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        """Credentials of the operator's ServiceAccount-equivalent user (RBAC-limited)."""
        return self.state_dir / "kubeconfig-operator"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    free_port = staticmethod(free_port)

    @property
    def operator_image(self) -> str:
        """The image built from the project's Dockerfile (its name: the chart's repository)."""
        return next(name for name in self.images if "coai-operator" in name)

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 120) -> None:
        """wait_until, failing at once (with the log) when one of our processes died."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            with contextlib.suppress(Exception):
                if predicate():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.25)

    def http_ok(self, url: str) -> bool:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{Path(self.python).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = (self.logs_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
        log.close()
        self.processes[name] = proc
        return proc

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                tail = (self.logs_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}; last log lines:\n{tail}")

    def _https_ok(self, url: str, token: str | None = None) -> bool:
        self._check_alive()
        ctx = ssl.create_default_context(cafile=str(self.state_dir / "pki" / "ca.crt"))
        if "127.0.0.1:" in url and "/healthz" in url and token is None:
            ctx = ssl._create_unverified_context()
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
            return resp.status == 200

    def start(self, timeout: float = 180) -> LocalCluster:
        started = time.monotonic()
        build_binaries.ensure_built(["etcd", "kubernetes"])
        self.images = images = load_images()
        self.timings["images"] = round(time.monotonic() - started, 2)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pki = self.pki
        generate_pki(pki)
        admin_token, operator_token = secrets.token_hex(24), secrets.token_hex(24)
        tokens = self.state_dir / "tokens.csv"
        tokens.write_text(
            f'{admin_token},{ADMIN_USER},uid-admin,"system:masters"\n'
            f'{operator_token},{OPERATOR_USER},uid-operator,"{OPERATOR_GROUPS}"\n'
        )
        tokens.chmod(0o600)

        etcd_port, etcd_peer, self.api_port = free_port(), free_port(), free_port()
        kcm_port, sched_port = free_port(), free_port()
        self.api_url = f"https://127.0.0.1:{self.api_port}"
        self.kubeconfig.write_text(kubeconfig_yaml(self.api_url, pki / "ca.crt", ADMIN_USER, admin_token))
        self.operator_kubeconfig.write_text(
            kubeconfig_yaml(self.api_url, pki / "ca.crt", "coai-operator", operator_token))
        for path in (self.kubeconfig, self.operator_kubeconfig):
            path.chmod(0o600)

        t = time.monotonic()
        b = self.bin_dir
        self._spawn("etcd", [
            str(b / "etcd"), "--name=e2e", f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=e2e=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=4294967296",
        ])
        self._spawn("kube-apiserver", [
            str(b / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.api_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={tokens}",
            "--authorization-mode=Node,RBAC", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--allow-privileged=true", "--profiling=false", "--v=0",
            # The node writes the `kubernetes` EndpointSlice itself (its relay, see node.py).
            "--endpoint-reconciler-type=none", "--kubelet-preferred-address-types=InternalIP",
        ])
        self.wait(lambda: self._https_ok(f"{self.api_url}/readyz", admin_token), "kube-apiserver /readyz", timeout)

        self._spawn("kube-controller-manager", [
            str(b / "kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={kcm_port}",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            "--controllers=*", f"--service-cluster-ip-range={SERVICE_CIDR}", "--v=0",
            # Bookkeeping only: Jobs' TTL and pod GC run fast so test namespaces stay small.
            "--terminated-pod-gc-threshold=200", "--concurrent-gc-syncs=10",
        ])
        self._spawn("kube-scheduler", [
            str(b / "kube-scheduler"), f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={sched_port}", "--v=0",
        ])
        self.wait(lambda: self._https_ok(f"https://127.0.0.1:{kcm_port}/healthz"), "controller-manager", timeout)
        self.wait(lambda: self._https_ok(f"https://127.0.0.1:{sched_port}/healthz"), "scheduler", timeout)
        self.wait(lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default",
                                       check=False).returncode == 0,
                  "the default ServiceAccount (controllers working)", timeout)
        self.timings["control plane"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        self.node = LocalNode(self)
        self.node.start(images)
        self.node.wait_ready()
        self.timings["node Ready"] = round(time.monotonic() - t, 2)
        self.timings.update(self.node.timings)
        self.startup_seconds = time.monotonic() - started
        return self

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kubectl = self.bin_dir / "kubectl"
        return subprocess.run([str(kubectl) if kubectl.exists() else "kubectl", *args], input=input,
                              capture_output=True, text=True, env=self.env(), check=check, timeout=timeout)

    def stop_process(self, name: str, grace: float = 15) -> None:
        proc = self.processes.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def stop(self) -> None:
        try:
            if self.node:
                self.node.stop()
        finally:
            for name in ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd", *self.processes]:
                self.stop_process(name)
            if not self.keep_state:
                shutil.rmtree(self.state_dir, ignore_errors=True)


@contextlib.contextmanager
def running_cluster(state_dir: Path | None = None, keep_state: bool = False) -> Iterator[LocalCluster]:
    state = state_dir or Path(tempfile.mkdtemp(prefix="coai-e2e-"))
    cluster = LocalCluster(state_dir=state, keep_state=keep_state)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="run the local control plane in the foreground")
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--state-dir", type=Path, default=Path(tempfile.gettempdir()) / "coai-local-cluster")
    parser.add_argument("--kubeconfig-out", type=Path, help="also copy the admin kubeconfig here")
    args = parser.parse_args()
    shutil.rmtree(args.state_dir, ignore_errors=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    with running_cluster(args.state_dir) as cluster:
        if args.kubeconfig_out:
            shutil.copy(cluster.kubeconfig, args.kubeconfig_out)
        print(f"cluster up in {cluster.startup_seconds:.1f}s; KUBECONFIG={cluster.kubeconfig}", flush=True)
        try:
            while not stop["now"]:
                cluster._check_alive()
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
