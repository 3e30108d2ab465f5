"""GitOps end to end: Git owns the CoaiInstance spec, a version bump is a guarded upgrade.

The two cases measured in issue 15 (a bump without a CoaiMigration; a CoaiMigration while a GitOps
controller keeps re-applying the old version), then the same with real Flux (source-controller +
kustomize-controller, e2e/flux.py) syncing a Git repository served on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml
from tests.spec_writers import package_spec_writers

from coai_operator import constants
from coai_operator.bundles import load_bundle
from coai_operator.engine.dbconfig import DbConfig, connect
from coai_operator.engine.schema_state import read_state
from coai_operator.engine.versions import Hop, Version
from coai_operator.instance import upgrade_state as us
from coai_operator.kube import Kube
from e2e.conftest import Cluster, OperatorProcess
from e2e.flux import Flux, spec_writers
from e2e.gitserver import GitServer
from e2e.helpers import wait_for
from e2e.localcluster.appimages import STANDIN_IMAGE
from e2e.migration_support import (
    APP_CONFIG,
    APP_SECRET,
    Deployed,
    deploy_instance,
    health_endpoint,
    migration_manifest,
    seed,
    wait_phase,
)

Obj = dict[str, Any]
END = {"Succeeded", "Failed", "RolledBack"}
# These need the CoaiMigration to act through status.upgrade (instance/upgrade_state.py) and to plan
# from the deployed version: until then it writes the spec, and waits while spec.version differs
# from status.version. They run by themselves once the static check finds no spec writer.
# A whole upgrade under GitOps is what issue 15 is about: it needs the migration to act through
# status.upgrade only (tests/unit/test_git_owns_the_spec.py holds that statically).
needs_status_migration = pytest.mark.skipif(
    bool(package_spec_writers()),
    reason=f"migration/ still writes CoaiInstance.spec ({', '.join(sorted(package_spec_writers()))})")


def schema_version(db: DbConfig) -> str | None:
    conn = connect(db)
    try:
        recorded = read_state(conn, db.database).recorded_version()
    finally:
        conn.close()
    return str(recorded) if recorded else None


def image(deployed: Deployed) -> str:
    return deployed.get("deployment")["spec"]["template"]["spec"]["containers"][0]["image"]


def condition(obj: Obj, type_: str) -> Obj:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def manifests(db: DbConfig, version: str, name: str = "chat", **spec: Any) -> list[Obj]:
    """The Secrets and the CoaiInstance as a user keeps them in Git (what deploy_instance applies)."""
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "coai-db"},
         "stringData": {"password": db.password}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "coai-app"}, "stringData": APP_SECRET},
        {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "metadata": {"name": name},
         "spec": {"version": version, "image": STANDIN_IMAGE, "healthPath": "/health",
                  "secretRef": {"name": "coai-app"}, "config": dict(APP_CONFIG),
                  "database": {"host": db.host, "port": db.port, "name": db.database, "user": db.user,
                               "passwordSecretRef": {"name": "coai-db"}}, **spec}},
    ]


@contextmanager
def self_heal(cluster: Cluster, namespace: str, objs: list[Obj], every: float = 2.0) -> Iterator[list[str]]:
    """What Argo CD selfHeal does: server-side apply the manifests again and again (own field manager)."""
    stop, errors = threading.Event(), []
    text = yaml.safe_dump_all(objs)

    def loop() -> None:
        while not stop.wait(every):
            done = cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=e2e-selfheal",
                                   "-n", namespace, "-f", "-", input=text, check=False)
            if done.returncode:
                errors.append(done.stderr[-500:])

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join(timeout=60)


@contextmanager
def consistency_watch(deployed: Deployed) -> Iterator[list[str]]:
    """Samples (image, ready pods, schema) while an upgrade runs; lists every sample where ready
    pods run an image of another release line than the database schema."""
    stop, bad = threading.Event(), []

    def loop() -> None:
        while not stop.wait(0.5):
            try:
                dep = deployed.get("deployment")
                schema = schema_version(deployed.db)
            except (subprocess.CalledProcessError, OSError, ValueError):
                continue
            tag = dep["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[-1]
            ready = (dep.get("status") or {}).get("readyReplicas") or 0
            if ready and schema and tag.split(".")[:2] != schema.split(".")[:2]:
                bad.append(f"{ready} ready pod(s) of {tag} on schema {schema}")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield bad
    finally:
        stop.set()
        thread.join(timeout=30)


# --- the two measured cases, with a plain kubectl / self-heal loop ---------------------------------

@pytest.fixture
def at_1_9(cluster: Cluster, operator: OperatorProcess, namespace: str, db_config: DbConfig) -> Deployed:
    return deploy_instance(cluster, namespace, db_config, version="1.9.0")


def test_a_version_bump_without_a_migration_never_rolls_the_image(at_1_9: Deployed) -> None:
    """Measured before: image :2.0.0 over schema 1.9.0, no backup, phase Ready, no warning."""
    at_1_9.kubectl("patch", "coai", "chat", "--type=merge", "-p",
                   json.dumps({"spec": {"version": "2.0.0", "upgrade": {"policy": "Manual"}}}))
    pending = wait_for(lambda: condition(at_1_9.get("coai"), "UpgradePending") if condition(
        at_1_9.get("coai"), "UpgradePending").get("status") == "True" else None, timeout=60,
        message="UpgradePending")
    assert pending["reason"] == "AwaitingMigration"
    assert "targetVersion 2.0.0" in pending["message"]
    instance = at_1_9.get("coai")
    assert instance["status"]["version"] == "1.9.0" and instance["status"]["upgrade"]["version"] == "1.9.0"
    assert image(at_1_9).endswith(":1.9.0") and schema_version(at_1_9.db) == "1.9.0"
    assert condition(instance, "Reconciling")["status"] == "True"  # kstatus: in progress, not Current
    assert not json.loads(at_1_9.kubectl("get", "cmig", "-o", "json").stdout)["items"]  # Manual: none created
    assert spec_writers(instance) == []


def test_a_downgrade_or_unknown_version_is_refused_and_nothing_rolls(at_1_9: Deployed) -> None:
    for version, reason in (("1.8.0", "Downgrade"), ("7.0.0", "UnknownVersion")):
        at_1_9.kubectl("patch", "coai", "chat", "--type=merge", "-p", json.dumps({"spec": {"version": version}}))
        stalled = wait_for(lambda r=reason: c if (c := condition(at_1_9.get("coai"), "Stalled")).get(
            "reason") == r else None, timeout=60, message=f"Stalled {reason}")
        assert stalled["status"] == "True" and "1.9.0 keeps running" in stalled["message"]
        assert image(at_1_9).endswith(":1.9.0")
    assert schema_version(at_1_9.db) == "1.9.0"
    assert not json.loads(at_1_9.kubectl("get", "cmig", "-o", "json").stdout)["items"]


@needs_status_migration
def test_a_version_bump_with_policy_automatic_runs_the_guarded_upgrade(at_1_9: Deployed) -> None:
    with health_endpoint() as base_url, consistency_watch(at_1_9) as inconsistent:
        at_1_9.kubectl("patch", "coai", "chat", "--type=merge", "-p", json.dumps({"spec": {
            "version": "2.0.0", "upgrade": {"policy": "Automatic", "migration": {
                "validation": {"baseURL": base_url, "checks": ["database", "health"]}}}}}))
        mig = wait_phase(at_1_9, "chat-upgrade-2-0-0", END, timeout=420)
    assert mig["status"]["phase"] == "Succeeded", json.dumps(mig["status"], indent=1)
    assert mig["metadata"]["ownerReferences"][0]["name"] == "chat"
    assert any(s["name"] == "Backup" and s["phase"] == "Succeeded" for s in mig["status"]["steps"])
    wait_for(lambda: image(at_1_9).endswith(":2.0.0"), timeout=60, message="image 2.0.0")
    assert schema_version(at_1_9.db) == "2.0.0"
    assert inconsistent == []
    instance = at_1_9.get("coai")
    assert condition(instance, "UpgradePending")["status"] == "False"
    assert spec_writers(instance) == []


@needs_status_migration
def test_a_migration_under_self_heal_ends_consistent(cluster: Cluster, at_1_9: Deployed) -> None:
    """Measured before: Succeeded, "upgraded 1.9.0 -> 2.0.0", image :1.9.0 on schema 2.0.0."""
    git_state = manifests(at_1_9.db, "1.9.0")
    with health_endpoint() as base_url, self_heal(cluster, at_1_9.namespace, git_state) as errors, \
            consistency_watch(at_1_9) as inconsistent:
        at_1_9.kubectl("apply", "-f", "-", input=migration_manifest(
            "to-2", "2.0.0", validation={"baseURL": base_url, "checks": ["database", "health"]}))
        mig = wait_phase(at_1_9, "to-2", END, timeout=420)
        # Git still says 1.9.0: the operator keeps 2.0.0 (a downgrade is refused) and says so.
        stalled = wait_for(lambda: c if (c := condition(at_1_9.get("coai"), "Stalled")).get("reason") == "Downgrade"
                           else None, timeout=60, message="spec.version 1.9.0 in Git reported")
    assert errors == []
    assert mig["status"]["phase"] == "Succeeded", json.dumps(mig["status"], indent=1)
    assert image(at_1_9).endswith(":2.0.0") and schema_version(at_1_9.db) == "2.0.0"
    assert "2.0.0 keeps running" in stalled["message"]
    assert inconsistent == []
    assert spec_writers(at_1_9.get("coai")) == []


def test_status_upgrade_drives_the_children_while_git_self_heals(cluster: Cluster, at_1_9: Deployed) -> None:
    """The instance side of the contract, on a live cluster: a stand-in for the status-driven
    migration writes status.upgrade through instance/upgrade_state.py while the manifest is
    re-applied every 2 s, and the children follow the status, never the re-applied spec."""
    kube = Kube(api=cluster.api_client())
    ns = at_1_9.namespace
    rules = load_bundle().config_rules([Hop(Version.parse("1.9.0"), Version.parse("2.0.0"))])

    def write(*patches: Obj | None) -> None:
        # upgrade_state.write wakes the instance controller in the operator's process; from here a
        # metadata change does (kopf reacts to spec and metadata, not status).
        # The operator writes this status too (conditions, while Git re-applies): a 409 is rebuilt.
        instance = kube.get(constants.API_VERSION, constants.INSTANCE_KIND, ns, "chat")
        us.write_rebuilt(kube, instance, lambda i: us.merge(*(p(i) for p in patches)), wake=False)
        at_1_9.kubectl("annotate", "coai", "chat", "--overwrite", f"e2e.coai.dev/poke={uuid.uuid4().hex[:8]}")

    with self_heal(cluster, ns, manifests(at_1_9.db, "1.9.0")) as errors:
        write(lambda i: us.hold_maintenance_patch(i, "stand-in", "upgrading"))
        wait_for(lambda: at_1_9.get("deployment")["spec"]["replicas"] == 0, timeout=60, message="scaled to 0")
        assert condition(at_1_9.get("coai"), "Ready")["status"] == "False"
        write(lambda i: us.config_rules_patch(i, "stand-in", rules),
              lambda i: us.deployed_version_patch(i, "stand-in", "2.0.0"),
              lambda i: us.release_maintenance_patch(i, "stand-in"))
        wait_for(lambda: image(at_1_9).endswith(":2.0.0") and at_1_9.get("deployment")["spec"]["replicas"] == 1,
                 timeout=60, message="2.0.0 rolled out, maintenance off")
        stalled = wait_for(lambda: c if (c := condition(at_1_9.get("coai"), "Stalled")).get("reason") == "Downgrade"
                           else None, timeout=60, message="spec.version 1.9.0 in Git reported")
    assert errors == []
    assert "2.0.0 keeps running" in stalled["message"]
    env = at_1_9.get("configmap", "chat-env")["data"]
    assert env["RBAC_ENABLED"] == "true" and "LEGACY_AUTH_ENABLED" not in env and "OLD_API_FORMAT" not in env
    instance = at_1_9.get("coai")
    assert instance["spec"]["version"] == "1.9.0" and instance["spec"]["config"] == APP_CONFIG  # Git's, untouched
    assert "remove LEGACY_AUTH_ENABLED" in instance["status"]["gitConfigChanges"]
    assert spec_writers(instance) == []


# --- real Flux ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flux(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flux]:
    running = Flux(cluster, tmp_path_factory.mktemp("flux")).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def git() -> Iterator[GitServer]:
    server = GitServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def from_git(cluster: Cluster, operator: OperatorProcess, namespace: str, db_config: DbConfig, flux: Flux,
             git: GitServer) -> Iterator[tuple[Deployed, Flux, GitServer, str]]:
    """CoaiInstance chat at 1.9.0 applied by Flux from Git, Ready, on a seeded 1.9.0 database;
    spec.upgrade.migration validates against a local health endpoint."""
    with health_endpoint() as base_url:
        upgrade = {"migration": {"validation": {"baseURL": base_url, "checks": ["database", "health"]}}}
        sha = git.commit({"app.yaml": manifests(db_config, "1.9.0", upgrade=upgrade)}, "CoAI 1.9.0")
        flux.sync(namespace, git, health=[{"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance",
                                           "name": "chat"}])
        flux.wait_applied(namespace, sha, ready=True)
        deployed = Deployed(cluster, namespace, "chat", db_config)
        seed(deployed, "1.9.0", users=20, conversations_per_user=2, files=2)
        yield deployed, flux, git, base_url


def _bump(deployed: Deployed, repo: GitServer, base_url: str, version: str, extra: list[Obj] | None = None,
          **spec: Any) -> str:
    given = spec.pop("upgrade", None) or {}
    validation = {"baseURL": base_url, "checks": ["database", "health"]}
    migration = {"validation": validation, **(given.get("migration") or {})}
    docs = manifests(deployed.db, version, upgrade={**given, "migration": migration}, **spec) + (extra or [])
    return repo.commit({"app.yaml": docs}, f"CoAI {version}")


def _no_drift(flux_: Flux, namespace: str) -> None:
    """Flux's next apply finds the instance as Git has it: the operator changed nothing of it."""
    seen = len(flux_.applied_changes(namespace, "CoaiInstance", "chat"))
    flux_.request_reconcile(namespace)

    def state() -> str:
        kustomization = (flux_.kustomization(namespace).get("status") or {}).get("conditions")
        instance = json.loads(flux_.cluster.kubectl("get", "coai", "chat", "-n", namespace, "-o", "json").stdout)
        return f"Kustomization {kustomization}; instance {(instance.get('status') or {}).get('conditions')}"

    changes = wait_for(lambda: c if len(c := flux_.applied_changes(namespace, "CoaiInstance", "chat")) > seen
                       else None, timeout=180, interval=1, message="Flux re-applies the instance", explain=state)
    assert changes[-1] == "unchanged", changes


