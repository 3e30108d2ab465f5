"""e2e fixtures: a real Kubernetes control plane (started locally, or an existing cluster through
KUBECONFIG), the CRDs, the operator process, and a fresh namespace per test.

Set COAI_E2E_USE_KUBECONFIG=1 to run against the cluster in $KUBECONFIG (kind, a real cluster);
otherwise the suite builds (once, cached) and starts its own control plane and real node
(e2e/localcluster). MariaDB is a host process; on the local cluster it also listens on the node's
bridge address, which is how pods reach it (`mariadb_host`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client, config
from pytest_mysql import factories
from tests.mariadb import db_config, db_env, mariadb_server  # noqa: F401  (fixtures)

from e2e.helpers import wait_for
from e2e.localcluster.cluster import LocalCluster
from e2e.localcluster.network import GATEWAY
from e2e.rbac import _operator_identity, operator_rbac, operator_with_chart_rbac  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO / "crds"
USE_KUBECONFIG = os.environ.get("COAI_E2E_USE_KUBECONFIG") == "1"
# Pods reach host processes (MariaDB, the S3 server, the test upstream) at the bridge address; an
# existing cluster keeps loopback as before unless COAI_E2E_POD_HOST_ADDRESS names one.
POD_HOST_ADDRESS = os.environ.get("COAI_E2E_POD_HOST_ADDRESS") or ("127.0.0.1" if USE_KUBECONFIG else GATEWAY)
MARIADB_HOST = POD_HOST_ADDRESS
# e2e/test_backups.py reads this at import: its S3 server must be where the backup Jobs' pods are.
os.environ.setdefault("COAI_E2E_S3_HOST", POD_HOST_ADDRESS)
_mariadb_any = factories.mysql_proc(port=None, user="root",
                                    params=f"--bind-address=127.0.0.1,{MARIADB_HOST} --skip-name-resolve")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        path = Path(str(item.fspath))
        if path.is_relative_to(here):
            item.add_marker(pytest.mark.e2e)


@dataclass
class Cluster:
    kubeconfig: Path
    local: LocalCluster | None = None
    startup_seconds: float = 0.0

    @property
    def env(self) -> dict[str, str]:
        if self.local:
            return self.local.env()
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if self.local:
            return self.local.kubectl(*args, input=input, check=check, timeout=timeout)
        return subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=self.env,
                              check=check, timeout=timeout)

    def api_client(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if USE_KUBECONFIG:
        yield Cluster(kubeconfig=Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config")))
        return
    local = LocalCluster(state_dir=Path(tempfile.mkdtemp(prefix="coai-e2e-")),
                         keep_state=os.environ.get("COAI_E2E_KEEP_STATE") == "1")
    try:
        local.start()
        print(f"\nlocal cluster started in {local.startup_seconds:.1f}s: {local.timings}", file=sys.stderr)
        yield Cluster(kubeconfig=local.kubeconfig, local=local, startup_seconds=local.startup_seconds)
    finally:
        local.stop()


@pytest.fixture(scope="session")
def mariadb_proc(cluster: Cluster, _mariadb_any):
    """MariaDB, started after the cluster: it binds the node's bridge address too."""
    return _mariadb_any


@pytest.fixture(scope="session")
def mariadb_host() -> str:
    return MARIADB_HOST


@pytest.fixture(scope="session")
def operator_image(cluster: Cluster) -> str:
    """The operator image built from the Dockerfile (imported into the local node at start)."""
    if cluster.local is None:
        return os.environ.get("COAI_E2E_OPERATOR_IMAGE", "ghcr.io/coai-operator/coai-operator:dev")
    return cluster.local.operator_image


@pytest.fixture(scope="session")
def crds_installed(cluster: Cluster) -> list[str]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    names = [f"{p}.coai.dev" for p in ("coaiinstances", "coaimigrations")]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names])
    return names


@dataclass
class OperatorProcess:
    cluster: Cluster
    log_path: Path
    kubeconfig: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**self.cluster.env, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1",
               "COAI_INSTANCE_GRACE_SECONDS": "5", "COAI_METRICS_ADDRESS": "127.0.0.1:0", **self.extra_env}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coai_operator.cli", "run", "--all-namespaces", "--verbose"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=REPO)
        log.close()
        wait_for(lambda: "coai-operator watching" in self.log_text(), timeout=60,
                 message="operator startup log line")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: what a crashed or evicted operator looks like."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def metrics_url(self) -> str:
        """The operator's /metrics (a free loopback port, from its startup log line; the last start wins)."""
        urls = re.findall(r"Prometheus metrics on (http://\S+/metrics)", self.log_text())
        assert urls, "the operator logged no metrics address"
        return urls[-1]


@pytest.fixture(scope="session")
def operator(cluster: Cluster, crds_installed: list[str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator (`coai-operator run`) as its own process, watching all namespaces."""
    op = OperatorProcess(cluster=cluster, log_path=tmp_path_factory.mktemp("operator") / "operator.log",
                         kubeconfig=cluster.kubeconfig)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        if os.environ.get("COAI_E2E_SHOW_OPERATOR_LOG") == "1":
            print(op.log_text()[-20000:], file=sys.stderr)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name)
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
