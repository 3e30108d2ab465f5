"""Pure builders: CoaiInstance spec (a dict) + name/namespace -> child manifests (dicts). No I/O.

Every CRD field ends up in exactly one place here; tests/unit/test_instance_render.py traces them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coai_operator import constants
from coai_operator.instance import netpol, redis_auth
from coai_operator.instance.spec import (
    DEFAULT_SERVICE_PORT,
    TIKTOKEN_DIR,
    Names,
    Spec,
    desired_replicas,
    image_ref,
    offline,
    redis_managed,
    with_defaults,
)

Obj = dict[str, Any]

CONFIG_HASH_ANNOTATION = f"{constants.GROUP}/config-hash"
APP_COMPONENT = "app"
REDIS_COMPONENT = "redis"
PVC_COMPONENTS = {"storage": "storage", "logs": "logs", "config": "config", "redis": "redis-data"}
APP_CONTAINER = "coai"
REDIS_PORT = 6379
# Non-root UIDs above 10000 (no clash with host users); neither image needs its own user, and
# fsGroup makes the PVCs writable. CoAI writes only /config, /logs, /storage and /tmp.
APP_UID = 10001
REDIS_UID = REDIS_GID = 10002

# Restricted Pod Security Standard. The upstream CoAI image's user is root: the explicit
# runAsUser makes it run as APP_UID instead.
DEFAULT_POD_SECURITY_CONTEXT: Obj = {
    "runAsNonRoot": True,
    "runAsUser": APP_UID,
    "runAsGroup": APP_UID,
    "fsGroup": APP_UID,
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}
IDENTITY_KEYS = ("runAsUser", "runAsGroup", "fsGroup", "fsGroupChangePolicy", "supplementalGroups")


def data_identity(spec: Spec | None) -> Obj:
    """The uid/gid the app writes its volumes as. Jobs that read or write those volumes (migrations,
    backups, restores) take it too: with another identity they could not write what the app wrote."""
    context = (spec or {}).get("podSecurityContext", DEFAULT_POD_SECURITY_CONTEXT) or {}
    return {key: copy.deepcopy(context[key]) for key in IDENTITY_KEYS if key in context}


DEFAULT_CONTAINER_SECURITY_CONTEXT: Obj = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
TMP_VOLUME: Obj = {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}
# From the seed's healthcheck (interval 30s, timeout 10s, retries 3).
PROBE_TIMING = {"periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 3}
# CoAI opens its port only once MySQL answers (it retries every 5 s): allow 10 minutes. Probed
# every second, because a pod counts as started (and gets its first readiness probe) only at the
# first startup probe that passes: each rollout and maintenance window waited up to a period
# longer (10 s, then 2 s: a third of a 100k-user migration's time above the engine's own).
STARTUP_TIMING = {"periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 600}
REDIS_RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
REDIS_INIT_RESOURCES = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}}


def owner_reference(owner: Mapping[str, Any]) -> Obj:
    """The ownerReference to a CoaiInstance body (what kopf.adopt would set)."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", constants.API_VERSION),
        "kind": owner.get("kind", constants.INSTANCE_KIND),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(name: str, namespace: str, labels: dict[str, str], owner_refs: list[Obj] | None,
              annotations: Mapping[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner_refs is not None:
        meta["ownerReferences"] = copy.deepcopy(owner_refs)
    return meta


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def env_data(spec: Spec, name: str) -> dict[str, str]:
    """Non-secret environment: spec.config plus what the operator derives. Never a password."""
    names = Names(name)
    data = {str(k): _env_value(v) for k, v in spec["config"].items()}
    db = spec["database"]
    data["SERVER_PORT"] = str(spec["port"])
    data["MYSQL_HOST"] = str(db.get("host", ""))
    data["MYSQL_PORT"] = str(db["port"])
    # 3.10.5 reads only MYSQL_DB; 3.11.1 and later read MYSQL_DATABASE first.
    data["MYSQL_DB"] = data["MYSQL_DATABASE"] = str(db["name"])
    if db.get("user"):
        data["MYSQL_USER"] = str(db["user"])
    redis = spec["redis"]
    if redis_managed(spec):
        data["REDIS_HOST"] = names.redis
        data["REDIS_PORT"] = str(REDIS_PORT)
    elif redis.get("host"):
        data["REDIS_HOST"] = str(redis["host"])
        data["REDIS_PORT"] = str(redis["port"])
    if offline(spec):
        data["TIKTOKEN_CACHE_DIR"] = TIKTOKEN_DIR
    return data


def config_hash(data: Mapping[str, str]) -> str:
    """Pod-template annotation value: a change of the env ConfigMap rolls the pods."""
    return hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()[:16]


def configmap(spec: Spec, name: str, namespace: str, owner_refs: list[Obj] | None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(Names(name).configmap, namespace, constants.labels(name, APP_COMPONENT), owner_refs),
        "data": env_data(spec, name),
    }


# The 2.0 RS256 JWT key pair (spec.certs), where the seed's compose file mounts its certs volume.
CERTS_MOUNT = "/certs"


def _secret_env(env_name: str, ref: Mapping[str, Any] | None) -> list[Obj]:
    if not isinstance(ref, Mapping) or not ref.get("name"):
        return []
    return [{"name": env_name, "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref["key"]}}}]


def _scheduling(spec: Spec, *, affinity: bool) -> Obj:
    """Pod-spec fields shared by the CoAI pod and the managed Redis pod."""
    out: Obj = {}
    if spec.get("imagePullSecrets"):
        out["imagePullSecrets"] = [{"name": s["name"]} for s in spec["imagePullSecrets"]]
    if spec.get("nodeSelector"):
        out["nodeSelector"] = dict(spec["nodeSelector"])
    if spec.get("tolerations"):
        out["tolerations"] = copy.deepcopy(spec["tolerations"])
    if affinity and spec.get("affinity"):
        out["affinity"] = copy.deepcopy(spec["affinity"])
    return out


def _probe(spec: Spec, timing: Mapping[str, int]) -> Obj:
    return {"httpGet": {"path": spec["healthPath"], "port": "http"}, **timing}


def offline_init_container(spec: Spec) -> Obj:
    """Copies the tiktoken BPE files from the operator image into an emptyDir: without them every
    chat request of the app waits for ever on a download (air-gapped clusters)."""
    return {
        "name": "tiktoken",
        "image": constants.engine_image(),
        "imagePullPolicy": "IfNotPresent",
        "command": ["cp", "-R", f"{constants.TIKTOKEN_IMAGE_DIR}/.", TIKTOKEN_DIR],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": copy.deepcopy(spec.get("securityContext", DEFAULT_CONTAINER_SECURITY_CONTEXT)),
        "volumeMounts": [{"name": "tiktoken", "mountPath": TIKTOKEN_DIR}],
    }


def deployment(spec: Spec, name: str, namespace: str, owner_refs: list[Obj] | None, cfg_hash: str) -> Obj:
    names = Names(name)
    version = spec["version"]
    container: Obj = {
        "name": APP_CONTAINER,
        "image": image_ref(spec),
        "ports": [{"name": "http", "containerPort": spec["port"], "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": names.configmap}}],
        "env": _secret_env("MYSQL_PASSWORD", spec["database"].get("passwordSecretRef"))
        + _secret_env("REDIS_PASSWORD", redis_auth.password_ref(spec, name)),
        "resources": copy.deepcopy(spec["resources"]),
        "securityContext": copy.deepcopy(spec.get("securityContext", DEFAULT_CONTAINER_SECURITY_CONTEXT)),
        "volumeMounts": [
            {"name": "storage", "mountPath": "/storage"},
            {"name": "logs", "mountPath": "/logs"},
            # Writable PVC, not a ConfigMap: CoAI's admin panel rewrites /config/config.yaml.
            {"name": "config", "mountPath": "/config"},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108  (an emptyDir: the root filesystem is read-only)
        ],
        "startupProbe": _probe(spec, STARTUP_TIMING),
        "readinessProbe": _probe(spec, PROBE_TIMING),
        "livenessProbe": _probe(spec, PROBE_TIMING),
    }
    certs = ((spec.get("certs") or {}).get("secretRef") or {}).get("name") if isinstance(spec.get("certs"), Mapping) \
        else None
    if certs:
        container["volumeMounts"].append({"name": "certs", "mountPath": CERTS_MOUNT, "readOnly": True})
    if isinstance(spec.get("secretRef"), Mapping) and spec["secretRef"].get("name"):
        # Listed after the ConfigMap: a key in both takes the Secret's value.
        container["envFrom"].append({"secretRef": {"name": spec["secretRef"]["name"]}})
    if spec.get("imagePullPolicy"):
        container["imagePullPolicy"] = spec["imagePullPolicy"]

    pod_spec: Obj = {
        "securityContext": copy.deepcopy(spec.get("podSecurityContext", DEFAULT_POD_SECURITY_CONTEXT)),
        # CoAI reads any env var through its config keys; service links (FOO_PORT=tcp://...)
        # from other Services in the namespace would override settings such as SERVER_PORT.
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": [
            {"name": "storage", "persistentVolumeClaim": {"claimName": names.storage_pvc}},
            {"name": "logs", "persistentVolumeClaim": {"claimName": names.logs_pvc}},
            {"name": "config", "persistentVolumeClaim": {"claimName": names.config_pvc}},
            copy.deepcopy(TMP_VOLUME),
        ],
        **_scheduling(spec, affinity=True),
    }
    if certs:
        pod_spec["volumes"].append({"name": "certs", "secret": {"secretName": certs, "defaultMode": 0o440}})
    if offline(spec):
        pod_spec["initContainers"] = [offline_init_container(spec)]
        pod_spec["volumes"].append({"name": "tiktoken", "emptyDir": {"sizeLimit": "64Mi"}})
        container["volumeMounts"].append({"name": "tiktoken", "mountPath": TIKTOKEN_DIR, "readOnly": True})
    if spec.get("serviceAccountName"):
        pod_spec["serviceAccountName"] = spec["serviceAccountName"]
    else:
        pod_spec["automountServiceAccountToken"] = False  # CoAI never calls the Kubernetes API

    template_annotations = {**(spec.get("podAnnotations") or {}), CONFIG_HASH_ANNOTATION: cfg_hash}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(names.deployment, namespace, constants.labels(name, APP_COMPONENT, version),
                              owner_refs),
        "spec": {
            "replicas": desired_replicas(spec),
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": constants.selector_labels(name, APP_COMPONENT)},
            # Never two CoAI versions at once: CoAI runs ALTERs against the shared database at
            # startup, and /config, /storage are ReadWriteOnce volumes in the default setup.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {
                    "labels": constants.labels(name, APP_COMPONENT, version),
                    "annotations": template_annotations,
                },
                "spec": pod_spec,
            },
        },
    }


