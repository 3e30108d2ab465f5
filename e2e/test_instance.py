"""CoaiInstance against the real cluster: children, Ready, upgrades, drift, no-op, failures, GC.

The samples are applied as a user would, except what makes their app pod really run here: the
guide-line stand-in image (the samples name the upstream image) at a guide version, its /health
route, and a database of the test MariaDB (the samples name a server of the user's cluster)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from coai_operator.engine.dbconfig import DbConfig
from e2e.conftest import Cluster, OperatorProcess
from e2e.helpers import wait_for
from e2e.localcluster.appimages import STANDIN_IMAGE

pytestmark = pytest.mark.e2e

SAMPLES = Path(__file__).resolve().parent / "samples"
MINIMAL = SAMPLES / "coaiinstance-minimal.yaml"
FULL = SAMPLES / "coaiinstance-full.yaml"
Obj = dict[str, Any]
VERSION, NEXT_VERSION = "1.9.0", "2.0.0"
IMAGE = f"{STANDIN_IMAGE}:{VERSION}"


class Instance:
    """kubectl helpers around one CoaiInstance in one namespace."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.cluster, self.namespace, self.name = cluster, namespace, name
        self.db: DbConfig | None = None

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.cluster.kubectl(*args, "-n", self.namespace, input=input, check=check)

    def get(self, kind: str, name: str | None = None) -> Obj | None:
        done = self.kubectl("get", kind, name or self.name, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def must(self, kind: str, name: str | None = None) -> Obj:
        obj = self.get(kind, name)
        assert obj is not None, f"{kind} {name or self.name} missing"
        return obj

    def status(self) -> Obj:
        return self.must("coai").get("status") or {}

    def condition(self, type_: str) -> Obj:
        return next((c for c in self.status().get("conditions") or [] if c["type"] == type_), {})

    def patch_spec(self, spec: Obj) -> None:
        self.kubectl("patch", "coai", self.name, "--type=merge", "-p", json.dumps({"spec": spec}))

    def wait_ready(self, timeout: float = 120) -> None:
        wait_for(lambda: self.kubectl("wait", "--for=condition=Ready", f"coai/{self.name}", "--timeout=5s",
                                      check=False).returncode == 0,
                 timeout=timeout, message=f"coai/{self.name} Ready ({self.status()})")

    def wait_settled(self, version: str, timeout: float = 120) -> Obj:
        """Ready at `version` for the current generation."""
        def settled() -> Obj | None:
            body = self.must("coai")
            st = body.get("status") or {}
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])
            current = st.get("observedGeneration") == body["metadata"]["generation"]
            return st if ready and current and st.get("version") == version else None
        return wait_for(settled, timeout=timeout, message=f"{self.name} Ready at {version}",
                        explain=self.describe)

    def describe(self) -> str:
        """The instance's status and its pods, for a timeout message."""
        pods = self.kubectl("get", "pods", "-o", "wide", check=False).stdout
        unhealthy = self.kubectl("get", "events", "--field-selector", "reason=Unhealthy", "-o",
                                 "custom-columns=OBJECT:.involvedObject.name,MESSAGE:.message", check=False).stdout
        logs = self.kubectl("logs", f"deployment/{self.name}", "--tail=5", check=False).stdout
        return f"status={json.dumps(self.status())}\npods:\n{pods}\nprobe failures:\n{unhealthy}\nlogs:\n{logs}"

    def children(self) -> dict[str, Obj]:
        names = [("deployment", self.name), ("service", self.name), ("configmap", f"{self.name}-env"),
                 ("pvc", f"{self.name}-storage"), ("pvc", f"{self.name}-logs"), ("pvc", f"{self.name}-config")]
        return {f"{kind}/{name}": self.must(kind, name) for kind, name in names}


def runnable(docs: list[Obj], db: DbConfig) -> list[Obj]:
    """The sample's documents, made to run here (see the module docstring)."""
    for doc in docs:
        if doc["kind"] == "Secret" and doc.get("type", "Opaque") == "Opaque":
            for key in doc.get("stringData") or {}:
                if "password" in key and "redis" not in doc["metadata"]["name"]:
                    doc["stringData"][key] = db.password
        if doc["kind"] == "CoaiInstance":
            doc["spec"].update(image=STANDIN_IMAGE, version=VERSION, healthPath="/health")
            doc["spec"]["database"].update(host=db.host, port=db.port, name=db.database, user=db.user)
    return docs


def sample(path: Path, db: DbConfig) -> list[Obj]:
    return runnable([d for d in yaml.safe_load_all(path.read_text()) if d], db)


def apply_file(cluster: Cluster, namespace: str, path: Path, db: DbConfig) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(sample(path, db)))


