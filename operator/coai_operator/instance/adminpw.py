"""Root's password on the real app: a Job that sets it from spec.admin.passwordSecretRef.

The real app (3.x/4.x) creates user root with a public default password on an empty database.
Once the app's rollout is complete the operator runs `engine admin-password` as a Job (it reaches
the app through its Service; the password comes by secretKeyRef, never argv), and the instance
becomes Ready only after that Job succeeded. Without the Secret the instance reports the
condition DefaultAdminPassword. The guide's 1.x-2.x line has no such user: nothing happens there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coai_operator import constants
from coai_operator.bundles.realline import is_real
from coai_operator.instance.spec import Spec, admin_password_ref, api_prefix

Obj = dict[str, Any]

COMPONENT = "admin-password"
# The engine Jobs' restricted identity (migration/jobs.py uses the same values).
POD_SECURITY: Obj = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                     "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY: Obj = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                           "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                           "seccompProfile": {"type": "RuntimeDefault"}}
JOB_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class AdminState:
    """What status.compute needs: applies=False on the guide's line."""

    applies: bool
    configured: bool = False
    done: bool = False
    failed: str | None = None
    message: str = ""


NOT_APPLICABLE = AdminState(applies=False)


def job_name(body: Mapping[str, Any], spec: Spec) -> str:
    """One Job per instance and Secret key: a new Secret name or key means a new attempt."""
    ref = admin_password_ref(spec) or {}
    digest = hashlib.sha256(f"{body['metadata']['uid']}/{ref.get('name')}/{ref.get('key')}".encode()).hexdigest()
    return f"{body['metadata']['name'][:40]}-admin-pw-{digest[:5]}"


def build_job(body: Mapping[str, Any], spec: Spec, endpoint: str) -> Obj:
    ref = admin_password_ref(spec)
    assert ref is not None
    meta = body["metadata"]
    labels = constants.labels(meta["name"], COMPONENT)
    container: Obj = {
        "name": "engine",
        "image": constants.engine_image(),
        "imagePullPolicy": "IfNotPresent",
        "args": ["engine", "admin-password", "--base-url", endpoint, "--api-prefix", api_prefix(spec)],
        "env": [{"name": "COAI_ADMIN_PASSWORD", "valueFrom": {"secretKeyRef": {"name": ref["name"],
                                                                               "key": ref["key"]}}},
                {"name": "COAI_RESULT_FILE", "value": "/dev/termination-log"},
                {"name": "HOME", "value": "/tmp"}],  # noqa: S108  (an emptyDir)
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": dict(CONTAINER_SECURITY),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(body, spec), "namespace": meta["namespace"], "labels": labels,
                     "ownerReferences": [{"apiVersion": body.get("apiVersion", constants.API_VERSION),
                                          "kind": constants.INSTANCE_KIND, "name": meta["name"],
                                          "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "securityContext": dict(POD_SECURITY),
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                **({"imagePullSecrets": spec["imagePullSecrets"]} if spec.get("imagePullSecrets") else {}),
            }},
        },
    }


def _job_outcome(job: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(succeeded, failure message)."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return True, None
        if cond.get("type") == "Failed":
            return False, cond.get("message") or "the Job failed"
    return False, None


def ensure(kube: Any, body: Mapping[str, Any], spec: Spec, endpoint: str, rollout_complete: bool) -> AdminState:
    """Look at (and start when due) the admin-password Job. Never raises for a Job problem."""
    if not is_real(str(spec.get("version"))):
        return NOT_APPLICABLE
    if admin_password_ref(spec) is None:
        return AdminState(applies=True, configured=False)
    name = job_name(body, spec)
    job = kube.get("batch/v1", "Job", body["metadata"]["namespace"], name)
    if job is None:
        if not rollout_complete:
            return AdminState(applies=True, configured=True, message="waiting for the app to run")
        kube.create(build_job(body, spec, endpoint))
        return AdminState(applies=True, configured=True, message=f"Job {name} sets root's password")
    done, failure = _job_outcome(job)
    if done:
        return AdminState(applies=True, configured=True, done=True)
    if failure:
        return AdminState(applies=True, configured=True, failed=f"Job {name} could not set root's password: "
                                                                f"{failure}; see its logs, then delete it to retry")
    return AdminState(applies=True, configured=True, message=f"Job {name} sets root's password")
