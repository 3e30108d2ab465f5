"""Reading an engine Job through its pods: whether the engine has already exited cleanly, the
engine's result line (termination message, else the log tail) and why a pod has not started.
Shared by the migration and backup controllers."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from typing import Any

from coai_operator.kube.client import Kube

Obj = dict[str, Any]

# Pod waiting reasons that mean the container cannot be created as specified.
START_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                            "CreateContainerError", "ErrImageNeverPull"})
POD_START_SECONDS = int(os.environ.get("COAI_POD_START_SECONDS", "90"))


def parse_result(text: str | None) -> Obj | None:
    """The engine's final JSON line, from a termination message or a log tail."""
    for line in reversed((text or "").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    return value
    return None


def all_exited_0(pod: Obj | None) -> bool:
    """Every container of the pod has exited with code 0 (False before any container status)."""
    containers = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    return bool(containers) and all(((c.get("state") or {}).get("terminated") or {}).get("exitCode") == 0
                                    for c in containers)


class PodExits:
    """The Jobs whose pod the operator's pod watch saw exit 0, before the Job says so: a hint that
    lets `exited_cleanly` read the pods at once instead of waiting for the Job's `ready: 0`. Only
    ever makes a step end sooner; the pods read then decide. Bounded: the oldest entries go first."""

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._jobs: dict[tuple[str, str], None] = {}

    def note(self, pod: Obj) -> bool:
        """Record the pod's Job when every container of the pod has exited 0; True when it has."""
        meta = pod.get("metadata") or {}
        job = (meta.get("labels") or {}).get("job-name")
        if not job or not all_exited_0(pod):
            return False
        self._jobs[(str(meta.get("namespace")), str(job))] = None
        while len(self._jobs) > self._limit:
            del self._jobs[next(iter(self._jobs))]
        return True

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._jobs


POD_EXITS = PodExits()


def job_pods(kube: Kube, namespace: str, job_name: str) -> list[Obj]:
    pods = kube.list("v1", "Pod", namespace, label_selector=f"job-name={job_name}")
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
    return pods


def exited_cleanly(kube: Kube, job: Obj, exits: PodExits = POD_EXITS) -> list[Obj] | None:
    """The Job's pods when its engine container has already exited 0 but the Job does not say so
    yet, else None.

    Measured on the real node: the container exits; the kubelet reports the pod Succeeded 1.1 s
    later, and the Job controller, batching pod events by a second, says Complete a second after
    that. In between, the Job's own update of `status.ready` to 0 (one second after the exit)
    wakes the migration: reading the pod then ends the step a second earlier, on every Job. The
    operator's pod watch sees the exit about a second before that (`exits`, filled by the
    `job-pod-exit` handler), so a Job still counted ready is read too once its pod is seen exited.
    A non-zero exit still waits for the Job's Failed condition (its retries and deadline decide).
    """
    status, meta = job.get("status") or {}, job.get("metadata") or {}
    seen_exited = (str(meta.get("namespace")), str(meta.get("name"))) in exits
    if status.get("conditions") or not status.get("active") or (status.get("ready") and not seen_exited):
        return None  # finished (the conditions say how), not started, or still running
    pods = job_pods(kube, str(meta.get("namespace")), str(meta.get("name")))
    return pods if pods and all_exited_0(pods[0]) else None


def job_result(kube: Kube, namespace: str, job_name: str, pods: list[Obj] | None = None) -> Obj | None:
    for pod in job_pods(kube, namespace, job_name) if pods is None else pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated") or {}
            result = parse_result(terminated.get("message"))
            if result is not None:
                return result
        result = parse_result(pod_log_tail(kube, namespace, pod["metadata"]["name"]))
        if result is not None:
            return result
    return None


def pod_log_tail(kube: Kube, namespace: str, pod: str, lines: int = 5) -> str:
    """The last lines of a pod's log ('' when unavailable): the fallback when the termination
    message was cut or the runtime does not support it."""
    api = kube.api
    try:
        method, url, headers, body, _ = api.param_serialize(
            method="GET", resource_path=Kube.path("v1", "Pod", namespace, pod, "log"),
            query_params=[("tailLines", str(lines))],
            # A real apiserver answers 406 to `Accept: text/plain` here; the log comes as text anyway.
            header_params={"Accept": "*/*"},
            auth_settings=["BearerToken"])
        kube.stats.reads += 1
        response = api.call_api(method, url, header_params=headers, body=body, _request_timeout=10)
        return response.read().decode(errors="replace") if response.status == 200 else ""
    except Exception:  # logs are a convenience; the termination message is the contract
        return ""


def started(pod: Obj) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") in ("Running", "Succeeded", "Failed"):
        return True
    return any((cs.get("state") or {}).get("running") or (cs.get("state") or {}).get("terminated")
               for cs in status.get("containerStatuses") or [])


def start_failure(pods: list[Obj]) -> str:
    """Why a Job's pod has not started, from its conditions and container statuses."""
    if not pods:
        return "the Job created no pod (quota, admission or the Job controller; see `kubectl describe job`)"
    pod = pods[0]
    status = pod.get("status") or {}
    name = pod["metadata"]["name"]
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in START_FAILURES:
            return f"pod {name}: {waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"pod {name} cannot be scheduled ({cond.get('reason')}): {cond.get('message') or ''}"
    waiting = [((cs.get("state") or {}).get("waiting") or {}).get("reason") for cs in status.get("containerStatuses")
               or []]
    detail = ", ".join(w for w in waiting if w) or status.get("phase") or "Pending"
    return f"pod {name} has not started ({detail}; a missing volume or Secret shows as FailedMount in its events)"


def seconds_since(timestamp: str) -> float:
    when = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (dt.datetime.now(dt.UTC) - when).total_seconds()


def pod_not_started(kube: Kube, namespace: str, job_name: str, elapsed: float, limit: int) -> str | None:
    """The cause, when the Job's pod has not started `limit` seconds after the Job was created."""
    if elapsed <= limit:
        return None
    pods = job_pods(kube, namespace, job_name)
    return None if any(started(p) for p in pods) else start_failure(pods)
