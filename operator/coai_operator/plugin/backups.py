"""`kubectl coai backup` and `kubectl coai backups`: create a CoaiBackup (and wait for it), list them.

A backup is what the user would `kubectl apply`: a CoaiBackup of the instance, at `--location`
or the namespace's default CoaiBackupLocation (the backup controller resolves that). Waiting only
reads the CoaiBackup; the controller does the work, and a finished backup never changes again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coai_operator import constants
from coai_operator.backup.controller import BACKUP_KIND, LOCATION_KIND, TERMINAL
from coai_operator.kube import Kube, KubeError

Obj = dict[str, Any]
POLL_SECONDS = 2.0
DEFAULT_WAIT_SECONDS = 3600.0


class PluginError(Exception):
    """A message for the user; the command exits 1."""


def list_backups(kube: Kube, namespace: str, instance: str) -> list[Obj] | None:
    """The instance's CoaiBackups, newest first; None when the cluster has no CoaiBackup resource."""
    try:
        items = kube.list(constants.API_VERSION, BACKUP_KIND, namespace)
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise
    mine = [b for b in items if ((b.get("spec") or {}).get("instanceRef") or {}).get("name") == instance]
    return sorted(mine, key=lambda b: b["metadata"].get("creationTimestamp") or "", reverse=True)


def backup_name(instance: str, now: float) -> str:
    return f"{instance[:44].rstrip('-')}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}"


def create_backup(kube: Kube, namespace: str, instance: str, location: str | None, name: str | None,
                  now: float) -> Obj:
    if kube.get(constants.API_VERSION, constants.INSTANCE_KIND, namespace, instance) is None:
        raise PluginError(f"CoaiInstance {instance} not found in namespace {namespace}")
    if location and kube.get(constants.API_VERSION, LOCATION_KIND, namespace, location) is None:
        raise PluginError(f"CoaiBackupLocation {location} not found in namespace {namespace}")
    labels = {k: v for k, v in constants.labels(instance, "backup").items() if k != constants.LABEL_MANAGED_BY}
    spec: Obj = {"instanceRef": {"name": instance}}
    if location:
        spec["locationRef"] = {"name": location}
    body = {"apiVersion": constants.API_VERSION, "kind": BACKUP_KIND,
            "metadata": {"name": name or backup_name(instance, now), "namespace": namespace, "labels": labels},
            "spec": spec}
    try:
        return kube.create(body)
    except KubeError as exc:
        if exc.status == 404:
            raise PluginError("this cluster has no CoaiBackup resource: install the operator's CRDs") from exc
        if exc.status == 409:
            raise PluginError(f"CoaiBackup {body['metadata']['name']} already exists; pass another --name"
                                    ) from exc
        raise


@dataclass
class Waiter:
    """Polls a CoaiBackup until its phase is final, within a deadline. `sleep` and `clock` are
    injectable so tests advance time instead of waiting."""

    kube: Kube
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    poll: float = POLL_SECONDS

    def wait(self, namespace: str, name: str, timeout: float,
             on_phase: Callable[[str, Obj], None] = lambda phase, backup: None) -> Obj:
        deadline = self.clock() + timeout
        seen = None
        while True:
            backup = self.kube.get(constants.API_VERSION, BACKUP_KIND, namespace, name)
            if backup is None:
                raise PluginError(f"CoaiBackup {name} disappeared while waiting for it")
            phase = (backup.get("status") or {}).get("phase") or "Pending"
            if phase != seen:
                on_phase(phase, backup)
                seen = phase
            if phase in TERMINAL:
                return backup
            if self.clock() >= deadline:
                raise PluginError(f"CoaiBackup {name} is still {phase} after {timeout:.0f}s; it goes on"
                                        f" without this command: kubectl coai backups -n {namespace} to follow it")
            self.sleep(self.poll)