def service(spec: Spec, name: str, namespace: str, owner_refs: list[Obj] | None) -> Obj:
    svc = spec["service"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(Names(name).service, namespace, constants.labels(name, APP_COMPONENT), owner_refs,
                              annotations=svc.get("annotations")),
        "spec": {
            "type": svc["type"],
            "selector": constants.selector_labels(name, APP_COMPONENT),
            "ports": [{"name": "http", "port": svc["port"], "targetPort": spec["port"], "protocol": "TCP"}],
        },
    }


def pvc(pvc_name: str, namespace: str, instance: str, component: str, size: str, storage_class: str | None,
        owner_refs: list[Obj], access_mode: str = "ReadWriteOnce") -> Obj:
    claim_spec: Obj = {"accessModes": [access_mode], "resources": {"requests": {"storage": size}}}
    if storage_class:
        claim_spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(pvc_name, namespace, constants.labels(instance, component), owner_refs),
        "spec": claim_spec,
    }


def pvc_owner_refs(spec: Spec, owner_refs: list[Obj] | None) -> list[Obj]:
    """PVCs are owned (garbage-collected with the instance) only when spec.storage.retain is false.

    An empty list makes `kube.apply` remove a CoaiInstance owner reference left from an earlier
    retain=false, so switching retain back on protects the data again.
    """
    return [] if spec["storage"].get("retain", True) else list(owner_refs or [])


