"""Real Flux against the e2e cluster: source-controller and kustomize-controller (built from their Go
modules by e2e/localcluster/build_flux.py) as host processes, their CRDs, and a Git repository on
127.0.0.1 (e2e/gitserver.py). A test commits manifests, Flux applies them (server-side apply, field
manager kustomize-controller) and health-checks the CoaiInstance with kstatus.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.conftest import Cluster
from e2e.gitserver import GitServer
from e2e.helpers import wait_for
from e2e.localcluster import build_flux

FLUX_MANAGER = "kustomize-controller"
INTERVAL = "5s"  # how often Flux re-reads Git and re-applies: its self-heal


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Flux:
    cluster: Cluster
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self) -> Flux:
        bin_dir = build_flux.ensure_built()
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(bin_dir / "crds"),
                             timeout=300)
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=120s",
                             "crd/gitrepositories.source.toolkit.fluxcd.io",
                             "crd/kustomizations.kustomize.toolkit.fluxcd.io")
        storage_port = _free_port()
        storage = self.workdir / "artifacts"
        storage.mkdir(parents=True, exist_ok=True)
        common = ["--enable-leader-election=false", "--log-level=debug", "--log-encoding=json",
                  "--events-addr="]
        self._run("source-controller", bin_dir, [
            *common, f"--storage-addr=127.0.0.1:{storage_port}", f"--storage-path={storage}",
            f"--storage-adv-addr=127.0.0.1:{storage_port}"])
        # One Kustomization per test namespace, and a finished test's Kustomization may go on
        # health-checking for its whole timeout (8 min) while its namespace is deleted. With the
        # default 4 workers, four of those left no worker for the next test's Kustomization: its
        # first apply, then nothing (CI: "Flux re-applies the instance" timed out after 180 s).
        self._run("kustomize-controller", bin_dir, [*common, "--concurrent=16"])
        return self

    def _run(self, name: str, bin_dir: Path, args: list[str]) -> None:
        ports = [f"--metrics-addr=127.0.0.1:{_free_port()}", f"--health-addr=127.0.0.1:{_free_port()}"]
        log = (self.workdir / f"{name}.log").open("ab")
        env = {**self.cluster.env, "KUBECONFIG": str(self.cluster.kubeconfig), "RUNTIME_NAMESPACE": "flux-system"}
        self.procs[name] = subprocess.Popen([str(bin_dir / name), *args, *ports], stdout=log,
                                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    # --- one sync per test namespace ----------------------------------------------------------

    def sync(self, namespace: str, git: GitServer, *, health: list[dict[str, str]], timeout: str = "8m") -> None:
        """A GitRepository on `git` and a Kustomization applying its root into `namespace`."""
        objs: list[dict[str, Any]] = [
            {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
             "metadata": {"name": "app", "namespace": namespace},
             "spec": {"url": git.url, "interval": INTERVAL, "ref": {"branch": "main"}, "timeout": "60s"}},
            {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
             "metadata": {"name": "app", "namespace": namespace},
             "spec": {"interval": INTERVAL, "retryInterval": INTERVAL, "path": "./", "prune": True,
                      "targetNamespace": namespace, "timeout": timeout,
                      "sourceRef": {"kind": "GitRepository", "name": "app"},
                      "healthChecks": [{**h, "namespace": namespace} for h in health]}},
        ]
        self.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objs))

    def kustomization(self, namespace: str) -> dict[str, Any]:
        return json.loads(self.cluster.kubectl("get", "kustomizations.kustomize.toolkit.fluxcd.io", "app", "-n",
                                               namespace, "-o", "json").stdout)

    def request_reconcile(self, namespace: str) -> None:
        """What `flux reconcile kustomization` does: ask for a reconcile now, not at the next interval."""
        self.cluster.kubectl("annotate", "--overwrite", "-n", namespace, "kustomizations.kustomize.toolkit.fluxcd.io",
                             "app", f"reconcile.fluxcd.io/requestedAt={time.time_ns()}")

    def ready_condition(self, namespace: str) -> dict[str, Any]:
        conds = (self.kustomization(namespace).get("status") or {}).get("conditions") or []
        return next((c for c in conds if c["type"] == "Ready"), {})

    def wait_applied(self, namespace: str, sha: str, *, ready: bool | None = True, timeout: float = 600) -> dict:
        """Wait until Flux has applied commit `sha` and its health checks came out as `ready`
        (None: either way). Returns the Kustomization's Ready condition."""

        def done() -> dict | None:
            status = self.kustomization(namespace).get("status") or {}
            cond = self.ready_condition(namespace)
            if not status.get("lastAttemptedRevision", "").endswith(sha) or cond.get("status") == "Unknown":
                return None
            if ready is None or (cond.get("status") == "True") == ready:
                return cond
            return None

        return wait_for(done, timeout=timeout, interval=2,
                        message=f"Kustomization applied {sha[:8]} with Ready={ready}")

    def applied_changes(self, namespace: str, kind: str, name: str) -> list[str]:
        """What each server-side apply did to kind/name, from kustomize-controller's log, in order:
        'created', 'configured' (Flux changed something: drift) or 'unchanged'."""
        key = f"{kind}/{namespace}/{name}"
        actions = []
        for line in self.log("kustomize-controller").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                output = entry.get("output")
                if isinstance(output, dict) and entry.get("namespace") == namespace and key in output:
                    actions.append(str(output[key]))
        return actions


def spec_writers(obj: dict[str, Any], allowed: tuple[str, ...] = (FLUX_MANAGER, "kubectl", "kubectl-client-side-apply",
                                                                   "kubectl-edit", "kubectl-patch",
                                                                   "e2e-selfheal")) -> list[str]:
    """Field managers other than Git's appliers that own a field of obj.spec (managedFields)."""
    writers = []
    for entry in obj["metadata"].get("managedFields") or []:
        if entry.get("subresource") or entry.get("manager") in allowed:
            continue
        if "f:spec" in (entry.get("fieldsV1") or {}):
            writers.append(f"{entry.get('manager')} ({entry.get('operation')})")
    return writers
