"""The node agent: one Ready Node for the local control plane, standing in for a kubelet.

- Registers Node `local-node`, keeps its Ready condition and Lease fresh.
- Pods bound to it whose image is the operator's (`*coai-operator*`) run for real as local
  processes of this checkout: env resolved from the pod spec (values, Secret/ConfigMap refs,
  fieldRefs, envFrom), volumes bind-mounted at their mountPath in a private mount namespace,
  the service-account token projected like a kubelet does, exit code -> container state and pod
  phase, the termination message file honoured. This image -> local command mapping is the only
  fake. Every other pod (the CoAI app, Redis) is marked Running and Ready without running.
- A provisioner: every PVC gets a PV backed by its own local directory, removed when released.
- A tiny kubelet log endpoint so `kubectl logs` works for the pods it runs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.server
import ipaddress
import itertools
import json
import logging
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

NODE_NAME = "local-node"
PROVISIONER = "coai.dev/local-dir"
STORAGE_CLASS = "local"
LOCAL_IMAGE_PATTERN = re.compile(os.environ.get("COAI_AGENT_LOCAL_IMAGES", r"(^|/)coai-operator(:|@|$)"))
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
IMAGE_PATHS = sorted({str(p) for p in (REPO, Path(sys.prefix).resolve())
                      if not any(str(p).startswith(str(q) + "/") for q in (REPO, Path(sys.prefix).resolve()))})
# Where a pod's mount sources are staged (see podlaunch.py); outside any plausible mountPath.
STAGE_ROOT = Path("/run/coai-node-agent")
log = logging.getLogger("node-agent")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def runs_locally(image: str) -> bool:
    return bool(LOCAL_IMAGE_PATTERN.search(image or ""))


class NotReadyYet(Exception):  # noqa: N818  (kubelet's CreateContainerConfigError: retried)
    pass


@dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    dir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    stopping: bool = False


class NodeAgent:
    def __init__(self, api: client.ApiClient, state_dir: Path) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.state_dir = state_dir
        self.volumes_dir = state_dir / "volumes"
        self.pods_dir = state_dir / "pods"
        self.runs: dict[str, PodRun] = {}
        self.handled: set[str] = set()
        self.lock = threading.Lock()
        self.ips = (str(ipaddress.ip_address("10.244.0.2") + i) for i in itertools.count())
        self.pod_ips: dict[str, str] = {}
        self.stop_event = threading.Event()
        api_url = urlparse(api.configuration.host)
        self.api_host, self.api_port = api_url.hostname or "127.0.0.1", str(api_url.port or 443)
        self.log_port = 0

    # ---- node -------------------------------------------------------------------------------
    def node_status(self) -> dict[str, Any]:
        ts = now()
        resources = {"cpu": "16", "memory": "64Gi", "pods": "250", "ephemeral-storage": "200Gi"}
        conditions = [
            {"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": "ok",
             "lastHeartbeatTime": ts, "lastTransitionTime": ts}
            for t, r in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                         ("PIDPressure", "SufficientPID"))
        ]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": "coai e2e node agent is posting ready status",
                           "lastHeartbeatTime": ts, "lastTransitionTime": ts})
        return {
            "capacity": resources, "allocatable": resources, "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE_NAME}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_port}},
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.35.4",
                         "kubeProxyVersion": "", "containerRuntimeVersion": "coai-node-agent://1",
                         "kernelVersion": os.uname().release, "osImage": "local", "machineID": "", "systemUUID": "",
                         "bootID": ""},
        }

    def register_node(self) -> None:
        body = {"metadata": {"name": NODE_NAME, "labels": {
            "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "node-role.kubernetes.io/worker": ""}}}
        with contextlib.suppress(ApiException):
            self.core.create_node(body)
        self.core.patch_node_status(NODE_NAME, {"status": self.node_status()})
        with contextlib.suppress(ApiException):
            self.storage.create_storage_class({
                "metadata": {"name": STORAGE_CLASS,
                             "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"})

    def heartbeat_loop(self) -> None:
        while not self.stop_event.wait(5):
            try:
                self.core.patch_node_status(NODE_NAME, {"status": {"conditions": self.node_status()["conditions"]}})
                self.renew_lease()
            except Exception:
                log.exception("heartbeat failed")

    def renew_lease(self) -> None:
        renew = dt.datetime.now(dt.UTC)
        body = {"metadata": {"name": NODE_NAME, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": NODE_NAME, "leaseDurationSeconds": 40, "renewTime": renew}}
        try:
            self.coordination.patch_namespaced_lease(NODE_NAME, "kube-node-lease", body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    # ---- watches ----------------------------------------------------------------------------
    def watch_forever(self, list_fn: Any, handler: Any, **kwargs: Any) -> None:
        """List then watch; every minute (or on any error) start over, which is also a resync."""
        while not self.stop_event.is_set():
            try:
                items = list_fn(**kwargs)
                for item in items.items:
                    self._safe(handler, item)
                for event in watch.Watch().stream(list_fn, resource_version=items.metadata.resource_version,
                                                  timeout_seconds=60, **kwargs):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._safe(handler, event["object"])
            except Exception:
                log.exception("watch %s failed; relisting", getattr(list_fn, "__name__", list_fn))
                time.sleep(1)

    @staticmethod
    def _safe(handler: Any, obj: Any) -> None:
        try:
            handler(obj)
        except Exception:
            log.exception("handling %s/%s failed", obj.metadata.namespace, obj.metadata.name)

    # ---- storage ----------------------------------------------------------------------------
    def on_pvc(self, pvc: client.V1PersistentVolumeClaim) -> None:
        if pvc.spec.volume_name or pvc.metadata.deletion_timestamp or (pvc.status and pvc.status.phase == "Bound"):
            return
        pv_name = f"pvc-{pvc.metadata.uid}"
        path = self.volumes_dir / pv_name
        path.mkdir(parents=True, exist_ok=True)
        size = ((pvc.spec.resources.requests or {}) if pvc.spec.resources else {}).get("storage", "1Gi")
        body = {
            "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                         "labels": {"coai.dev/e2e-provisioned": "true"}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": pvc.spec.access_modes or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": pvc.spec.storage_class_name or "",
                "volumeMode": pvc.spec.volume_mode or "Filesystem",
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": pvc.metadata.namespace,
                             "name": pvc.metadata.name, "uid": pvc.metadata.uid},
            },
        }
        try:
            self.core.create_persistent_volume(body)
            log.info("provisioned %s for %s/%s at %s", pv_name, pvc.metadata.namespace, pvc.metadata.name, path)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def on_pv(self, pv: client.V1PersistentVolume) -> None:
        annotations = pv.metadata.annotations or {}
        if annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER or not pv.status:
            return
        if pv.status.phase in ("Released", "Failed"):
            shutil.rmtree(self.volumes_dir / pv.metadata.name, ignore_errors=True)
            with contextlib.suppress(ApiException):
                self.core.delete_persistent_volume(pv.metadata.name)
            log.info("released %s: directory removed", pv.metadata.name)

    def claim_path(self, namespace: str, claim: str) -> Path:
        pvc = self.core.read_namespaced_persistent_volume_claim(claim, namespace)
        if not pvc.spec.volume_name:
            raise NotReadyYet(f"PVC {claim} is not bound yet")
        pv = self.core.read_persistent_volume(pvc.spec.volume_name)
        if not pv.spec.host_path:
            raise NotReadyYet(f"PV {pv.metadata.name} is not a local directory")
        return Path(pv.spec.host_path.path)

    # ---- pods: env and volumes ----------------------------------------------------------------
    def _read(self, reader: Any, kind: str, namespace: str, name: str, optional: bool) -> Any:
        """The object, None when it is missing but optional; a kubelet-style wait when it is required."""
        try:
            return reader(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            if optional:
                return None
            raise NotReadyYet(f'{kind} "{name}" not found') from exc

    def _secret_data(self, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
        secret = self._read(self.core.read_namespaced_secret, "secret", namespace, name, optional)
        if secret is None:
            return None
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.data or {}).items()}

    def _configmap_data(self, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
        cm = self._read(self.core.read_namespaced_config_map, "configmap", namespace, name, optional)
        return None if cm is None else dict(cm.data or {})

    def _field(self, pod: client.V1Pod, path: str) -> str:
        simple = {
            "metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid, "spec.nodeName": NODE_NAME,
            "spec.serviceAccountName": pod.spec.service_account_name or "default",
            "status.podIP": self.pod_ips.get(pod.metadata.uid, ""), "status.hostIP": "127.0.0.1",
        }
        if path in simple:
            return simple[path] or ""
        match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if match:
            return (getattr(pod.metadata, match.group(1)) or {}).get(match.group(2), "")
        return ""

    def resolve_env(self, pod: client.V1Pod, container: client.V1Container) -> dict[str, str]:
        ns = pod.metadata.namespace
        env: dict[str, str] = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "HOSTNAME": pod.metadata.name, "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": self.api_host, "KUBERNETES_SERVICE_PORT": self.api_port,
        }
        for source in container.env_from or []:
            prefix = source.prefix or ""
            if source.config_map_ref:
                data = self._configmap_data(ns, source.config_map_ref.name, bool(source.config_map_ref.optional))
            else:
                data = self._secret_data(ns, source.secret_ref.name, bool(source.secret_ref.optional))
            env.update({prefix + k: v for k, v in (data or {}).items()})
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                       lambda m: env.get(m.group(1), m.group(0)), var.value or "")
                continue
            ref = var.value_from
            value: str | None = None
            if ref.secret_key_ref:
                data = self._secret_data(ns, ref.secret_key_ref.name, bool(ref.secret_key_ref.optional))
                value = (data or {}).get(ref.secret_key_ref.key)
                if value is None and data is not None and not ref.secret_key_ref.optional:
                    key_ref = ref.secret_key_ref
                    raise NotReadyYet(f"couldn't find key {key_ref.key} in Secret {ns}/{key_ref.name}")
            elif ref.config_map_key_ref:
                data = self._configmap_data(ns, ref.config_map_key_ref.name, bool(ref.config_map_key_ref.optional))
                value = (data or {}).get(ref.config_map_key_ref.key)
            elif ref.field_ref:
                value = self._field(pod, ref.field_ref.field_path)
            if value is not None:
                env[var.name] = value
        return env

    def _write_items(self, target: Path, data: dict[str, str], items: list[Any] | None, mode: int | None) -> None:
        target.mkdir(parents=True, exist_ok=True)
        pairs = [(i.key, i.path) for i in items] if items else [(k, k) for k in data]
        for key, rel in pairs:
            if key not in data:
                continue
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(data[key])
            dest.chmod(mode if mode is not None else 0o644)

    def _projected(self, pod: client.V1Pod, volume: Any, target: Path) -> None:
        ns = pod.metadata.namespace
        for src in volume.projected.sources or []:
            if src.service_account_token:
                token = self.core.create_namespaced_service_account_token(
                    pod.spec.service_account_name or "default", ns,
                    {"spec": {"audiences": [src.service_account_token.audience] if src.service_account_token.audience
                              else None, "expirationSeconds": src.service_account_token.expiration_seconds or 3600,
                              "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name,
                                                 "uid": pod.metadata.uid}}})
                self._write_items(target, {src.service_account_token.path: token.status.token}, None, 0o600)
            elif src.config_map:
                data = self._configmap_data(ns, src.config_map.name, bool(src.config_map.optional)) or {}
                self._write_items(target, data, src.config_map.items, None)
            elif src.secret:
                data = self._secret_data(ns, src.secret.name, bool(src.secret.optional)) or {}
                self._write_items(target, data, src.secret.items, 0o600)
            elif src.downward_api:
                data = {i.path: self._field(pod, i.field_ref.field_path) for i in src.downward_api.items or []
                        if i.field_ref}
                self._write_items(target, data, None, None)

    def volume_paths(self, pod: client.V1Pod, run_dir: Path) -> dict[str, Path]:
        ns = pod.metadata.namespace
        paths: dict[str, Path] = {}
        for volume in pod.spec.volumes or []:
            target = run_dir / "volumes" / volume.name
            if volume.persistent_volume_claim:
                paths[volume.name] = self.claim_path(ns, volume.persistent_volume_claim.claim_name)
            elif volume.host_path:
                paths[volume.name] = Path(volume.host_path.path)
            elif volume.secret:
                data = self._secret_data(ns, volume.secret.secret_name, bool(volume.secret.optional)) or {}
                self._write_items(target, data, volume.secret.items, volume.secret.default_mode)
                paths[volume.name] = target
            elif volume.config_map:
                data = self._configmap_data(ns, volume.config_map.name, bool(volume.config_map.optional)) or {}
                self._write_items(target, data, volume.config_map.items, volume.config_map.default_mode)
                paths[volume.name] = target
            elif volume.projected:
                self._projected(pod, volume, target)
                paths[volume.name] = target
            else:  # emptyDir and anything else: a private directory
                target.mkdir(parents=True, exist_ok=True)
                paths[volume.name] = target
        return paths

    # ---- pods: lifecycle ----------------------------------------------------------------------
    def on_pod(self, pod: client.V1Pod) -> None:
        uid = pod.metadata.uid
        if pod.metadata.deletion_timestamp:
            self.delete_pod(pod)
            return
        with self.lock:
            if uid in self.handled:
                return
            if pod.status and pod.status.phase in ("Succeeded", "Failed"):
                self.handled.add(uid)
                return
            self.handled.add(uid)
            self.pod_ips[uid] = next(self.ips)
        if any(runs_locally(c.image) for c in pod.spec.containers):
            threading.Thread(target=self.run_pod, args=(pod,), name=f"pod-{pod.metadata.name}", daemon=True).start()
        else:
            self.patch_status(pod, self.running_status(pod, {c.name: now() for c in pod.spec.containers}))

    def delete_pod(self, pod: client.V1Pod) -> None:
        run = self.runs.get(pod.metadata.uid)
        if run:
            run.stopping = True
            grace = pod.metadata.deletion_grace_period_seconds or 0
            for proc in run.processes.values():
                stop_process(proc, min(grace, 10))
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0,
                                            body=client.V1DeleteOptions(grace_period_seconds=0,
                                                                        preconditions={"uid": pod.metadata.uid}))

    def base_status(self, pod: client.V1Pod, phase: str, ready: bool) -> dict[str, Any]:
        ts = now()
        flag = "True" if ready else "False"
        ip = self.pod_ips.get(pod.metadata.uid, "10.244.0.1")
        return {
            "phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": ip,
            "podIPs": [{"ip": ip}], "startTime": (pod.status.start_time.strftime("%Y-%m-%dT%H:%M:%SZ")
                                                  if pod.status and pod.status.start_time else ts),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts},
                {"type": "Initialized", "status": "True", "lastTransitionTime": ts},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": ts},
                {"type": "Ready", "status": flag, "lastTransitionTime": ts},
            ],
        }

    def running_status(self, pod: client.V1Pod, started: dict[str, str]) -> dict[str, Any]:
        status = self.base_status(pod, "Running", True)
        status["containerStatuses"] = [
            {"name": c.name, "image": c.image, "imageID": f"local://{c.image}", "ready": True, "started": True,
             "restartCount": 0, "containerID": f"local://{pod.metadata.uid}/{c.name}",
             "state": {"running": {"startedAt": started.get(c.name, now())}}}
            for c in pod.spec.containers
        ]
        return status

    def patch_status(self, pod: client.V1Pod, status: dict[str, Any]) -> None:
        try:
            self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def run_pod(self, pod: client.V1Pod) -> None:
        run_dir = self.pods_dir / f"{pod.metadata.namespace}_{pod.metadata.name}_{pod.metadata.uid}"
        run = PodRun(pod.metadata.uid, pod.metadata.namespace, pod.metadata.name, run_dir)
        self.runs[run.uid] = run
        try:
            self._run_pod(pod, run)
        except Exception as exc:
            log.exception("pod %s/%s failed to run", run.namespace, run.name)
            status = self.base_status(pod, "Failed", False)
            status["message"] = f"node agent: {exc}"
            self.patch_status(pod, status)

    def _prepare(self, pod: client.V1Pod, run: PodRun) -> tuple[dict[str, Path], dict[str, dict[str, str]]]:
        """Volumes and env, retried like a kubelet until Secrets/ConfigMaps/PVCs exist."""
        while True:
            try:
                volumes = self.volume_paths(pod, run.dir)
                envs = {c.name: self.resolve_env(pod, c) for c in [*(pod.spec.init_containers or []),
                                                                  *pod.spec.containers]}
                return volumes, envs
            except NotReadyYet as exc:
                status = self.base_status(pod, "Pending", False)
                status["containerStatuses"] = [
                    {"name": c.name, "image": c.image, "imageID": "", "ready": False, "restartCount": 0,
                     "state": {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}}
                    for c in pod.spec.containers]
                self.patch_status(pod, status)
                if run.stopping or self.stop_event.wait(2):
                    raise RuntimeError("stopped before start") from exc

    def _start(self, pod: client.V1Pod, run: PodRun, container: client.V1Container,
               volumes: dict[str, Path], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        mounts = []
        for vm in container.volume_mounts or []:
            source = volumes[vm.name] / vm.sub_path if vm.sub_path else volumes[vm.name]
            if vm.sub_path:
                source.mkdir(parents=True, exist_ok=True)
            mounts.append({"source": str(source), "target": vm.mount_path, "readOnly": bool(vm.read_only)})
        # The checkout and its venv are the "image": keep them visible even under a mount such as /tmp.
        mounts += [{"source": path, "target": path, "readOnly": True} for path in IMAGE_PATHS]
        termination = run.dir / f"{container.name}.termination-log"
        termination.write_text("")
        mounts.append({"source": str(termination),
                       "target": container.termination_message_path or "/dev/termination-log", "readOnly": False})
        argv = list(container.command or ["coai-operator"]) + list(container.args or [])
        argv = [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a)
                for a in argv]
        spec_file = run.dir / f"{container.name}.launch.json"
        stage = STAGE_ROOT / f"{pod.metadata.uid}-{container.name}"
        spec_file.write_text(json.dumps({"mounts": mounts, "argv": argv, "env": env,
                                         "workingDir": container.working_dir, "stageDir": str(stage)}))
        spec_file.chmod(0o600)
        log_file = run.dir / f"{container.name}.log"
        with log_file.open("ab") as out:
            proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", sys.executable, str(HERE / "podlaunch.py"),
                 str(spec_file)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        run.processes[container.name] = proc
        log.info("started %s/%s[%s]: %s", run.namespace, run.name, container.name, argv)
        return proc, termination

    def _run_pod(self, pod: client.V1Pod, run: PodRun) -> None:
        run.dir.mkdir(parents=True, exist_ok=True)
        volumes, envs = self._prepare(pod, run)
        for init in pod.spec.init_containers or []:
            proc, _ = self._start(pod, run, init, volumes, envs[init.name])
            if proc.wait() != 0:
                self.finish(pod, run, {init.name: (proc.returncode, "")}, {})
                return
        started: dict[str, str] = {}
        procs: dict[str, tuple[subprocess.Popen, Path]] = {}
        restarts = dict.fromkeys((c.name for c in pod.spec.containers), 0)
        for container in pod.spec.containers:
            procs[container.name] = self._start(pod, run, container, volumes, envs[container.name])
            started[container.name] = now()
        self.patch_status(pod, self.running_status(pod, started))
        policy = pod.spec.restart_policy or "Always"
        results: dict[str, tuple[int, str]] = {}
        while len(results) < len(procs):
            for container in pod.spec.containers:
                name = container.name
                proc, termination = procs[name]
                if name in results or proc.poll() is None:
                    continue
                code = proc.returncode
                if not run.stopping and (policy == "Always" or (policy == "OnFailure" and code != 0)):
                    restarts[name] += 1
                    time.sleep(min(10, restarts[name]))
                    procs[name] = self._start(pod, run, container, volumes, envs[name])
                    continue
                results[name] = (code, self.termination_message(container, termination, run.dir / f"{name}.log", code))
            time.sleep(0.2)
        self.finish(pod, run, results, started, restarts)

    @staticmethod
    def termination_message(container: client.V1Container, termination: Path, log_file: Path, code: int) -> str:
        message = termination.read_text(errors="replace")[-4096:] if termination.exists() else ""
        if not message and code != 0 and container.termination_message_policy == "FallbackToLogsOnError":
            message = "\n".join(log_file.read_text(errors="replace").splitlines()[-80:])[-2048:]
        return message

    def finish(self, pod: client.V1Pod, run: PodRun, results: dict[str, tuple[int, str]], started: dict[str, str],
               restarts: dict[str, int] | None = None) -> None:
        ok = all(code == 0 for code, _ in results.values())
        for stage in STAGE_ROOT.glob(f"{pod.metadata.uid}-*"):  # empty mountpoints; the mounts died with the pod
            shutil.rmtree(stage, ignore_errors=True)
        status = self.base_status(pod, "Succeeded" if ok else "Failed", False)
        status["containerStatuses"] = [
            {"name": c.name, "image": c.image, "imageID": f"local://{c.image}", "ready": False, "started": False,
             "restartCount": (restarts or {}).get(c.name, 0), "containerID": f"local://{pod.metadata.uid}/{c.name}",
             "state": {"terminated": {
                 "exitCode": results.get(c.name, (1, ""))[0],
                 "reason": "Completed" if results.get(c.name, (1, ""))[0] == 0 else "Error",
                 "message": results.get(c.name, (1, ""))[1] or None,
                 "startedAt": started.get(c.name, now()), "finishedAt": now()}}}
            for c in pod.spec.containers
        ]
        self.patch_status(pod, status)
        log.info("pod %s/%s finished: %s", run.namespace, run.name,
                 {k: v[0] for k, v in results.items()})

    # ---- kubectl logs -------------------------------------------------------------------------
    def serve_logs(self, cert: Path, key: Path) -> None:
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlparse(self.path).path.strip("/").split("/")
                if len(parts) == 4 and parts[0] == "containerLogs":
                    _, ns, pod, container = parts
                    matches = list(agent.pods_dir.glob(f"{ns}_{pod}_*/{container}.log"))
                    if matches:
                        body = max(matches, key=lambda p: p.stat().st_mtime).read_bytes()
                        self.send_response(200)
                        self.send_header("Content-Type", "text/plain")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        return
                self.send_error(404, "no logs: this pod was not run by the node agent")

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self.log_port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True, name="logs").start()

    # ---- main ---------------------------------------------------------------------------------
    def run(self, pki: Path | None) -> None:
        if pki and (pki / "apiserver.crt").exists():
            self.serve_logs(pki / "apiserver.crt", pki / "apiserver.key")
        self.register_node()
        threads = [
            threading.Thread(target=self.heartbeat_loop, daemon=True, name="heartbeat"),
            threading.Thread(target=self.watch_forever, args=(self.core.list_persistent_volume_claim_for_all_namespaces,
                                                              self.on_pvc), daemon=True, name="pvcs"),
            threading.Thread(target=self.watch_forever, args=(self.core.list_persistent_volume, self.on_pv),
                             daemon=True, name="pvs"),
            threading.Thread(target=self.watch_forever, args=(self.core.list_pod_for_all_namespaces, self.on_pod),
                             kwargs={"field_selector": f"spec.nodeName={NODE_NAME}"}, daemon=True, name="pods"),
        ]
        for thread in threads:
            thread.start()
        self.renew_lease()
        self.stop_event.wait()
        for run in list(self.runs.values()):
            run.stopping = True
            for proc in run.processes.values():
                stop_process(proc, 5)


def stop_process(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api = config.new_client_from_config(config_file=args.kubeconfig)
    agent = NodeAgent(api, args.state_dir)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stop_event.set())
    pki = Path(args.kubeconfig).parent / "pki"
    agent.run(pki)
    return 0


if __name__ == "__main__":
    sys.exit(main())