def app_pvcs(spec: Spec, name: str, namespace: str, owner_refs: list[Obj] | None) -> list[Obj]:
    names = Names(name)
    refs = pvc_owner_refs(spec, owner_refs)
    # Several replicas share /storage, /config and /logs: they need volumes every node can mount.
    # accessModes cannot change after creation; kube.apply leaves them alone on existing PVCs.
    mode = "ReadWriteMany" if int(spec["replicas"]) > 1 else "ReadWriteOnce"
    return [
        pvc(names.storage_pvc, namespace, name, PVC_COMPONENTS["storage"], spec["storage"]["size"],
            spec["storage"].get("storageClassName"), refs, mode),
        pvc(names.logs_pvc, namespace, name, PVC_COMPONENTS["logs"], spec["logs"]["size"],
            spec["logs"].get("storageClassName"), refs, mode),
        pvc(names.config_pvc, namespace, name, PVC_COMPONENTS["config"], spec["configVolume"]["size"],
            spec["configVolume"].get("storageClassName"), refs, mode),
    ]


def redis_objects(spec: Spec, name: str, namespace: str, owner_refs: list[Obj] | None) -> list[Obj]:
    """PVC, Deployment and Service of the managed Redis (empty when not enabled).

    A Deployment with its own PVC rather than a StatefulSet: one replica, a deterministic PVC name
    and the same retain rule as the app's PVCs.
    """
    if not redis_managed(spec):
        return []
    names = Names(name)
    managed = spec["redis"]["managed"]
    redis_labels = constants.labels(name, REDIS_COMPONENT)
    # The password comes from the config file, never the command line.
    args = ["redis-server", redis_auth.CONFIG_FILE, "--appendonly", "yes"]
    tcp = {"tcpSocket": {"port": "redis"}}
    container: Obj = {
        "name": "redis",
        "image": managed["image"],
        "args": args,
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "resources": copy.deepcopy(REDIS_RESOURCES),
        "securityContext": copy.deepcopy(DEFAULT_CONTAINER_SECURITY_CONTEXT),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, redis_auth.config_mount()],
        "readinessProbe": {**tcp, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**tcp, "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 3},
    }
    pod_spec: Obj = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": REDIS_UID,
            "runAsGroup": REDIS_GID,
            "fsGroup": REDIS_GID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "initContainers": [redis_auth.init_container(spec, name, DEFAULT_CONTAINER_SECURITY_CONTEXT,
                                                     REDIS_INIT_RESOURCES)],
        "containers": [container],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": names.redis_pvc}},
                    redis_auth.config_volume()],
        **_scheduling(spec, affinity=False),
    }
    storage = managed["storage"]
    return [
        pvc(names.redis_pvc, namespace, name, PVC_COMPONENTS["redis"], storage["size"],
            storage.get("storageClassName"), pvc_owner_refs(spec, owner_refs)),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(names.redis, namespace, redis_labels, owner_refs),
            "spec": {
                "replicas": 1,
                "revisionHistoryLimit": 3,
                "selector": {"matchLabels": constants.selector_labels(name, REDIS_COMPONENT)},
                "strategy": {"type": "Recreate"},  # one writer of the append-only file at a time
                "template": {"metadata": {"labels": redis_labels}, "spec": pod_spec},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(names.redis, namespace, redis_labels, owner_refs),
            "spec": {
                "type": "ClusterIP",
                "selector": constants.selector_labels(name, REDIS_COMPONENT),
                "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}],
            },
        },
    ]


