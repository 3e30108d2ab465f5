"""Secure defaults of a CoaiInstance: NetworkPolicies, the managed Redis password, security contexts."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coai_operator import constants
from coai_operator.instance import netpol, redis_auth, secure
from coai_operator.instance import render as r
from coai_operator.kube import Kube, KubeError

Obj = dict[str, Any]
OWNER = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance",
         "metadata": {"name": "chat", "namespace": "ns", "uid": "uid-1"}}
BASE: Obj = {"version": "3.11.2", "database": {"host": "db.example", "passwordSecretRef": {"name": "coai-db"}}}
MANAGED: Obj = {**BASE, "redis": {"managed": {"enabled": True}}}
APP_PODS = {"matchLabels": constants.selector_labels("chat", "app")}
REDIS_PODS = {"matchLabels": constants.selector_labels("chat", "redis")}
JOB_PODS = {"matchLabels": constants.selector_labels("chat", "migration")}


def policies(spec: Obj) -> dict[str, Obj]:
    return {p["metadata"]["name"]: p for p in r.render(spec, "chat", "ns", OWNER).network_policies}


def pod_spec(dep: Obj) -> Obj:
    return dep["spec"]["template"]["spec"]


def redis_deployment(spec: Obj) -> Obj:
    return next(o for o in r.render(spec, "chat", "ns", OWNER).redis if o["kind"] == "Deployment")


# --- NetworkPolicies ---------------------------------------------------------------------------

def test_policies_are_on_by_default_and_applied_before_the_pods() -> None:
    rendered = r.render(MANAGED, "chat", "ns", OWNER)
    kinds = [o["kind"] for o in rendered.all()]
    assert kinds[:3] == ["NetworkPolicy"] * 3
    assert sorted(p["metadata"]["name"] for p in rendered.network_policies) == [
        "chat", "chat-migration", "chat-redis"]
    for p in rendered.network_policies:
        assert p["apiVersion"] == "networking.k8s.io/v1"
        assert p["metadata"]["namespace"] == "ns"
        assert p["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert p["metadata"]["labels"][constants.LABEL_INSTANCE] == "chat"


def test_no_redis_policy_without_managed_redis() -> None:
    assert sorted(policies(BASE)) == ["chat", "chat-migration"]


def test_switched_off_renders_no_policy() -> None:
    assert policies({**MANAGED, "networkPolicy": {"enabled": False}}) == {}


def test_redis_accepts_only_its_instances_app_pods_and_sends_nothing() -> None:
    spec = policies(MANAGED)["chat-redis"]["spec"]
    assert spec["podSelector"] == REDIS_PODS
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"from": [{"podSelector": APP_PODS}], "ports": [{"protocol": "TCP", "port": 6379}]}]
    assert spec["egress"] == []
    # The Service and the pod select exactly what the policy protects.
    redis_pod_labels = redis_deployment(MANAGED)["spec"]["template"]["metadata"]["labels"]
    assert REDIS_PODS["matchLabels"].items() <= redis_pod_labels.items()


def test_app_port_is_open_to_the_namespace_by_default() -> None:
    spec = policies(BASE)["chat"]["spec"]
    assert spec["podSelector"] == APP_PODS
    assert spec["policyTypes"] == ["Ingress"]  # egress open: CoAI calls LLM upstreams anywhere
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8000}], "from": [{"podSelector": {}}]}]


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_app_port_is_open_to_any_source_behind_an_external_service(service_type: str) -> None:
    spec = policies({**BASE, "port": 8094, "service": {"type": service_type}})["chat"]["spec"]
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8094}]}]


def test_app_ingress_from_narrows_the_peers_and_keeps_the_migration_jobs() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    spec = policies({**BASE, "service": {"type": "LoadBalancer"}, "networkPolicy": {"appIngressFrom": peers}})
    assert spec["chat"]["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8000}],
                                                "from": [*peers, {"podSelector": JOB_PODS}]}]


def test_migration_jobs_reach_only_dns_the_database_and_the_app() -> None:
    spec = policies({**BASE, "port": 8094, "database": {"host": "db.example", "port": 3307}})["chat-migration"]["spec"]
    assert spec["podSelector"] == JOB_PODS
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == []
    assert spec["egress"] == [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"ports": [{"protocol": "TCP", "port": 3307}]},  # a host name: any address, that port only
        {"to": [{"podSelector": APP_PODS}], "ports": [{"protocol": "TCP", "port": 8094}]},
    ]


@pytest.mark.parametrize(("host", "cidr"), [("10.1.2.3", "10.1.2.3/32"), ("fd00::5", "fd00::5/128")])
def test_migration_database_egress_is_pinned_to_an_ip_host(host: str, cidr: str) -> None:
    egress = policies({**BASE, "database": {"host": host}})["chat-migration"]["spec"]["egress"]
    assert egress[1] == {"ports": [{"protocol": "TCP", "port": 3306}], "to": [{"ipBlock": {"cidr": cidr}}]}


def test_migration_job_pods_carry_the_labels_the_policy_selects() -> None:
    from coai_operator.migration import jobs, planner

    migration = {"metadata": {"name": "up", "namespace": "ns", "uid": "m-1"},
                 "spec": {"instanceRef": {"name": "chat"}, "targetVersion": "3.11.3"}}
    instance = {"metadata": {"name": "chat", "namespace": "ns"}, "spec": BASE}
    job = jobs.build_job(migration, instance, planner.VALIDATE)
    assert JOB_PODS["matchLabels"].items() <= job["spec"]["template"]["metadata"]["labels"].items()


def test_stale_policy_names() -> None:
    rendered = r.render(BASE, "chat", "ns", OWNER).network_policies
    assert netpol.stale_policy_names(rendered, "chat") == ["chat-redis"]
    assert netpol.stale_policy_names([], "chat") == ["chat", "chat-redis", "chat-migration"]


# --- the managed Redis password ------------------------------------------------------------------

def test_managed_redis_gets_the_generated_secret_by_default() -> None:
    dep = redis_deployment(MANAGED)
    pod = pod_spec(dep)
    server = pod["containers"][0]
    assert server["args"] == ["redis-server", "/run/redis/redis.conf", "--appendonly", "yes"]
    assert "env" not in server  # the password is not even in the server's environment
    assert {"name": "redis-config", "mountPath": "/run/redis", "readOnly": True} in server["volumeMounts"]
    init = pod["initContainers"][0]
    assert init["command"][:2] == ["sh", "-c"]
    assert init["env"] == [{"name": "REDIS_PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "chat-redis-auth", "key": "password"}}}]
    assert {"name": "redis-config", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in pod["volumes"]
    app_env = {e["name"]: e for e in r.render(MANAGED, "chat", "ns", OWNER).deployment[
        "spec"]["template"]["spec"]["containers"][0]["env"]}
    assert app_env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "chat-redis-auth", "key": "password"}


def test_a_given_redis_secret_is_used_instead() -> None:
    spec = {**BASE, "redis": {"passwordSecretRef": {"name": "mine", "key": "pw"}, "managed": {"enabled": True}}}
    assert not redis_auth.generates_secret(r.render(spec, "chat", "ns").spec)
    init = pod_spec(redis_deployment(spec))["initContainers"][0]
    assert init["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "pw"}


def test_no_password_anywhere_on_a_command_line_or_in_the_manifests() -> None:
    for obj in r.render(MANAGED, "chat", "ns", OWNER).all():
        text = str(obj)
        assert "requirepass $(" not in text and "--requirepass" not in text
        assert obj["kind"] != "Secret"  # the Secret is created once by secure.before_apply, never applied


def test_generated_secret_is_random_owned_and_opaque() -> None:
    a, b = redis_auth.new_password(), redis_auth.new_password()
    assert a != b and len(a) >= 40
    secret = redis_auth.secret("chat", "ns", [r.owner_reference(OWNER)], a)
    assert secret["metadata"]["name"] == "chat-redis-auth"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert base64.b64decode(secret["data"]["password"]).decode() == a


@pytest.mark.skipif(not shutil.which("sh") or not shutil.which("sed"), reason="needs sh and sed")
@pytest.mark.parametrize("password", ["plain", 'with "quotes" and \\ backslash', "sp ace $HOME `x` 'q'"])
def test_init_script_writes_a_redis_conf_line_that_redis_parses_back(tmp_path: Path, password: str) -> None:
    script = redis_auth.WRITE_CONFIG.replace(redis_auth.CONFIG_FILE, str(tmp_path / "redis.conf"))
    subprocess.run(["sh", "-c", script], env={"REDIS_PASSWORD": password, "PATH": "/usr/bin:/bin"}, check=True)
    conf = tmp_path / "redis.conf"
    assert conf.stat().st_mode & 0o077 == 0
    line = conf.read_text()
    assert line.startswith('requirepass "') and line.endswith('"\n')
    # redis.conf's double-quoted strings: \\ and \" are the only escapes the script produces.
    body = line[len('requirepass "'):-2]
    assert re.sub(r"\\(.)", r"\1", body) == password


# --- reconcile I/O: created once, stale policies deleted -------------------------------------------

class RecordingKube(Kube):
    """Kube over an in-memory object store (the unit layer has no API server)."""

    def __init__(self, objects: dict[tuple[str, str], Obj] | None = None) -> None:
        super().__init__(api=None)  # type: ignore[arg-type]  (never used: every call is overridden)
        self.objects = dict(objects or {})
        self.calls: list[tuple[str, str, str]] = []

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        self.calls.append(("get", kind, name))
        return self.objects.get((kind, name))

    def create(self, obj: Obj) -> Obj:
        self.calls.append(("create", obj["kind"], obj["metadata"]["name"]))
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        return obj

    def list(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None) -> list[Obj]:
        self.calls.append(("list", kind, label_selector or ""))
        # Like the API server: the items of a list response carry no kind.
        return [{k: v for k, v in o.items() if k != "kind"} for (k, _), o in self.objects.items() if k == kind]

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str, **_: Any) -> Obj:
        self.calls.append(("delete", kind, name))
        return self.objects.pop((kind, name))


def test_secret_is_created_once_and_never_rewritten() -> None:
    kube = RecordingKube()
    rendered = r.render(MANAGED, "chat", "ns", OWNER)
    assert secure.before_apply(kube, OWNER, rendered) == ["created Secret ns/chat-redis-auth"]
    first = kube.objects[("Secret", "chat-redis-auth")]["data"]["password"]
    assert secure.before_apply(kube, OWNER, rendered) == []
    assert kube.objects[("Secret", "chat-redis-auth")]["data"]["password"] == first
    assert [c for c in kube.calls if c[0] == "create"] == [("create", "Secret", "chat-redis-auth")]


class RacingKube(RecordingKube):
    """Another reconcile (the in-cluster operator) creates the Secret between our read and our create."""

    def create(self, obj: Obj) -> Obj:
        theirs = {**obj, "data": {"password": "dGhlaXJz"}}
        super().create(theirs)
        raise KubeError(409, "AlreadyExists", f"secrets \"{obj['metadata']['name']}\" already exists")


def test_secret_created_by_a_concurrent_reconcile_is_kept_not_an_apply_failure() -> None:
    kube = RacingKube()
    assert secure.before_apply(kube, OWNER, r.render(MANAGED, "chat", "ns", OWNER)) == []
    assert kube.objects[("Secret", "chat-redis-auth")]["data"]["password"] == "dGhlaXJz"


def test_other_create_errors_still_fail_the_reconcile() -> None:
    class Refusing(RecordingKube):
        def create(self, obj: Obj) -> Obj:
            raise KubeError(403, "Forbidden", "forbidden")

    with pytest.raises(KubeError):
        secure.before_apply(Refusing(), OWNER, r.render(MANAGED, "chat", "ns", OWNER))


def test_no_secret_without_managed_redis_or_with_a_given_one() -> None:
    kube = RecordingKube()
    given = {**BASE, "redis": {"passwordSecretRef": {"name": "mine"}, "managed": {"enabled": True}}}
    for spec in (BASE, given):
        assert secure.before_apply(kube, OWNER, r.render(spec, "chat", "ns", OWNER)) == []
    assert kube.calls == []


def test_switched_off_policies_are_deleted_when_owned() -> None:
    owned = {"metadata": {"name": "chat", "namespace": "ns", "ownerReferences": [{"uid": "uid-1"}]},
             "kind": "NetworkPolicy"}
    foreign = {"metadata": {"name": "chat-redis", "ownerReferences": [{"uid": "other"}]}, "kind": "NetworkPolicy"}
    kube = RecordingKube({("NetworkPolicy", "chat"): owned, ("NetworkPolicy", "chat-redis"): foreign})
    off = r.render({**MANAGED, "networkPolicy": {"enabled": False}}, "chat", "ns", OWNER)
    assert secure.after_apply(kube, OWNER, off) == ["deleted NetworkPolicy ns/chat"]
    assert ("NetworkPolicy", "chat-redis") in kube.objects  # not ours: left alone
    assert [c[0] for c in kube.calls] == ["list", "delete"]  # one read, whatever the number of policies


def test_no_read_when_every_policy_is_rendered() -> None:
    kube = RecordingKube()
    assert secure.after_apply(kube, OWNER, r.render(MANAGED, "chat", "ns", OWNER)) == []
    assert kube.calls == []


# --- security contexts ---------------------------------------------------------------------------

def test_app_runs_as_a_high_uid_with_a_read_only_root_and_a_tmp_volume() -> None:
    dep = r.render(BASE, "chat", "ns", OWNER).deployment
    pod = pod_spec(dep)
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsUser"] > 10000
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"] == pod["securityContext"][
        "runAsUser"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/storage", "/logs", "/config", "/tmp"}
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]
    assert c["resources"]["requests"]["cpu"]


def test_redis_runs_as_a_high_uid_with_a_read_only_root() -> None:
    pod = pod_spec(redis_deployment(MANAGED))
    assert pod["securityContext"]["runAsUser"] > 10000
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    for c in pod["containers"] + pod["initContainers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["resources"]["requests"]["cpu"]


def test_image_by_digest_when_given() -> None:
    digest = "sha256:" + "0f" * 32
    c = pod_spec(r.render({**BASE, "imageDigest": digest}, "chat", "ns").deployment)["containers"][0]
    assert c["image"] == f"programzmh/chatnio:3.11.2@{digest}"
    assert pod_spec(r.render(BASE, "chat", "ns").deployment)["containers"][0]["image"] == "programzmh/chatnio:3.11.2"
