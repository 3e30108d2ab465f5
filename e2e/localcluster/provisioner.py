"""The local cluster's PVC provisioner: every claim of the default StorageClass `local` gets a
`local` PersistentVolume (a directory of the node, pinned to it by nodeAffinity), removed when
released. A `local` volume, unlike hostPath, gets fsGroup ownership from the kubelet, as cloud
disks do; the directory starts root-owned 0755 like a fresh filesystem.

Run by the cluster: `provisioner.py --kubeconfig K --volumes-dir D --node N`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

PROVISIONER = "coai.dev/local-dir"
STORAGE_CLASS = "local"
log = logging.getLogger("provisioner")


def pv_body(pvc: client.V1PersistentVolumeClaim, path: Path, node: str) -> dict[str, Any]:
    size = ((pvc.spec.resources.requests or {}) if pvc.spec.resources else {}).get("storage", "1Gi")
    return {
        "metadata": {"name": f"pvc-{pvc.metadata.uid}", "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                     "labels": {"coai.dev/e2e-provisioned": "true"}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": pvc.spec.access_modes or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": pvc.spec.storage_class_name or "",
            "volumeMode": pvc.spec.volume_mode or "Filesystem",
            "local": {"path": str(path)},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": pvc.metadata.namespace,
                         "name": pvc.metadata.name, "uid": pvc.metadata.uid},
        },
    }


class Provisioner:
    def __init__(self, api: client.ApiClient, volumes_dir: Path, node: str) -> None:
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.volumes_dir = volumes_dir
        self.node = node
        self.stop_event = threading.Event()

    def ensure_storage_class(self) -> None:
        with contextlib.suppress(ApiException):
            self.storage.create_storage_class({
                "metadata": {"name": STORAGE_CLASS,
                             "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"})

    def on_pvc(self, pvc: client.V1PersistentVolumeClaim) -> None:
        if pvc.spec.volume_name or pvc.metadata.deletion_timestamp or (pvc.status and pvc.status.phase == "Bound"):
            return
        path = self.volumes_dir / f"pvc-{pvc.metadata.uid}"
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
        try:
            self.core.create_persistent_volume(pv_body(pvc, path, self.node))
            log.info("provisioned %s/%s at %s", pvc.metadata.namespace, pvc.metadata.name, path)
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

    def watch_forever(self, list_fn: Any, handler: Any) -> None:
        """List then watch; every minute (or on any error) start over, which is also a resync."""
        while not self.stop_event.is_set():
            try:
                items = list_fn()
                for item in items.items:
                    self._safe(handler, item)
                for event in watch.Watch().stream(list_fn, resource_version=items.metadata.resource_version,
                                                  timeout_seconds=60):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._safe(handler, event["object"])
            except Exception:
                log.exception("watch failed; relisting")
                time.sleep(1)

    @staticmethod
    def _safe(handler: Any, obj: Any) -> None:
        try:
            handler(obj)
        except Exception:
            log.exception("handling %s/%s failed", obj.metadata.namespace, obj.metadata.name)

    def run(self) -> None:
        self.ensure_storage_class()
        for list_fn, handler in ((self.core.list_persistent_volume_claim_for_all_namespaces, self.on_pvc),
                                 (self.core.list_persistent_volume, self.on_pv)):
            threading.Thread(target=self.watch_forever, args=(list_fn, handler), daemon=True).start()
        self.stop_event.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--volumes-dir", type=Path, required=True)
    parser.add_argument("--node", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    provisioner = Provisioner(config.new_client_from_config(config_file=args.kubeconfig), args.volumes_dir, args.node)
    signal.signal(signal.SIGTERM, lambda *_: provisioner.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: provisioner.stop_event.set())
    provisioner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
