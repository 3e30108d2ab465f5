"""The informer's Source over the REST API: paged lists and streamed watches of one kind."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from coai_operator.kube.client import RESOURCES, Kube, KubeError, api_error
from coai_operator.kube.informer import GoneError

Obj = dict[str, Any]
PAGE_SIZE = 500
CONNECT_SECONDS = 10.0


class RestSource:
    """List and watch `kind` through `kube` (its own ApiClient: each watch holds a connection)."""

    def __init__(self, kube: Kube, api_version: str, kind: str, *, watch_seconds: int = 300) -> None:
        self.kube, self.api_version, self.kind, self.watch_seconds = kube, api_version, kind, watch_seconds
        self._open: Any = None  # the response being streamed, so close() can end it
        self._lock = threading.Lock()

    def path(self, namespace: str | None) -> str:
        root = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        scope = f"/namespaces/{namespace}" if namespace else ""
        return f"{root}{scope}/{RESOURCES[self.kind][0]}"

    def _get(self, namespace: str | None, query: list[tuple[str, str]], timeout: Any = None) -> Any:
        response = self.kube.send("GET", self.path(namespace), query=query, timeout=timeout)
        if response.status == 410:
            response.read()
            raise GoneError(f"{self.kind} in {namespace or 'all namespaces'}")
        if not 200 <= response.status <= 299:
            response.read()
            raise api_error(ApiException(http_resp=response), f"list/watch {self.kind} in {namespace or 'all'}")
        return response

    def list(self, namespace: str | None) -> tuple[list[Obj], str]:
        items: list[Obj] = []
        token = ""
        while True:
            query = [("limit", str(PAGE_SIZE))] + ([("continue", token)] if token else [])
            page = json.loads(self._get(namespace, query).read() or b"{}")
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def watch(self, namespace: str | None, resource_version: str) -> Iterator[Obj]:
        query = [("watch", "true"), ("resourceVersion", resource_version), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", str(self.watch_seconds))]
        response = self._get(namespace, query, timeout=(CONNECT_SECONDS, self.watch_seconds + 30.0))
        raw = response.response  # the urllib3 response: iterating it yields the stream's lines
        with self._lock:
            self._open = raw
        try:
            for line in raw:
                if line.strip():
                    yield json.loads(line)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            # reset, timed out, a truncated line: the reflector resumes from the last version
            raise KubeError(0, "Transport", f"watch {self.kind}: {exc}") from exc
        finally:
            with self._lock:
                self._open = None
            raw.release_conn()

    def close(self) -> None:
        """End the watch being streamed (at shutdown)."""
        with self._lock:
            raw = self._open
        if raw is not None:
            raw.shutdown()