@pytest.fixture
def minimal(cluster: Cluster, operator: OperatorProcess, namespace: str, db_config: DbConfig) -> Instance:
    apply_file(cluster, namespace, MINIMAL, db_config)
    inst = Instance(cluster, namespace, "coai")
    inst.db = db_config
    inst.wait_settled(VERSION)
    return inst


def log_since(operator: OperatorProcess, mark: int) -> str:
    return operator.log_text()[mark:]


# --------------------------------------------------------------------------------------------

def test_minimal_sample_creates_owned_children_and_becomes_ready(minimal: Instance) -> None:
    inst = minimal
    owner_uid = inst.must("coai")["metadata"]["uid"]
    children = inst.children()
    for key, obj in children.items():
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "coai-operator", key
        assert labels["app.kubernetes.io/instance"] == "coai", key
        refs = obj["metadata"].get("ownerReferences") or []
        if key.startswith("pvc/"):
            assert refs == [], f"{key}: kept PVCs carry no owner reference"
        else:
            assert [r["uid"] for r in refs] == [owner_uid], key
            assert refs[0]["controller"] is True
    st = inst.status()
    assert st["phase"] == "Ready"
    assert st["image"] == IMAGE
    assert st["endpoint"] == f"http://coai.{inst.namespace}.svc:80"
    assert st["readyReplicas"] == 1
    # kubectl wait, as a user (or Flux) would.
    inst.kubectl("wait", "--for=condition=Ready", "coai/coai", "--timeout=30s")

    cm = children["configmap/coai-env"]["data"]
    assert cm["MYSQL_HOST"] == inst.db.host
    assert "MYSQL_PASSWORD" not in cm
    container = children["deployment/coai"]["spec"]["template"]["spec"]["containers"][0]
    password = next(e for e in container["env"] if e["name"] == "MYSQL_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "coai-db", "key": "password"}
    svc = children["service/coai"]["spec"]
    assert svc["ports"][0]["port"] == 80
    assert svc["ports"][0]["targetPort"] == 8000

    events = inst.kubectl("get", "events", "--field-selector", "involvedObject.name=coai,involvedObject.kind="
                          "CoaiInstance", "-o", "json").stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"Created", "Ready"} <= reasons