@dataclass(frozen=True)
class Rendered:
    """Everything a CoaiInstance consists of, in apply order via `all()`."""

    pvcs: list[Obj]
    configmap: Obj
    redis: list[Obj]
    deployment: Obj
    service: Obj
    config_hash: str
    spec: Spec = field(repr=False)
    network_policies: list[Obj] = field(default_factory=list)

    def all(self) -> list[Obj]:
        # Policies before any pod they protect; volumes and config before the pods that mount
        # them; the Service last.
        return [*self.network_policies, *self.pvcs, self.configmap, *self.redis, self.deployment, self.service]


def render(spec: Spec | None, name: str, namespace: str, owner: Mapping[str, Any] | None = None) -> Rendered:
    """All child manifests of one CoaiInstance. `owner` is the CoaiInstance body (for ownerReferences)."""
    s = with_defaults(spec)
    refs = [owner_reference(owner)] if owner is not None else None
    cm = configmap(s, name, namespace, refs)
    cfg_hash = config_hash(cm["data"])
    return Rendered(
        pvcs=app_pvcs(s, name, namespace, refs),
        configmap=cm,
        redis=redis_objects(s, name, namespace, refs),
        deployment=deployment(s, name, namespace, refs, cfg_hash),
        service=service(s, name, namespace, refs),
        config_hash=cfg_hash,
        spec=s,
        network_policies=netpol.network_policies(s, name, namespace, refs),
    )


def endpoint(spec: Spec, name: str, namespace: str) -> str:
    """In-cluster URL of the CoAI Service (the CRD documents http://NAME.NAMESPACE.svc:PORT)."""
    service = (spec or {}).get("service")
    port = (service.get("port") if isinstance(service, dict) else None) or DEFAULT_SERVICE_PORT
    return f"http://{Names(name).service}.{namespace}.svc:{port}"
