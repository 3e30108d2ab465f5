"""The REAL CoAI app on a real node: Ready through its real probe with root's password from a Secret,
an upgrade 3.10.5 -> 4.25.0 through its API, a rollback to the recorded digest, and the upstream
3.6/3.8 fixes on an old database (issue "Real CoAI", acceptance 1-4).

Needs the real node (kubelet + containerd) with the images `programzmh/chatnio:<version>` built from
e2e/localcluster/build_coai.py's binaries, and host processes (MariaDB, the stand-in upstream)
reachable from pods: the address is the harness's bridge address (`e2e.conftest.POD_HOST_ADDRESS`);
on an existing cluster (COAI_E2E_USE_KUBECONFIG) $COAI_E2E_POD_HOST_ADDRESS must name one, or the
module is skipped, never faked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tests.mariadb import fresh_database, query, table_checksums
from tests.realapp import MODEL, STAND_IN_ANSWER, STAND_IN_KEY, StandInUpstream

from coai_operator.engine.coaiapi import DEFAULT_ROOT_PASSWORD, ROOT_USER, CoaiClient
from coai_operator.engine.dbconfig import DbConfig
from e2e.conftest import POD_HOST_ADDRESS, Cluster, OperatorProcess
from e2e.helpers import wait_for
from e2e.migration_support import Deployed, migration_manifest, wait_phase

OLD, NEW = "3.10.5", "4.25.0"
ADMIN_PASSWORD = "e2e-Root-password"
# The app runs as nobody (coai-facts.md: measured uid 65534 with writable volumes); the engine Jobs
# take the instance's identity by themselves (migration/jobs.py job_pod_security).
APP_IDENTITY = {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534,
                "seccompProfile": {"type": "RuntimeDefault"}}
ALL_CHECKS = ["database", "health", "login", "quota", "fingerprint", "chat", "dataIntegrity"]


def _pod_host_address(cluster: Cluster) -> str | None:
    """The harness's bridge address on the local cluster; on an existing cluster only when named."""
    return POD_HOST_ADDRESS if cluster.local or os.environ.get("COAI_E2E_POD_HOST_ADDRESS") else None


def _real_node(cluster: Cluster) -> bool:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout).get("items") or []
    return any("containerd" in (n.get("status", {}).get("nodeInfo", {}).get("containerRuntimeVersion") or "")
               for n in nodes)


@pytest.fixture(scope="module")
def pod_host(cluster: Cluster) -> str:
    address = _pod_host_address(cluster)
    if not _real_node(cluster) or not address:
        pytest.skip("needs the real node and an address pods reach host processes at")
    return address


@pytest.fixture(scope="module")
def upstream(pod_host: str) -> Iterator[StandInUpstream]:
    server = StandInUpstream(bind=pod_host)
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture
def app_db(mariadb_server: dict, pod_host: str) -> Iterator[DbConfig]:
    """A fresh database; the app's pods reach MariaDB at the pod host address."""
    with fresh_database(mariadb_server) as cfg:
        yield cfg


@dataclass
class RealInstance:
    deployed: Deployed
    pod_db_host: str

    @contextlib.contextmanager
    def api(self) -> Iterator[CoaiClient]:
        """The app through `kubectl port-forward` (what a person does), under its API prefix."""
        local = self.deployed.cluster.local
        cmd = [str(local.bin_dir / "kubectl") if local else "kubectl", "--kubeconfig",
               str(self.deployed.cluster.kubeconfig),
               "port-forward", "-n", self.deployed.namespace, f"svc/{self.deployed.name}", "0:80"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=self.deployed.cluster.env)
        try:
            assert proc.stdout is not None
            line = wait_for(proc.stdout.readline, timeout=60, message="port-forward started")
            port = re.search(r"127\.0\.0\.1:(\d+)", line)
            assert port, line
            yield CoaiClient(f"http://127.0.0.1:{port.group(1)}", "/api", timeout=60)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    def config_yaml(self) -> bytes:
        pvc = self.deployed.get("pvc", f"{self.deployed.name}-config")["spec"]["volumeName"]
        pv = json.loads(self.deployed.cluster.kubectl("get", "pv", pvc, "-o", "json").stdout)
        path = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {})["path"]
        return (Path(path) / "config.yaml").read_bytes()

    def pod_image_id(self) -> str:
        pods = json.loads(self.deployed.kubectl("get", "pods", "-l",
                                                f"app.kubernetes.io/instance={self.deployed.name},"
                                                "app.kubernetes.io/component=app", "-o", "json").stdout)["items"]
        return next(cs["imageID"] for p in pods for cs in p["status"].get("containerStatuses") or []
                    if cs["name"] == "coai" and cs.get("ready"))