def test_a_version_bump_that_changes_the_schema_waits_for_its_migration(minimal: Instance) -> None:
    """1.9.0 -> 2.0.0 changes the schema: the image never rolls by itself (docs/gitops.md); with
    policy Manual the instance says which migration it waits for. The whole upgrade: test_gitops."""
    inst = minimal
    inst.patch_spec({"version": NEXT_VERSION, "upgrade": {"policy": "Manual"}})

    def pending() -> Obj | None:
        conditions = (inst.must("coai").get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "UpgradePending" and c["status"] == "True"), None)

    condition = wait_for(pending, timeout=60, message="UpgradePending for 1.9.0 -> 2.0.0")
    assert condition["reason"] == "AwaitingMigration" and "CoaiMigration" in condition["message"], condition
    assert inst.must("deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"{STANDIN_IMAGE}:{VERSION}"
    assert (inst.must("coai")["status"] or {}).get("version") == VERSION
    labels = inst.must("deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == VERSION


def test_config_change_updates_env_and_rolls_the_pods(minimal: Instance) -> None:
    inst = minimal
    before = inst.must("deployment")["spec"]["template"]["metadata"]["annotations"]["coai.dev/config-hash"]
    replicasets_before = {rs["metadata"]["name"] for rs in json.loads(inst.kubectl(
        "get", "rs", "-l", "app.kubernetes.io/instance=coai,app.kubernetes.io/component=app", "-o", "json").stdout
    )["items"]}
    inst.patch_spec({"config": {"SERVE_STATIC": "true"}})
    wait_for(lambda: inst.must("configmap", "coai-env")["data"].get("SERVE_STATIC") == "true", timeout=60,
             message="ConfigMap carries the new setting")
    after = wait_for(lambda: (h := inst.must("deployment")["spec"]["template"]["metadata"]["annotations"]
                              ["coai.dev/config-hash"]) != before and h, timeout=60, message="config hash changes")
    assert after != before

    def new_replicaset() -> set[str]:
        names = {rs["metadata"]["name"] for rs in json.loads(inst.kubectl(
            "get", "rs", "-l", "app.kubernetes.io/instance=coai,app.kubernetes.io/component=app", "-o", "json"
        ).stdout)["items"]}
        return names - replicasets_before

    wait_for(new_replicaset, timeout=60, message="a new ReplicaSet rolls the pods")
    inst.wait_settled(VERSION, timeout=180)


def test_children_deleted_or_edited_by_hand_are_put_back(minimal: Instance) -> None:
    inst = minimal
    old_uid = inst.must("deployment")["metadata"]["uid"]
    inst.kubectl("delete", "deployment", "coai", "--wait=false")
    wait_for(lambda: (d := inst.get("deployment")) is not None and d["metadata"]["uid"] != old_uid,
             timeout=60, message="Deployment recreated")
    # Its pod reads the ConfigMap once, when its container starts: tampering with the ConfigMap
    # before then would race that start (README, "Running CoAI").
    inst.wait_settled(VERSION, timeout=180)

    inst.kubectl("label", "service", "coai", "app.kubernetes.io/managed-by=someone-else", "--overwrite")
    wait_for(lambda: inst.must("service")["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "coai-operator",
             timeout=60, message="managed label restored")

    inst.kubectl("patch", "configmap", "coai-env", "--type=merge", "-p", '{"data": {"MYSQL_HOST": "evil"}}')
    wait_for(lambda: inst.must("configmap", "coai-env")["data"]["MYSQL_HOST"] == inst.db.host,
             timeout=60, message="ConfigMap data restored")

    old_svc = inst.must("service")["metadata"]["uid"]
    inst.kubectl("delete", "service", "coai")
    wait_for(lambda: (sv := inst.get("service")) is not None and sv["metadata"]["uid"] != old_svc,
             timeout=60, message="Service recreated")
    # (A PVC deleted by hand stays Terminating while the pod uses it: kubernetes.io/pvc-protection.)
    inst.wait_settled(VERSION, timeout=180)


RECONCILED = re.compile(r"reconciled (?P<ns>\S+)/(?P<name>\S+) \((?P<trigger>[^)]*)\): phase (?P<phase>\w+); "
                        r"(?P<reads>\d+) reads, (?P<writes>\d+) writes")


def _reconciles(text: str, namespace: str) -> list[re.Match[str]]:
    return [m for m in RECONCILED.finditer(text) if m["ns"] == namespace]


def test_a_reconcile_with_nothing_to_change_makes_no_write(minimal: Instance, operator: OperatorProcess) -> None:
    inst = minimal
    # Let the rollout's own events die down: a reconcile of the settled instance makes no write.
    # On a real node nothing may follow the last (status-writing) reconcile, so ask for one.
    pokes = iter(range(1, 1000))

    def quiet() -> bool:
        mark0 = len(operator.log_text())
        inst.kubectl("annotate", "--overwrite", "coai", "coai", f"example.com/settle={next(pokes)}")
        return bool(wait_for(lambda: _reconciles(log_since(operator, mark0), inst.namespace), timeout=30,
                             message="a reconcile after the poke")[-1]["writes"] == "0")
    wait_for(quiet, timeout=120, interval=1, message="a quiet reconcile")
    versions = {k: v["metadata"]["resourceVersion"] for k, v in inst.children().items()}
    status_before = inst.status()
    mark = len(operator.log_text())

    # A child event that is compared but changes nothing we own (an annotation in our prefix that we
    # do not set; one outside it, e.g. example.com/, brings no reconcile at all: tests/unit/
    # test_child_events.py) ...
    inst.kubectl("annotate", "service", "coai", "coai.dev/touched=yes")
    by_child = wait_for(lambda: [m for m in _reconciles(log_since(operator, mark), inst.namespace)
                                 if m["trigger"].startswith("Service coai")],
                        timeout=60, message="reconcile triggered by the Service event")
    # ... and a spec-level update event (an annotation on the CoaiInstance).
    inst.kubectl("annotate", "coai", "coai", "example.com/poke=1")
    by_update = wait_for(lambda: [m for m in _reconciles(log_since(operator, mark), inst.namespace)
                                  if m["trigger"] == "update"],
                         timeout=60, message="reconcile triggered by the update handler")
    for match in [*by_child, *by_update]:
        assert match["writes"] == "0", match.group(0)
        # Everything but the NetworkPolicies comes from the watch cache (instance/index.py); those cost
        # two GETs plus one list for switched-off ones (not indexed yet).
        assert int(match["reads"]) <= 3, match.group(0)
    written = [line for line in log_since(operator, mark).splitlines()
               if "kube write" in line and f" {inst.namespace}/" in line]
    assert written == []
    after = {k: v["metadata"]["resourceVersion"] for k, v in inst.children().items()}
    changed = {k for k in versions if versions[k] != after[k]}
    assert changed == {"service/coai"}  # only by our own `kubectl annotate`
    assert inst.status() == status_before
    print(f"no-op reconcile: {by_child[0]['reads']} reads, 0 writes (child event); "
          f"{by_update[0]['reads']} reads, 0 writes (update)")


def test_missing_password_secret_degrades_then_heals(cluster: Cluster, operator: OperatorProcess,
                                                     namespace: str, db_config: DbConfig) -> None:
    docs = [d for d in sample(MINIMAL, db_config) if d["kind"] == "CoaiInstance"]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    inst = Instance(cluster, namespace, "coai")
    wait_for(lambda: inst.condition("Ready").get("reason") == "SecretNotFound", timeout=60,
             message="Ready=False SecretNotFound")
    ready = inst.condition("Ready")
    assert ready["status"] == "False"
    assert ready["message"] == (f"Secret coai-db does not exist in namespace {namespace} "
                                "(spec.database.passwordSecretRef)")
    assert inst.condition("Degraded")["status"] == "True"
    assert inst.status()["phase"] == "Degraded"
    assert inst.get("deployment") is None
    events = json.loads(inst.kubectl("get", "events", "--field-selector", "involvedObject.name=coai",
                                     "-o", "json").stdout)["items"]
    assert any(e["reason"] == "SecretNotFound" and e["type"] == "Warning" for e in events)

    inst.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
        [d for d in sample(MINIMAL, db_config) if d["kind"] == "Secret"]))  # the password via stdin
    inst.wait_settled(VERSION, timeout=180)
    assert inst.condition("Degraded")["status"] == "False"


def test_maintenance_scales_to_zero_and_back(minimal: Instance) -> None:
    inst = minimal
    inst.patch_spec({"maintenance": {"enabled": True, "message": "Back at 10:00"}})
    wait_for(lambda: inst.status().get("phase") == "Maintenance", timeout=60, message="phase Maintenance")
    assert inst.must("deployment")["spec"]["replicas"] == 0
    ready = inst.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Maintenance")
    assert "Back at 10:00" in ready["message"]
    assert inst.get("service") is not None
    inst.patch_spec({"maintenance": {"enabled": False}})
    wait_for(lambda: inst.must("deployment")["spec"]["replicas"] == 1, timeout=60, message="scaled back")
    inst.wait_settled(VERSION, timeout=180)


def test_full_sample_with_managed_redis(cluster: Cluster, operator: OperatorProcess, namespace: str,
                                        db_config: DbConfig) -> None:
    apply_file(cluster, namespace, FULL, db_config)
    inst = Instance(cluster, namespace, "coai-full")
    inst.wait_settled(VERSION, timeout=240)
    # redis:7-alpine (Debian's redis-server) really runs; the app does not wait for it to be Ready.
    wait_for(lambda: inst.must("deployment", "coai-full-redis").get("status", {}).get("readyReplicas") == 1,
             timeout=120, message="managed Redis ready", explain=inst.describe)
    assert inst.must("configmap", "coai-full-env")["data"]["REDIS_HOST"] == "coai-full-redis"
    redis = inst.must("deployment", "coai-full-redis")
    assert redis["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "redis-server", "/run/redis/redis.conf", "--appendonly", "yes"]  # the password is in the file
    assert inst.must("service", "coai-full-redis")["spec"]["ports"][0]["port"] == 6379
    assert inst.must("pvc", "coai-full-redis-data")["spec"]["resources"]["requests"]["storage"] == "2Gi"
    svc = inst.must("service")
    assert svc["metadata"]["annotations"]["example.com/team"] == "chat"
    assert svc["spec"]["ports"][0]["targetPort"] == 8094

    inst.patch_spec({"redis": {"managed": {"enabled": False}, "host": "redis.example"}})
    wait_for(lambda: inst.get("deployment", "coai-full-redis") is None, timeout=60,
             message="managed Redis removed when switched off")
    assert inst.get("pvc", "coai-full-redis-data") is not None  # its data is kept
    assert inst.must("configmap", "coai-full-env")["data"]["REDIS_HOST"] == "redis.example"


def test_deleting_the_instance_collects_children_and_keeps_pvcs(minimal: Instance, cluster: Cluster) -> None:
    inst = minimal
    # A second instance that does not keep its PVCs.
    docs = [d for d in sample(MINIMAL, inst.db) if d["kind"] == "CoaiInstance"]
    docs[0]["metadata"]["name"] = "scratch"
    docs[0]["spec"]["storage"] = {"retain": False}
    inst.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    scratch = Instance(cluster, inst.namespace, "scratch")
    scratch.wait_settled(VERSION, timeout=180)
    assert scratch.must("pvc", "scratch-storage")["metadata"]["ownerReferences"][0]["name"] == "scratch"

    inst.kubectl("delete", "coai", "coai", "scratch", "--timeout=60s")  # no finalizer: returns at once
    for kind, name in (("deployment", "coai"), ("service", "coai"), ("configmap", "coai-env"),
                       ("deployment", "scratch"), ("pvc", "scratch-storage"), ("pvc", "scratch-config")):
        wait_for(lambda k=kind, n=name: inst.get(k, n) is None, timeout=120, message=f"{kind}/{name} collected")
    for pvc in ("coai-storage", "coai-logs", "coai-config"):
        kept = inst.get("pvc", pvc)
        assert kept is not None and not kept["metadata"].get("deletionTimestamp"), pvc