def test_flux_applies_the_instance_and_reports_a_refused_version(from_git: tuple) -> None:
    """Flux's health check (kstatus) reads our conditions: Ready at 1.9.0 with nothing to re-apply;
    a downgrade committed to Git is refused by the operator and reported failed by Flux."""
    deployed, flux_, git_, base_url = from_git
    _no_drift(flux_, deployed.namespace)
    assert spec_writers(deployed.get("coai")) == []
    sha = _bump(deployed, git_, base_url, "1.8.0")
    failed = flux_.wait_applied(deployed.namespace, sha, ready=False, timeout=900)
    assert "CoaiInstance" in failed["message"], failed
    stalled = condition(deployed.get("coai"), "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "Downgrade"
    assert image(deployed).endswith(":1.9.0") and schema_version(deployed.db) == "1.9.0"
    _no_drift(flux_, deployed.namespace)


@needs_status_migration
def test_flux_a_commit_bumping_the_version_upgrades_guarded(from_git: tuple) -> None:
    deployed, flux_, git_, base_url = from_git
    with consistency_watch(deployed) as inconsistent:
        sha = _bump(deployed, git_, base_url, "2.0.0")
        mig = wait_phase(deployed, "chat-upgrade-2-0-0", END, timeout=480)
        ready = flux_.wait_applied(deployed.namespace, sha, ready=True)
    assert mig["status"]["phase"] == "Succeeded", json.dumps(mig["status"], indent=1)
    assert ready["status"] == "True"
    assert image(deployed).endswith(":2.0.0") and schema_version(deployed.db) == "2.0.0"
    assert inconsistent == []
    _no_drift(flux_, deployed.namespace)
    assert spec_writers(deployed.get("coai")) == []


@needs_status_migration
def test_flux_a_commit_adding_a_migration_with_the_bump(from_git: tuple) -> None:
    deployed, flux_, git_, base_url = from_git
    migration = yaml.safe_load(migration_manifest(
        "to-2", "2.0.0", validation={"baseURL": base_url, "checks": ["database", "health"]}))
    sha = _bump(deployed, git_, base_url, "2.0.0", extra=[migration])
    mig = wait_phase(deployed, "to-2", END, timeout=480)
    flux_.wait_applied(deployed.namespace, sha, ready=True)
    assert mig["status"]["phase"] == "Succeeded", json.dumps(mig["status"], indent=1)
    assert image(deployed).endswith(":2.0.0") and schema_version(deployed.db) == "2.0.0"
    names = [m["metadata"]["name"] for m in json.loads(deployed.kubectl("get", "cmig", "-o", "json").stdout)["items"]]
    assert names == ["to-2"]  # the one from Git was picked up; the operator created none
    _no_drift(flux_, deployed.namespace)
    assert spec_writers(deployed.get("coai")) == []


@needs_status_migration
def test_flux_a_failing_upgrade_rolls_back_and_flux_reports_it(from_git: tuple) -> None:
    deployed, flux_, git_, base_url = from_git
    broken = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "broken-sql"},
              "data": {"2.0.0-zz-broken.sql": "UPDATE no_such_table SET x = 1;"}}
    sha = _bump(deployed, git_, base_url, "2.0.0", extra=[broken],
                upgrade={"migration": {"migrations": {"configMapRef": {"name": "broken-sql"}},
                                       "validation": {"enabled": False}}})
    mig = wait_phase(deployed, "chat-upgrade-2-0-0", END, timeout=480)
    assert mig["status"]["phase"] == "RolledBack", json.dumps(mig["status"], indent=1)
    # Rolled back to what ran before, pinned by its digest (the node reports repo@sha256 like a pull).
    assert image(deployed) == f"{STANDIN_IMAGE}:1.9.0@{mig['status']['previous']['imageDigest']}"
    assert schema_version(deployed.db) == "1.9.0"
    stalled = wait_for(lambda: c if (c := condition(deployed.get("coai"), "Stalled")).get("reason") == "UpgradeFailed"
                       else None, timeout=60, message="instance Stalled UpgradeFailed")
    assert "RolledBack" in stalled["message"]
    ready = flux_.wait_applied(deployed.namespace, sha, ready=False)
    assert "CoaiInstance" in ready["message"], ready  # Flux's health check names the failed instance
    assert spec_writers(deployed.get("coai")) == []


@needs_status_migration
def test_flux_holding_the_old_version_in_git_never_mixes_image_and_schema(from_git: tuple) -> None:
    deployed, flux_, git_, base_url = from_git
    migration = yaml.safe_load(migration_manifest(
        "to-2", "2.0.0", validation={"baseURL": base_url, "checks": ["database", "health"]}))
    with consistency_watch(deployed) as inconsistent:
        sha = _bump(deployed, git_, base_url, "1.9.0", extra=[migration])  # Git keeps 1.9.0
        mig = wait_phase(deployed, "to-2", END, timeout=480)
        flux_.wait_applied(deployed.namespace, sha, ready=None)
    assert mig["status"]["phase"] == "Succeeded", json.dumps(mig["status"], indent=1)
    assert image(deployed).endswith(":2.0.0") and schema_version(deployed.db) == "2.0.0"
    assert inconsistent == []
    _no_drift(flux_, deployed.namespace)
    assert spec_writers(deployed.get("coai")) == []
