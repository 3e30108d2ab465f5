"""A dict-in, dict-out client over the Kubernetes REST API that counts its requests, and the one
error type (`KubeError`) every caller handles. Transport failures (timeouts, refused connections)
become a KubeError with status 0, which callers treat as temporary like a 5xx."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from coai_operator import constants
from coai_operator.kube.echo import remember_own_write

log = logging.getLogger("coai_operator.kube")

Obj = dict[str, Any]

# kind -> (plural, namespaced). Only what the operator manages or reads.
RESOURCES: dict[str, tuple[str, bool]] = {
    "ConfigMap": ("configmaps", True),
    "Secret": ("secrets", True),
    "Service": ("services", True),
    "PersistentVolumeClaim": ("persistentvolumeclaims", True),
    "Pod": ("pods", True),
    "ServiceAccount": ("serviceaccounts", True),
    "Deployment": ("deployments", True),
    "StatefulSet": ("statefulsets", True),
    "ReplicaSet": ("replicasets", True),
    "Job": ("jobs", True),
    "NetworkPolicy": ("networkpolicies", True),
    "CoaiBackupLocation": ("coaibackuplocations", True),
    "CoaiBackup": ("coaibackups", True),
    "CoaiBackupSchedule": ("coaibackupschedules", True),
    "CoaiRestore": ("coairestores", True),
    constants.INSTANCE_KIND: (constants.INSTANCE_PLURAL, True),
    constants.MIGRATION_KIND: (constants.MIGRATION_PLURAL, True),
    "Namespace": ("namespaces", False),
    "StorageClass": ("storageclasses", False),
}

_WRITE_SEQUENCE = itertools.count(1)  # process-wide, so the log shows every write in order


class KubeError(Exception):
    """An API call failed; `message` is one line a person can read, `status` the HTTP code."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def api_error(exc: ApiException, what: str) -> KubeError:
    reason, message = exc.reason or "Error", ""
    try:
        body = json.loads(exc.body or "{}")
        reason = body.get("reason") or reason
        message = body.get("message") or ""
    except (ValueError, TypeError):
        message = (exc.body or "").strip().splitlines()[0] if exc.body else ""
    return KubeError(int(exc.status or 0), str(reason), f"{what}: {message or reason} (HTTP {exc.status})")


_default_client: client.ApiClient | None = None
_client_lock = threading.Lock()
# The kubernetes client's config loaders run a hook before every request that re-applies the whole
# configuration (token, host, CA, proxy from the environment): 1.5 ms of CPU per request, a quarter
# of the operator's request CPU at N=500 (docs/benchmarks.md). A token read from a file or an exec
# plugin is refreshed at most this often instead.
AUTH_REFRESH_SECONDS = 5.0


def throttle_auth_refresh(configuration: client.Configuration, seconds: float = AUTH_REFRESH_SECONDS,
                          clock: Callable[[], float] = time.monotonic) -> None:
    """Run the configuration's refresh_api_key_hook at most once per `seconds` (the first request
    runs it). The hook installs a fresh copy of itself each time; that copy is what runs next."""
    hook = configuration.refresh_api_key_hook
    if hook is None:
        return
    state = {"hook": hook, "last": None}

    def throttled(config_: client.Configuration) -> None:
        now = clock()
        if state["last"] is not None and now - state["last"] < seconds:
            return
        state["last"] = now
        state["hook"](config_)
        replaced = config_.refresh_api_key_hook
        if replaced is not throttled and replaced is not None:
            state["hook"] = replaced
        config_.refresh_api_key_hook = throttled

    configuration.refresh_api_key_hook = throttled


