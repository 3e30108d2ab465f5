"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler (built by build_binaries.py), plus the node agent (nodeagent.py).

`LocalCluster(state_dir).start()` generates credentials, starts every process in its own process
group, writes a kubeconfig and waits until the controllers are really working (the `default`
ServiceAccount exists). `stop()` ends every process group and removes the state directory.

Run by hand: `python e2e/localcluster/cluster.py up` (foreground, Ctrl-C tears down).
"""

from __future__ import annotations

import argparse
import contextlib
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
sys.path.insert(0, str(HERE))

import build_binaries  # noqa: E402

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


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def generate_pki(pki: Path) -> None:
    """A CA, the apiserver's serving certificate and the service-account signing key."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=coai-e2e-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)
    (pki / "san.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver", "-keyout", "apiserver.key",
             "-out", "apiserver.csr", cwd=pki)
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "30", "-extfile", "san.cnf", "-out", "apiserver.crt", cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        key.chmod(0o600)


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
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pki = self.state_dir / "pki"
        generate_pki(pki)
        admin_token, operator_token = secrets.token_hex(24), secrets.token_hex(24)
        tokens = self.state_dir / "tokens.csv"
        tokens.write_text(
            f'{admin_token},{ADMIN_USER},uid-admin,"system:masters"\n'
            f'{operator_token},{OPERATOR_USER},uid-operator,"{OPERATOR_GROUPS}"\n'
        )
        tokens.chmod(0o600)

        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        kcm_port, sched_port = free_port(), free_port()
        self.api_url = f"https://127.0.0.1:{api_port}"
        self.kubeconfig.write_text(kubeconfig_yaml(self.api_url, pki / "ca.crt", ADMIN_USER, admin_token))
        self.operator_kubeconfig.write_text(
            kubeconfig_yaml(self.api_url, pki / "ca.crt", "coai-operator", operator_token))
        for path in (self.kubeconfig, self.operator_kubeconfig):
            path.chmod(0o600)

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
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--allow-privileged=true", "--profiling=false", "--v=0",
            "--endpoint-reconciler-type=none", "--kubelet-preferred-address-types=InternalIP",
        ])
        wait_until(lambda: self._https_ok(f"{self.api_url}/readyz", admin_token), timeout, "kube-apiserver /readyz")

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
        self._spawn("node-agent", [
            self.python, str(HERE / "nodeagent.py"), f"--kubeconfig={self.kubeconfig}",
            f"--state-dir={self.state_dir / 'node'}",
        ], env=self.env())

        wait_until(lambda: self._https_ok(f"https://127.0.0.1:{kcm_port}/healthz"), timeout, "controller-manager")
        wait_until(lambda: self._https_ok(f"https://127.0.0.1:{sched_port}/healthz"), timeout, "scheduler")
        wait_until(lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default",
                                        check=False).returncode == 0,
                   timeout, "the default ServiceAccount (controllers working)", interval=0.5)
        wait_until(lambda: "True" in self.kubectl(
            "get", "node", "local-node", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False).stdout, timeout, "the node agent's Node to be Ready", interval=0.5)
        self.startup_seconds = time.monotonic() - started
        return self

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kubectl = self.bin_dir / "kubectl"
        return subprocess.run([str(kubectl) if kubectl.exists() else "kubectl", *args], input=input,
                              capture_output=True, text=True, env=self.env(), check=check, timeout=timeout)

    def stop(self) -> None:
        # The node agent first: it stops the pods' processes it started.
        for name in ["node-agent", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]:
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
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
        print(f"control plane up in {cluster.startup_seconds:.1f}s; KUBECONFIG={cluster.kubeconfig}", flush=True)
        try:
            while not stop["now"]:
                cluster._check_alive()
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
