"""instance.render / instance.spec: every CRD field traced from spec to the child manifests."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from coai_operator import constants
from coai_operator.instance import render as r
from coai_operator.instance.spec import Problem, api_prefix, secret_refs, validate, with_defaults

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "e2e" / "samples"
CRD = REPO / "crds" / f"{constants.INSTANCE_PLURAL}.{constants.GROUP}.yaml"

Obj = dict[str, Any]
OWNER = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "metadata": {"name": "chat", "uid": "uid-1"}}
OWNER_REF = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "name": "chat", "uid": "uid-1",
             "controller": True, "blockOwnerDeletion": True}
MINIMAL: Obj = {"version": "3.11.2", "database": {"host": "db.example", "passwordSecretRef": {"name": "coai-db"}}}

# Every field of the CRD's spec, with a value that differs from its default.
FULL: Obj = {
    "version": "4.25.0",
    "image": "registry.example.com:5000/mirror/chatnio",
    "imageDigest": "sha256:" + "ab" * 32,
    "imagePullPolicy": "Always",
    "imagePullSecrets": [{"name": "pull"}],
    "certs": {"secretRef": {"name": "chat-jwt-keys"}},
    "replicas": 3,
    "port": 8094,
    "healthPath": "/api/",
    "service": {"type": "LoadBalancer", "port": 8080, "annotations": {"lb.example/internal": "true"}},
    "database": {"host": "mysql.db", "port": 3307, "name": "coai", "user": "app",
                 "passwordSecretRef": {"name": "db-secret", "key": "pw"}},
    "redis": {"host": "redis.cache", "port": 6380, "passwordSecretRef": {"name": "redis-secret", "key": "rpw"},
              "managed": {"enabled": False, "image": "redis:7.2-alpine",
                          "storage": {"size": "3Gi", "storageClassName": "redis-class"}}},
    "secretRef": {"name": "app-secrets"},
    "config": {"SERVE_STATIC": "true", "DEBUG": "false"},
    "storage": {"size": "50Gi", "storageClassName": "fast", "retain": False},
    "logs": {"size": "7Gi", "storageClassName": "slow"},
    "configVolume": {"size": "2Gi", "storageClassName": "shared"},
    "resources": {"requests": {"cpu": "500m", "memory": "3Gi"}, "limits": {"memory": "4Gi"},
                  "claims": [{"name": "gpu", "request": "one"}]},
    "maintenance": {"enabled": False, "message": "back soon"},
    "upgrade": {"policy": "Manual", "migration": {"backup": {"enabled": True}}},  # instance/upgrade.py
    "podSecurityContext": {"runAsNonRoot": False, "fsGroup": 2000},
    "securityContext": {"readOnlyRootFilesystem": True},
    "serviceAccountName": "coai-sa",
    "nodeSelector": {"pool": "chat"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "chat", "effect": "NoExecute",
                     "tolerationSeconds": 60}],
    "affinity": {"podAntiAffinity": {}},
    "podAnnotations": {"scrape": "yes"},
    "networkPolicy": {"enabled": False},
    "admin": {"passwordSecretRef": {"name": "coai-admin", "key": "root"}},
    "offline": {"enabled": True},
}
MANAGED_REDIS: Obj = {**MINIMAL, "redis": {"passwordSecretRef": {"name": "redis-secret", "key": "rpw"},
                                           "managed": {"enabled": True, "image": "redis:7.2-alpine",
                                                       "storage": {"size": "3Gi", "storageClassName": "rc"}}},
                     "networkPolicy": {"appIngressFrom": [
                         {"namespaceSelector": {"matchLabels": {"team": "edge"}}, "podSelector": {}},
                         {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}}


def by_kind_name(objs: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def container(dep: Obj) -> Obj:
    return dep["spec"]["template"]["spec"]["containers"][0]


def env_by_name(c: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in c.get("env") or []}


# --- CRD coverage ------------------------------------------------------------------------------

def _leaf_paths(schema: Obj, prefix: str) -> Iterator[str]:
    props = schema.get("properties")
    if schema.get("type") == "array" and "properties" in schema.get("items", {}):
        yield from _leaf_paths(schema["items"], prefix + "[]")
    elif props and not schema.get("x-kubernetes-preserve-unknown-fields"):
        for key, sub in props.items():
            yield from _leaf_paths(sub, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def _value_paths(value: Any, prefix: str) -> Iterator[str]:
    yield prefix
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _value_paths(sub, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        for item in value:
            yield from _value_paths(item, prefix + "[]")


def test_the_test_specs_set_every_crd_spec_field() -> None:
    crd = yaml.safe_load(CRD.read_text())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    used = set(_value_paths(FULL, "")) | set(_value_paths(MANAGED_REDIS, ""))
    missing = sorted(p for p in _leaf_paths(spec_schema, "") if p not in used)
    assert not missing, f"CRD fields not exercised by the render tests: {missing}"


# --- minimal spec: the defaults ----------------------------------------------------------------

@pytest.fixture
def minimal() -> r.Rendered:
    return r.render(MINIMAL, "chat", "ns", OWNER)


def test_minimal_renders_the_expected_children(minimal: r.Rendered) -> None:
    assert [(o["kind"], o["metadata"]["name"]) for o in minimal.all()] == [
        ("NetworkPolicy", "chat"),
        ("NetworkPolicy", "chat-migration"),
        ("PersistentVolumeClaim", "chat-storage"),
        ("PersistentVolumeClaim", "chat-logs"),
        ("PersistentVolumeClaim", "chat-config"),
        ("ConfigMap", "chat-env"),
        ("Deployment", "chat"),
        ("Service", "chat"),
    ]
    for obj in minimal.all():
        assert obj["metadata"]["namespace"] == "ns"
        labels = obj["metadata"]["labels"]
        assert labels[constants.LABEL_MANAGED_BY] == "coai-operator"
        assert labels[constants.LABEL_INSTANCE] == "chat"
        assert labels[constants.LABEL_NAME] == "coai"
        expected_refs = [] if obj["kind"] == "PersistentVolumeClaim" else [OWNER_REF]
        assert obj["metadata"]["ownerReferences"] == expected_refs


def test_minimal_deployment_defaults(minimal: r.Rendered) -> None:
    dep = minimal.deployment
    c = container(dep)
    pod = dep["spec"]["template"]["spec"]
    assert c["image"] == "programzmh/chatnio:3.11.2"
    assert "imagePullPolicy" not in c
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert dep["metadata"]["labels"][constants.LABEL_VERSION] == "3.11.2"
    assert dep["spec"]["template"]["metadata"]["labels"][constants.LABEL_VERSION] == "3.11.2"
    assert constants.LABEL_VERSION not in dep["spec"]["selector"]["matchLabels"]
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    for probe in ("readinessProbe", "livenessProbe"):  # SERVE_STATIC is on by default: the API is under /api/
        assert c[probe] == {"httpGet": {"path": "/api/", "port": "http"},
                            "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 3}
    assert c["startupProbe"]["httpGet"] == {"path": "/api/", "port": "http"}
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 300
    assert c["startupProbe"]["periodSeconds"] <= 2  # a started app is Ready within 2 s, not 10
    assert pod["securityContext"] == r.DEFAULT_POD_SECURITY_CONTEXT  # tests/unit/test_instance_security.py
    assert c["securityContext"] == r.DEFAULT_CONTAINER_SECURITY_CONTEXT
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    for absent in ("imagePullSecrets", "nodeSelector", "tolerations", "affinity"):
        assert absent not in pod
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/storage": "storage", "/logs": "logs", "/config": "config", "/tmp": "tmp"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"] == {"name": "config", "persistentVolumeClaim": {"claimName": "chat-config"}}
    assert volumes["storage"]["persistentVolumeClaim"]["claimName"] == "chat-storage"
    assert volumes["logs"]["persistentVolumeClaim"]["claimName"] == "chat-logs"
    assert c["envFrom"] == [{"configMapRef": {"name": "chat-env"}}]
    assert env_by_name(c) == {"MYSQL_PASSWORD": {"name": "MYSQL_PASSWORD", "valueFrom": {
        "secretKeyRef": {"name": "coai-db", "key": "password"}}}}
    assert dep["spec"]["template"]["metadata"]["annotations"] == {r.CONFIG_HASH_ANNOTATION: minimal.config_hash}


def test_minimal_configmap_service_and_pvcs(minimal: r.Rendered) -> None:
    assert minimal.configmap["data"] == {
        "SERVER_PORT": "8000", "MYSQL_HOST": "db.example", "MYSQL_PORT": "3306", "MYSQL_DB": "chatnio",
        "MYSQL_DATABASE": "chatnio"}  # 3.10.5 reads MYSQL_DB, later versions MYSQL_DATABASE first
    svc = minimal.service
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8000, "protocol": "TCP"}]
    assert svc["spec"]["selector"] == minimal.deployment["spec"]["selector"]["matchLabels"]
    assert "annotations" not in svc["metadata"]
    sizes = {p["metadata"]["name"]: p["spec"] for p in minimal.pvcs}
    assert sizes == {
        "chat-storage": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
        "chat-logs": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}},
        "chat-config": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    assert {p["metadata"]["labels"][constants.LABEL_COMPONENT] for p in minimal.pvcs} == {"storage", "logs", "config"}
    assert minimal.redis == []
    assert r.endpoint(MINIMAL, "chat", "ns") == "http://chat.ns.svc:80"


def test_render_is_pure_and_deterministic() -> None:
    spec = copy.deepcopy(FULL)
    first = r.render(spec, "chat", "ns", OWNER)
    assert spec == FULL  # the input is not modified
    assert json.dumps(first.all(), sort_keys=True) == json.dumps(r.render(FULL, "chat", "ns", OWNER).all(),
                                                                   sort_keys=True)


# --- full spec: every field traced -------------------------------------------------------------

@pytest.fixture
def full() -> r.Rendered:
    return r.render(FULL, "chat", "ns", OWNER)


def test_full_deployment_traces_every_pod_field(full: r.Rendered) -> None:
    dep = full.deployment
    c = container(dep)
    pod = dep["spec"]["template"]["spec"]
    assert c["image"] == f"registry.example.com:5000/mirror/chatnio:4.25.0@{FULL['imageDigest']}"  # + digest
    assert c["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert dep["spec"]["replicas"] == 3
    assert c["ports"][0]["containerPort"] == 8094
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/api/", "port": "http"}
    assert c["resources"] == FULL["resources"]
    assert pod["securityContext"] == {"runAsNonRoot": False, "fsGroup": 2000}  # replaces the default
    assert c["securityContext"] == {"readOnlyRootFilesystem": True}
    assert pod["serviceAccountName"] == "coai-sa"
    assert "automountServiceAccountToken" not in pod
    assert pod["nodeSelector"] == {"pool": "chat"}
    assert pod["tolerations"] == FULL["tolerations"]
    assert pod["affinity"] == {"podAntiAffinity": {}}
    assert dep["spec"]["template"]["metadata"]["annotations"]["scrape"] == "yes"
    assert c["envFrom"] == [{"configMapRef": {"name": "chat-env"}}, {"secretRef": {"name": "app-secrets"}}]
    assert env_by_name(c) == {
        "MYSQL_PASSWORD": {"name": "MYSQL_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-secret", "key": "pw"}}},
        "REDIS_PASSWORD": {"name": "REDIS_PASSWORD",
                           "valueFrom": {"secretKeyRef": {"name": "redis-secret", "key": "rpw"}}},
    }


def test_full_configmap_service_and_pvcs(full: r.Rendered) -> None:
    assert full.configmap["data"] == {
        "SERVE_STATIC": "true", "DEBUG": "false", "SERVER_PORT": "8094",
        "MYSQL_HOST": "mysql.db", "MYSQL_PORT": "3307", "MYSQL_DB": "coai", "MYSQL_DATABASE": "coai",
        "MYSQL_USER": "app", "REDIS_HOST": "redis.cache", "REDIS_PORT": "6380", "TIKTOKEN_CACHE_DIR": "/tiktoken",
    }
    svc = full.service
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"][0]["port"] == 8080
    assert svc["spec"]["ports"][0]["targetPort"] == 8094
    assert svc["metadata"]["annotations"] == {"lb.example/internal": "true"}
    pvcs = {p["metadata"]["name"]: p for p in full.pvcs}
    assert pvcs["chat-storage"]["spec"] == {"accessModes": ["ReadWriteMany"], "storageClassName": "fast",
                                            "resources": {"requests": {"storage": "50Gi"}}}
    assert pvcs["chat-logs"]["spec"]["storageClassName"] == "slow"
    assert pvcs["chat-logs"]["spec"]["resources"]["requests"]["storage"] == "7Gi"
    assert pvcs["chat-config"]["spec"]["storageClassName"] == "shared"
    assert pvcs["chat-config"]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    for p in pvcs.values():  # retain: false -> owned, garbage-collected with the instance
        assert p["metadata"]["ownerReferences"] == [OWNER_REF]
    assert full.redis == []  # managed.enabled is false: its image and storage are unused


def test_managed_redis() -> None:
    rendered = r.render(MANAGED_REDIS, "chat", "ns", OWNER)
    objs = by_kind_name(rendered.redis)
    assert set(objs) == {("PersistentVolumeClaim", "chat-redis-data"), ("Deployment", "chat-redis"),
                         ("Service", "chat-redis")}
    pvc = objs[("PersistentVolumeClaim", "chat-redis-data")]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "3Gi"
    assert pvc["spec"]["storageClassName"] == "rc"
    assert pvc["metadata"]["ownerReferences"] == []  # retain defaults to true
    dep = objs[("Deployment", "chat-redis")]
    c = container(dep)
    assert c["image"] == "redis:7.2-alpine"
    assert c["args"] == ["redis-server", "/run/redis/redis.conf", "--appendonly", "yes"]  # password in the file
    init = dep["spec"]["template"]["spec"]["initContainers"][0]
    assert env_by_name(init)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-secret", "key": "rpw"}
    assert c["volumeMounts"] == [{"name": "data", "mountPath": "/data"},
                                 {"name": "redis-config", "mountPath": "/run/redis", "readOnly": True}]
    assert dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "chat-redis-data"
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert dep["metadata"]["ownerReferences"] == [OWNER_REF]
    svc = objs[("Service", "chat-redis")]
    assert svc["spec"]["ports"][0]["port"] == 6379
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert rendered.configmap["data"]["REDIS_HOST"] == "chat-redis"
    assert rendered.configmap["data"]["REDIS_PORT"] == "6379"
    # The app gets the same password as the server.
    assert env_by_name(container(rendered.deployment))["REDIS_PASSWORD"] == env_by_name(init)["REDIS_PASSWORD"]
    order = [(o["kind"], o["metadata"]["name"]) for o in rendered.all()]
    assert order.index(("Deployment", "chat-redis")) < order.index(("Deployment", "chat"))


def test_managed_redis_without_a_password_secret_uses_the_generated_one() -> None:
    spec = {**MINIMAL, "redis": {"managed": {"enabled": True}}}
    dep = by_kind_name(r.render(spec, "chat", "ns", OWNER).redis)[("Deployment", "chat-redis")]
    c = container(dep)
    assert c["args"] == ["redis-server", "/run/redis/redis.conf", "--appendonly", "yes"]
    init = dep["spec"]["template"]["spec"]["initContainers"][0]
    assert env_by_name(init)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "chat-redis-auth"
    assert c["image"] == "redis:7-alpine"


# --- behaviours --------------------------------------------------------------------------------

def test_config_hash_follows_the_configmap_data() -> None:
    a = r.render({**MINIMAL, "config": {"A": "1", "B": "2"}}, "chat", "ns", OWNER)
    b = r.render({**MINIMAL, "config": {"B": "2", "A": "1"}}, "chat", "ns", OWNER)
    c = r.render({**MINIMAL, "config": {"A": "1", "B": "3"}}, "chat", "ns", OWNER)
    d = r.render({**MINIMAL, "config": {"A": "1", "B": "2"}, "database": {"host": "other"}}, "chat", "ns", OWNER)
    assert a.config_hash == b.config_hash
    assert len({a.config_hash, c.config_hash, d.config_hash}) == 3
    annotation = c.deployment["spec"]["template"]["metadata"]["annotations"][r.CONFIG_HASH_ANNOTATION]
    assert annotation == c.config_hash


def test_no_password_ever_lands_in_the_configmap() -> None:
    cm = r.render(FULL, "chat", "ns", OWNER).configmap
    assert not {"MYSQL_PASSWORD", "REDIS_PASSWORD"} & set(cm["data"])
    text = json.dumps(cm)
    for secret_name in ("db-secret", "redis-secret", "app-secrets"):
        assert secret_name not in text


def test_config_values_are_strings() -> None:
    cm = r.render({**MINIMAL, "config": {"A": True, "B": 3}}, "chat", "ns", OWNER).configmap
    assert cm["data"]["A"] == "true"
    assert cm["data"]["B"] == "3"


def test_security_context_overrides_replace_the_defaults() -> None:
    dep = r.render({**MINIMAL, "podSecurityContext": {}, "securityContext": {"privileged": False}},
                   "chat", "ns", OWNER).deployment
    assert dep["spec"]["template"]["spec"]["securityContext"] == {}
    assert container(dep)["securityContext"] == {"privileged": False}


def test_maintenance_scales_to_zero_and_changes_nothing_else() -> None:
    normal = r.render({**MINIMAL, "replicas": 2}, "chat", "ns", OWNER)
    maint = r.render({**MINIMAL, "replicas": 2, "maintenance": {"enabled": True, "message": "m"}}, "chat", "ns", OWNER)
    assert maint.deployment["spec"]["replicas"] == 0
    assert normal.deployment["spec"]["replicas"] == 2
    normal.deployment["spec"]["replicas"] = 0
    assert normal.all() == maint.all()


def test_version_change_changes_image_and_version_labels_only() -> None:
    old = r.render(MINIMAL, "chat", "ns", OWNER)
    new = r.render({**MINIMAL, "version": "3.12.0"}, "chat", "ns", OWNER)
    assert container(new.deployment)["image"] == "programzmh/chatnio:3.12.0"
    assert new.configmap == old.configmap
    assert new.service == old.service
    assert new.pvcs == old.pvcs


def test_without_owner_no_owner_references_on_owned_kinds() -> None:
    rendered = r.render(MINIMAL, "chat", "ns")
    assert "ownerReferences" not in rendered.deployment["metadata"]
    assert rendered.pvcs[0]["metadata"]["ownerReferences"] == []


# --- validation --------------------------------------------------------------------------------

@pytest.mark.parametrize(("patch", "reason", "fragment"), [
    ({"version": "v 1"}, "InvalidVersion", "spec.version"),
    ({"version": None}, "InvalidVersion", "spec.version"),
    ({"database": {}}, "DatabaseHostMissing", "spec.database.host"),
    ({"redis": {"host": "r", "managed": {"enabled": True}}}, "ConflictingRedisConfig", "spec.redis.host"),
    ({"replicas": -1}, "InvalidReplicas", "spec.replicas"),
    ({"storage": {"size": "ten gigs"}}, "InvalidStorageSize", "spec.storage.size 'ten gigs'"),
    ({"logs": {"size": "0"}}, "InvalidStorageSize", "spec.logs.size"),
    ({"configVolume": {"size": "x"}}, "InvalidStorageSize", "spec.configVolume.size"),
    ({"redis": {"managed": {"enabled": True, "storage": {"size": "-1Gi"}}}}, "InvalidStorageSize",
     "spec.redis.managed.storage.size"),
    ({"config": {"BAD-NAME": "1"}}, "InvalidConfigKey", "BAD-NAME"),
    ({"config": {"MYSQL_PASSWORD": "x", "SERVER_PORT": "1"}}, "ReservedConfigKey", "MYSQL_PASSWORD, SERVER_PORT"),
])
def test_validation_names_the_problem(patch: Obj, reason: str, fragment: str) -> None:
    spec = with_defaults({**MINIMAL, **patch})
    problem = validate(spec)
    assert isinstance(problem, Problem)
    assert problem.reason == reason
    assert fragment in problem.message


def test_valid_specs_have_no_problem() -> None:
    for spec in (MINIMAL, FULL, MANAGED_REDIS):
        assert validate(with_defaults(spec)) is None
    # An unused managed Redis size is not checked.
    assert validate(with_defaults({**MINIMAL, "redis": {"managed": {"storage": {"size": "bad"}}}})) is None


@pytest.mark.parametrize("sample", ["coaiinstance-minimal.yaml", "coaiinstance-full.yaml"])
def test_samples_are_valid_and_their_secrets_are_included(sample: str) -> None:
    docs = [d for d in yaml.safe_load_all((SAMPLES / sample).read_text()) if d]
    instances = [d for d in docs if d["kind"] == constants.INSTANCE_KIND]
    assert len(instances) == 1
    spec = with_defaults(instances[0]["spec"])
    assert validate(spec) is None
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    for name, key, _ in secret_refs(spec):
        assert name in secrets
        if key is not None:
            assert key in secrets[name]["stringData"]
    # The upstream image runs as root: both samples carry the documented override.
    assert spec["podSecurityContext"]["runAsNonRoot"] is False
    r.render(spec, instances[0]["metadata"]["name"], "ns", {**OWNER, "metadata": {"name": "x", "uid": "u"}})


def test_certs_secret_is_mounted_read_only_at_certs() -> None:
    pod = r.render(FULL, "chat", "ns", OWNER).deployment["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "certs")
    assert mount == {"name": "certs", "mountPath": "/certs", "readOnly": True}
    assert {"name": "certs", "secret": {"secretName": "chat-jwt-keys", "defaultMode": 0o440}} in pod["volumes"]


# --- the real app's needs (coai-facts.md) ----------------------------------------------------

@pytest.mark.parametrize(("config", "health_path", "prefix"), [
    ({}, "/api/", "/api"),  # the image's default config serves the frontend: the API is under /api/
    ({"SERVE_STATIC": "true"}, "/api/", "/api"),
    ({"SERVE_STATIC": "false"}, "/", ""),
    ({"SERVE_STATIC": False}, "/", ""),
    ({"SERVE_STATIC": "0"}, "/", ""),
])
def test_probe_path_follows_serve_static(config: Obj, health_path: str, prefix: str) -> None:
    spec = with_defaults({**MINIMAL, "config": config})
    assert spec["healthPath"] == health_path
    assert api_prefix(spec) == prefix
    c = container(r.render({**MINIMAL, "config": config}, "chat", "ns").deployment)
    assert {c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {health_path}


@pytest.mark.parametrize("tag", ["latest", "stable"])
def test_floating_tags_are_refused(tag: str) -> None:
    problem = validate(with_defaults({**MINIMAL, "version": tag}))
    assert problem is not None and problem.reason == "FloatingTag" and "pin a version" in problem.message


def test_the_guide_line_keeps_its_documented_health_path() -> None:
    assert with_defaults({**MINIMAL, "version": "2.0.0"})["healthPath"] == "/health"


def test_an_explicit_health_path_wins() -> None:
    assert with_defaults({**MINIMAL, "config": {"SERVE_STATIC": "false"}, "healthPath": "/healthz"})[
        "healthPath"] == "/healthz"


@pytest.mark.parametrize("redis", [{"host": "redis.shared"}, {"managed": {"enabled": True}}])
def test_debug_is_refused_when_redis_would_be_wiped(redis: Obj) -> None:
    problem = validate(with_defaults({**MINIMAL, "redis": redis, "config": {"DEBUG": "true"}}))
    assert problem is not None and problem.reason == "DebugWipesRedis"
    assert "FLUSHALL" in problem.message


def test_debug_without_redis_and_debug_false_are_fine() -> None:
    assert validate(with_defaults({**MINIMAL, "config": {"DEBUG": "true"}})) is None
    assert validate(with_defaults({**MINIMAL, "redis": {"host": "r"}, "config": {"DEBUG": "false"}})) is None


def test_offline_mode_serves_the_tiktoken_files_from_the_operator_image() -> None:
    dep = r.render({**MINIMAL, "offline": {"enabled": True}}, "chat", "ns").deployment
    pod = dep["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == constants.engine_image()
    assert init["command"] == ["cp", "-R", f"{constants.TIKTOKEN_IMAGE_DIR}/.", "/tiktoken"]
    assert {"name": "tiktoken", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert {"name": "tiktoken", "mountPath": "/tiktoken", "readOnly": True} in container(dep)["volumeMounts"]
    assert r.render({**MINIMAL, "offline": {"enabled": True}}, "chat", "ns").configmap["data"][
        "TIKTOKEN_CACHE_DIR"] == "/tiktoken"
    plain = r.render(MINIMAL, "chat", "ns")
    assert "initContainers" not in plain.deployment["spec"]["template"]["spec"]
    assert "TIKTOKEN_CACHE_DIR" not in plain.configmap["data"]


def test_the_admin_password_secret_is_checked_but_never_given_to_the_app() -> None:
    spec = with_defaults({**MINIMAL, "admin": {"passwordSecretRef": {"name": "coai-admin"}}})
    assert ("coai-admin", "password", "spec.admin.passwordSecretRef") in secret_refs(spec)
    c = container(r.render(spec, "chat", "ns").deployment)
    assert "coai-admin" not in json.dumps(c)