def _configuration() -> client.Configuration:
    """From the in-cluster service account, else $KUBECONFIG / ~/.kube/config."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    throttle_auth_refresh(configuration)
    return configuration


def default_api_client() -> client.ApiClient:
    """The ApiClient every request shares (one connection pool)."""
    global _default_client
    with _client_lock:
        if _default_client is None:
            _default_client = client.ApiClient(_configuration())
        return _default_client


def dedicated_api_client(connections: int) -> client.ApiClient:
    """An ApiClient with its own connection pool, for long-lived watches: each holds a connection
    for minutes, which must not starve the shared pool the reconciles use."""
    configuration = _configuration()
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, connections)
    return client.ApiClient(configuration)


@dataclass
class RequestStats:
    reads: int = 0
    writes: int = 0

    def __str__(self) -> str:
        return f"{self.reads} reads, {self.writes} writes"


@dataclass
class Kube:
    """A dict-in, dict-out client over the REST API that counts its requests.

    Make one per reconcile (cheap: the ApiClient and its connection pool are shared) so
    `stats` tells what that reconcile cost.
    """

    api: client.ApiClient = field(default_factory=default_api_client)
    field_manager: str = constants.MANAGED_BY
    timeout: float = 30
    stats: RequestStats = field(default_factory=RequestStats)

    @staticmethod
    def path(api_version: str, kind: str, namespace: str | None, name: str | None = None,
             subresource: str | None = None) -> str:
        plural, namespaced = RESOURCES[kind]
        root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        parts = [root]
        if namespaced:
            if not namespace:
                raise ValueError(f"{kind} is namespaced: a namespace is required")
            parts.append(f"namespaces/{namespace}")
        parts.append(plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)

    def send(self, method: str, path: str, body: Any = None, *, query: list[tuple[str, str]] | None = None,
             content_type: str = "application/json", timeout: float | tuple[float, float] | None = None) -> Any:
        """The response, unread (a watch streams it); counted; transport failures are KubeErrors."""
        is_write = method != "GET"
        if is_write:
            query = [*(query or []), ("fieldManager", self.field_manager)]
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method_, url, headers, body, _ = self.api.param_serialize(
            method=method, resource_path=path, query_params=query or None, header_params=headers, body=body,
            auth_settings=["BearerToken"])
        if is_write:
            self.stats.writes += 1
        else:
            self.stats.reads += 1
        try:
            return self.api.call_api(method_, url, header_params=headers, body=body,
                                     _request_timeout=self.timeout if timeout is None else timeout)
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # timeout, refused, reset: temporary
            raise KubeError(0, "Transport", f"{method} {path}: {exc}") from exc

    def request(self, method: str, path: str, body: Any = None, *, query: list[tuple[str, str]] | None = None,
                content_type: str = "application/json") -> Obj:
        response = self.send(method, path, body, query=query, content_type=content_type)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return json.loads(data) if data else {}

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", self.path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise api_error(exc, f"get {kind} {namespace}/{name}") from exc

    def list(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None) -> list[Obj]:
        query = [("labelSelector", label_selector)] if label_selector else None
        try:
            return list(self.request("GET", self.path(api_version, kind, namespace), query=query).get("items", []))
        except ApiException as exc:
            raise api_error(exc, f"list {kind} in {namespace}") from exc

    def _write(self, method: str, obj_ref: str, path: str, body: Any, content_type: str = "application/json") -> Obj:
        seq = next(_WRITE_SEQUENCE)
        log.debug("kube write #%d: %s %s", seq, method, obj_ref)
        try:
            written = self.request(method, path, body, content_type=content_type)
        except ApiException as exc:
            raise api_error(exc, f"{method} {obj_ref}") from exc
        remember_own_write(written)
        if method != "DELETE":
            for listener in WRITE_LISTENERS:
                listener(written)
        return written

    def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        path = self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        return self._write("POST", describe(obj), path, obj)

    def replace(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        path = self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return self._write("PUT", describe(obj), path, obj)

    def patch(self, api_version: str, kind: str, namespace: str | None, name: str, patch: Obj, *,
              subresource: str | None = None) -> Obj:
        """A JSON merge patch (RFC 7386)."""
        path = self.path(api_version, kind, namespace, name, subresource)
        ref = f"{kind} {namespace}/{name}" + (f" ({subresource})" if subresource else "")
        return self._write("PATCH", ref, path, patch, content_type="application/merge-patch+json")

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str,
               propagation: str = "Background") -> bool:
        """Delete; False when it was already gone."""
        path = self.path(api_version, kind, namespace, name)
        try:
            self._write("DELETE", f"{kind} {namespace}/{name}", path, {"propagationPolicy": propagation})
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj.get('kind')} {ns + '/' if ns else ''}{meta.get('name')}"


# Called with every object a write returned (instance/index.py lays them over its watch cache).
WRITE_LISTENERS: list[Callable[[Obj], None]] = []