def deploy_real(cluster: Cluster, namespace: str, db: DbConfig, pod_host: str, *, admin: bool = True) -> RealInstance:
    deployed = Deployed(cluster, namespace, "chat", db)
    docs = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "coai-db"},
         "stringData": {"password": db.password}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "coai-app"}, "stringData": {"SECRET": "s" * 40}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "coai-admin"},
         "stringData": {"password": ADMIN_PASSWORD}},
    ]
    spec = {"version": OLD, "port": 8094, "secretRef": {"name": "coai-app"}, "podSecurityContext": APP_IDENTITY,
            "database": {"host": pod_host, "port": db.port, "name": db.database, "user": db.user,
                         "passwordSecretRef": {"name": "coai-db"}},
            "redis": {"managed": {"enabled": True}}, "offline": {"enabled": True}}
    if admin:
        spec["admin"] = {"passwordSecretRef": {"name": "coai-admin"}}
    docs.append({"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "metadata": {"name": "chat"},
                 "spec": spec})
    deployed.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    wait_for(lambda: deployed.kubectl("wait", "--for=condition=Ready", "coai/chat", "--timeout=5s",
                                      check=False).returncode == 0, timeout=300, message="coai/chat Ready")
    return RealInstance(deployed, pod_host)


def add_channel_and_key(instance: RealInstance, upstream: StandInUpstream) -> str:
    with instance.api() as api:
        token = api.login(ROOT_USER, ADMIN_PASSWORD)
        api.create_channel(token, name="stand-in", endpoint=upstream.url, models=[MODEL], secret=STAND_IN_KEY)
        key = api.api_key(token)
    instance.deployed.kubectl("create", "secret", "generic", "coai-api-key", "--from-literal", f"api-key={key}")
    return key


def upgrade(instance: RealInstance, name: str, **spec: object) -> dict:
    instance.deployed.kubectl("apply", "-f", "-", input=migration_manifest(
        name, NEW, **spec))
    return wait_phase(instance.deployed, name, {"Succeeded", "Failed", "RolledBack"}, timeout=900)


@pytest.fixture
def real(cluster: Cluster, operator: OperatorProcess, namespace: str, app_db: DbConfig,
         pod_host: str) -> RealInstance:
    return deploy_real(cluster, namespace, app_db, pod_host)


# 1 ---------------------------------------------------------------------------------------------------

def test_ready_with_root_password_from_the_secret_and_a_chat_through_a_channel(
        real: RealInstance, upstream: StandInUpstream) -> None:
    status = real.deployed.get("coai")["status"]
    assert status["version"] == OLD
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["DefaultAdminPassword"]["status"] == "False"
    with real.api() as api:
        assert api.try_login(ROOT_USER, DEFAULT_ROOT_PASSWORD) is None, "the public default is gone before Ready"
        assert api.try_login(ROOT_USER, ADMIN_PASSWORD)
    key = add_channel_and_key(real, upstream)
    with real.api() as api:
        assert api.chat(key, MODEL) == STAND_IN_ANSWER  # offline mode: tiktoken files from the operator image


# 2 ---------------------------------------------------------------------------------------------------

def test_upgrade_to_4_25_0_through_the_real_api(real: RealInstance, upstream: StandInUpstream) -> None:
    key = add_channel_and_key(real, upstream)
    mig = upgrade(real, "to-4-25", validation={"checks": ALL_CHECKS, "apiKeySecretRef": {"name": "coai-api-key"}})
    assert mig["status"]["phase"] == "Succeeded", json.dumps(mig["status"], indent=1)
    validated = next(s["message"] for s in mig["status"]["steps"] if s["name"] == "Validate")
    for check in ALL_CHECKS:
        assert f"{check}=passed" in validated, validated
    assert real.deployed.get("coai")["status"]["version"] == NEW
    with real.api() as api:
        token = api.login(ROOT_USER, ADMIN_PASSWORD)
        assert api.userinfo_status(token) == 200, "4.x answers /userinfo"
        assert api.chat(key, MODEL) == STAND_IN_ANSWER
    channels = yaml.safe_load(real.config_yaml())["channel"]
    assert [c["endpoint"] for c in channels] == [upstream.url]
    assert query(real.deployed.db, "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
                                   "AND TABLE_NAME = 'conversation' AND COLUMN_NAME = 'task_id'",
                 (real.deployed.db.database,)) == [(1,)]


# 3 ---------------------------------------------------------------------------------------------------

def test_failed_validation_rolls_back_to_the_recorded_digest(real: RealInstance, upstream: StandInUpstream) -> None:
    key = add_channel_and_key(real, upstream)
    image_id = real.pod_image_id()
    checksums = table_checksums(real.deployed.db)
    config_before = real.config_yaml()
    upstream.fail = True  # the chat check fails after the rollout to 4.25.0
    try:
        # The chat check retries a 503 for timeoutSeconds (default 300) and a failed Job runs again
        # (backoffLimit 1): a failure that will not heal is reported after 60 s, once.
        mig = upgrade(real, "to-4-25-fails", backoffLimit=0,
                      validation={"checks": ["database", "health", "chat"], "timeoutSeconds": 60,
                                  "apiKeySecretRef": {"name": "coai-api-key"}})
    finally:
        upstream.fail = False
    status = mig["status"]
    assert status["phase"] == "RolledBack", json.dumps(status, indent=1)
    digest = status["previous"]["imageDigest"]
    assert image_id.endswith(digest)
    inst = real.deployed.get("coai")
    # Git owns the spec: the pin is the operator's, in status.upgrade (docs/gitops.md).
    assert inst["spec"]["version"] == OLD and "imageDigest" not in inst["spec"]
    assert inst["status"]["upgrade"]["imageDigest"] == digest
    wait_for(lambda: real.pod_image_id().endswith(digest), timeout=300, message="3.10.5 pod by digest")
    assert table_checksums(real.deployed.db) == checksums
    assert real.config_yaml() == config_before, "config.yaml byte-identical"
    with real.api() as api:
        assert api.try_login(ROOT_USER, ADMIN_PASSWORD)
        assert api.userinfo_status(api.login(ROOT_USER, ADMIN_PASSWORD)) == 404, "3.x again"
        assert api.chat(key, MODEL) == STAND_IN_ANSWER


# 4 ---------------------------------------------------------------------------------------------------

PRE_36 = (
    """CREATE TABLE auth (id INT PRIMARY KEY AUTO_INCREMENT, bind_id INT UNIQUE, username VARCHAR(24) UNIQUE,
       token VARCHAR(255) NOT NULL, password VARCHAR(64) NOT NULL, is_admin BOOLEAN DEFAULT FALSE)""",
    """CREATE TABLE subscription (id INT PRIMARY KEY AUTO_INCREMENT, user_id INT UNIQUE, expired_at DATETIME,
       created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
       total_month INT DEFAULT 0, enterprise BOOLEAN DEFAULT FALSE, FOREIGN KEY (user_id) REFERENCES auth(id))""",
    "INSERT INTO auth (username, token, password) VALUES ('alice', 't1', 'x'), ('bob', 't2', 'y')",
    "INSERT INTO subscription (user_id, total_month) VALUES (1, 12), (2, 1)",
)


def test_a_database_from_before_3_6_is_repaired_on_the_way(cluster: Cluster, operator: OperatorProcess,
                                                         namespace: str, app_db: DbConfig, pod_host: str) -> None:
    for statement in PRE_36:
        query(app_db, statement)
    # auth is not empty, so the app creates no root: no admin Secret (the warning condition says so).
    real = deploy_real(cluster, namespace, app_db, pod_host, admin=False)
    conditions = {c["type"]: c for c in real.deployed.get("coai")["status"]["conditions"]}
    assert conditions["DefaultAdminPassword"]["status"] == "True"
    mig = upgrade(real, "to-4-25-old-db", validation={"checks": ["database", "health", "dataIntegrity"]})
    assert mig["status"]["phase"] == "Succeeded", json.dumps(mig["status"], indent=1)
    assert query(app_db, "SELECT user_id, level FROM subscription ORDER BY user_id") == [(1, 3), (2, 3)]
    assert query(app_db, "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
                         "AND TABLE_NAME = 'auth' AND COLUMN_NAME = 'email'", (app_db.database,)) == [(1,)]



# The steps of a real-line migration, on whatever node the harness has ------------------------------------

def test_real_line_migration_runs_its_own_steps(cluster: Cluster, operator: OperatorProcess, namespace: str,
                                                db_config: DbConfig) -> None:
    """Preflight and Migrate run `engine migrate-real`, the backup takes /config, the config step
    needs no bundle hop, the database gets upstream's fixes. On the real node the app really runs
    (it then needs the pod host address); on a node without it, this checks the operator's side."""
    real = _real_node(cluster)
    host = _pod_host_address(cluster) if real else db_config.host
    if real and not host:
        pytest.skip("the real node needs an address pods reach host processes at")
    for statement in PRE_36:
        query(db_config, statement)
    instance = deploy_real(cluster, namespace, db_config, host, admin=False)
    mig = upgrade(instance, "real-steps", validation={"checks": ["database", "dataIntegrity"]})
    status = mig["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["path"] == ["3.10.5-to-3.11.1", "3.11.1-to-4.24.2", "4.24.2-to-4.25.0"]
    steps = {s["name"]: s for s in status["steps"]}
    assert steps["Preflight"]["message"].startswith("database at 3.10.5")
    assert steps["ConfigMigration"]["phase"] == "Succeeded"
    assert query(db_config, "SELECT user_id, level FROM subscription ORDER BY user_id") == [(1, 3), (2, 3)]
    assert instance.deployed.get("coai")["status"]["version"] == NEW
