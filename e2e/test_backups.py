"""Backups and restores as resources, end to end: the operator runs engine Jobs for real against
a real MariaDB and a real S3 server (versitygw), on whatever runs the cluster's pods.

The S3 endpoint the pods use is a fixture value (`s3_for_pods`): the address pods reach host
processes at (the bridge address on the local real node, e2e/conftest.py; COAI_E2E_S3_HOST elsewhere).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml
from tests.mariadb import fresh_database
from tests.s3 import S3Server, require_versitygw

from e2e.conftest import Cluster
from e2e.helpers import wait_for
from e2e.localcluster.appimages import STANDIN_IMAGE
from e2e.migration_support import Deployed, deploy_instance, file_digests, query, table_checksums

KINDS = ("coaibackuplocations", "coaibackups", "coaibackupschedules", "coairestores")


@pytest.fixture(scope="module")
def backup_crds(cluster: Cluster, crds_installed: list[str]) -> None:
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{k}.coai.dev" for k in KINDS])


@pytest.fixture(scope="module")
def s3_for_pods(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    # After the cluster: on the local real node its address (the bridge) exists only then.
    require_versitygw()
    server = S3Server(tmp_path_factory.mktemp("versitygw") / "data",
                      host=os.environ.get("COAI_E2E_S3_HOST", "127.0.0.1")).start()
    yield server
    server.stop()


@pytest.fixture
def deployed(cluster: Cluster, namespace: str, db_config, operator, backup_crds) -> Deployed:
    return deploy_instance(cluster, namespace, db_config, version="1.8.0")


def apply(d: Deployed, *objs: dict, namespace: str | None = None) -> None:
    args = ["-n", namespace] if namespace else []
    runner = d.cluster.kubectl if namespace else d.kubectl
    runner("apply", *args, "-f", "-", input=yaml.safe_dump_all(list(objs)))


def s3_location(s3: S3Server, bucket: str, name: str = "offsite", default: bool = True) -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds"},
         "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}},
        {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiBackupLocation", "metadata": {"name": name},
         "spec": {"default": default, "s3": {"bucket": bucket, "prefix": "e2e", "endpoint": s3.endpoint,
                                             "credentialsSecretRef": {"name": "s3-creds"}}}},
    ]


def backup(name: str, **spec: object) -> dict:
    return {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiBackup", "metadata": {"name": name},
            "spec": {"instanceRef": {"name": "chat"}, **spec}}


def restore(name: str, **spec: object) -> dict:
    return {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiRestore", "metadata": {"name": name},
            "spec": {"target": {"instanceRef": {"name": "chat"}}, **spec}}


def wait_final(d: Deployed, kind: str, name: str, timeout: float = 300, namespace: str | None = None) -> dict:
    def get() -> dict:
        args = ["get", kind, name, "-n", namespace or d.namespace, "-o", "json"]
        return json.loads(d.cluster.kubectl(*args).stdout)

    def finished() -> dict | None:
        obj = get()
        return obj if (obj.get("status") or {}).get("phase") in ("Completed", "Failed") else None

    try:
        return wait_for(finished, timeout=timeout, interval=1, message=f"{kind}/{name} finished")
    except AssertionError:
        raise AssertionError(f"{kind}/{name}: {json.dumps(get().get('status'), indent=1)}") from None


def test_backup_to_s3_then_restore_same_instance_and_refuse_a_corrupted_object(
        deployed: Deployed, s3_for_pods: S3Server) -> None:
    bucket = s3_for_pods.make_bucket()
    apply(deployed, *s3_location(s3_for_pods, bucket))
    wait_for(lambda: deployed.get("cbl", "offsite").get("status", {}).get("phase") == "Available", timeout=90,
             message="location Available")
    before, files = table_checksums(deployed.db), file_digests(deployed.storage_dir())
    apply(deployed, backup("first"))
    done = wait_final(deployed, "cbk", "first")
    status = done["status"]
    assert status["phase"] == "Completed", status
    assert status["verified"] is True and status["appVersion"] == "1.8.0"
    assert status["where"] == "s3://" + bucket + f"/e2e/{deployed.namespace}/first"
    # config: the /config tree and the copies of the env ConfigMap and Secret (docs/backups.md)
    assert {a["name"] for a in status["artifacts"]} == {"database.sql.gz", "storage.tar.gz", "config.tar.gz",
                                                       "config-env.json.gz"}
    assert status["rowCounts"]["users"] == 40
    keys = s3_for_pods.keys(bucket, f"e2e/{deployed.namespace}/first/")
    assert any(k.endswith("manifest.json") for k in keys)
    printed = deployed.kubectl("get", "cbk", "first").stdout
    assert "Completed" in printed and "s3://" in printed

    query(deployed.db, "DELETE FROM conversations")
    victim = next(p for p in deployed.storage_dir().rglob("*") if p.is_file())
    victim.write_bytes(b"damaged")
    apply(deployed, restore("back", backupRef={"name": "first"}))
    done = wait_final(deployed, "crst", "back", timeout=420)
    assert done["status"]["phase"] == "Completed", done["status"]
    assert table_checksums(deployed.db) == before
    assert file_digests(deployed.storage_dir()) == files
    assert not (deployed.get("coai", "chat")["spec"].get("maintenance") or {}).get("enabled")

    client = s3_for_pods.client()
    key = f"e2e/{deployed.namespace}/first/database.sql.gz"
    body = bytearray(client.get_object(bucket, key).read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(bucket, key, io.BytesIO(bytes(body)), len(body))
    query(deployed.db, "DELETE FROM conversations")
    untouched = table_checksums(deployed.db)
    apply(deployed, restore("corrupt", backupRef={"name": "first"}))
    done = wait_final(deployed, "crst", "corrupt", timeout=420)
    assert done["status"]["phase"] == "Failed"
    assert "sha256" in done["status"]["message"] and "nothing was changed" in done["status"]["message"]
    assert table_checksums(deployed.db) == untouched


def test_schedule_prunes_objects_keeps_the_pinned_backup(deployed: Deployed, s3_for_pods: S3Server) -> None:
    bucket = s3_for_pods.make_bucket()
    apply(deployed, *s3_location(s3_for_pods, bucket))
    apply(deployed, backup("pinned", pinned=True, verify=False))
    assert wait_final(deployed, "cbk", "pinned")["status"]["phase"] == "Completed"
    schedule = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiBackupSchedule", "metadata": {"name": "often"},
                "spec": {"instanceRef": {"name": "chat"}, "schedule": "* * * * *", "runImmediately": True,
                         "template": {"verify": False}, "retention": {"keepLast": 1}}}
    apply(deployed, schedule)

    def scheduled() -> list[dict]:
        items = json.loads(deployed.kubectl("get", "cbk", "-l", "coai.dev/schedule=often", "-o", "json").stdout)
        return items["items"]

    first = wait_for(lambda: [b for b in scheduled() if (b.get("status") or {}).get("phase") == "Completed"],
                     timeout=240, interval=2, message="a first scheduled backup")[0]["metadata"]["name"]
    first_prefix = f"e2e/{deployed.namespace}/{first}/"
    assert s3_for_pods.keys(bucket, first_prefix)
    # the next minute's backup completes; retention (keepLast 1) prunes the first one and its objects
    wait_for(lambda: any(b["metadata"]["name"] != first and (b.get("status") or {}).get("phase") == "Completed"
                         for b in scheduled()), timeout=240, interval=2, message="a second scheduled backup")
    wait_for(lambda: first not in [b["metadata"]["name"] for b in scheduled()], timeout=180, interval=2,
             message=f"{first} pruned")
    wait_for(lambda: s3_for_pods.keys(bucket, first_prefix) == [], timeout=60, message="pruned objects deleted")
    assert deployed.get("cbk", "pinned")["status"]["phase"] == "Completed"
    assert s3_for_pods.keys(bucket, f"e2e/{deployed.namespace}/pinned/")
    deployed.kubectl("patch", "cbks", "often", "--type=merge", "-p", '{"spec": {"suspend": true}}')


def test_restore_into_a_new_instance_in_another_namespace_and_database(
        cluster: Cluster, deployed: Deployed, s3_for_pods: S3Server, mariadb_server: dict) -> None:
    bucket = s3_for_pods.make_bucket()
    apply(deployed, *s3_location(s3_for_pods, bucket))
    apply(deployed, backup("move"))
    assert wait_final(deployed, "cbk", "move")["status"]["phase"] == "Completed"
    expected = table_checksums(deployed.db)

    target_ns = f"{deployed.namespace[:50]}-new"
    cluster.kubectl("create", "namespace", target_ns)
    try:
        with fresh_database(mariadb_server) as db2:
            instance = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "metadata": {"name": "chat"},
                        # The guide line's stand-in app: what the pods of this scenario really run.
                        "spec": {"version": "1.8.0", "image": STANDIN_IMAGE, "healthPath": "/health",
                                 "database": {"host": db2.host, "port": db2.port,
                                                                  "name": db2.database, "user": db2.user,
                                                                  "passwordSecretRef": {"name": "coai-db"}}}}
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "coai-db"},
                      "stringData": {"password": db2.password}}
            apply(deployed, secret, *s3_location(s3_for_pods, bucket), instance,
                  restore("from-old", source={"locationRef": {"name": "offsite"},
                                              "backupName": f"{deployed.namespace}/move"}),
                  namespace=target_ns)
            done = wait_final(deployed, "crst", "from-old", timeout=420, namespace=target_ns)
            assert done["status"]["phase"] == "Completed", done["status"]
            assert table_checksums(db2) == expected
    finally:
        cluster.kubectl("delete", "namespace", target_ns, "--wait=false", check=False)


def test_encrypted_backup_cannot_be_restored_without_its_key(deployed: Deployed, s3_for_pods: S3Server) -> None:
    bucket = s3_for_pods.make_bucket()
    key = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bk-key"},
           "stringData": {"key": "a long enough backup key, 32+ bytes"}}
    apply(deployed, key, *s3_location(s3_for_pods, bucket))
    apply(deployed, backup("sealed", encryption={"keySecretRef": {"name": "bk-key"}}, verify=False))
    status = wait_final(deployed, "cbk", "sealed")["status"]
    assert status["phase"] == "Completed" and status["encrypted"] is True
    stored = s3_for_pods.client().get_object(bucket, f"e2e/{deployed.namespace}/sealed/storage.tar.gz").read()
    assert stored.startswith(b"COAIENC1")
    before = table_checksums(deployed.db)
    apply(deployed, restore("no-key", source={"locationRef": {"name": "offsite"},
                                              "backupName": f"{deployed.namespace}/sealed"}))
    done = wait_final(deployed, "crst", "no-key", timeout=420)
    assert done["status"]["phase"] == "Failed" and "key is needed" in done["status"]["message"]
    assert table_checksums(deployed.db) == before
    assert not (deployed.get("coai", "chat")["spec"].get("maintenance") or {}).get("enabled")


def test_object_store_down_gives_a_failed_backup_and_nothing_good(deployed: Deployed, tmp_path) -> None:
    require_versitygw()
    down = S3Server(tmp_path / "gw", host=os.environ.get("COAI_E2E_S3_HOST", "127.0.0.1")).start()
    bucket = down.make_bucket()
    down.stop()  # the store is gone when the backup runs
    apply(deployed, *s3_location(down, bucket, name="gone", default=False))
    apply(deployed, backup("unlucky", locationRef={"name": "gone"}, verify=False))
    status = wait_final(deployed, "cbk", "unlucky")["status"]
    assert status["phase"] == "Failed"
    reason = next(c for c in status["conditions"] if c["type"] == "Complete")["reason"]
    assert reason in ("BackupFailed", "StorageUnavailable") and "S3" in status["message"]
    down.start()
    assert not [k for k in down.keys(bucket) if k.endswith("manifest.json")]
    down.stop()
    assert deployed.get("cbl", "gone").get("status", {}).get("phase") in (None, "Unavailable")


def test_a_finished_backup_is_final_and_its_settings_immutable(cluster: Cluster, namespace: str, operator,
                                                                backup_crds) -> None:
    body = backup("orphan", destination={"pvc": {"name": "backups"}}, verify=False)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body))

    def final() -> dict | None:
        obj = json.loads(cluster.kubectl("get", "cbk", "orphan", "-n", namespace, "-o", "json").stdout)
        return obj if (obj.get("status") or {}).get("phase") == "Failed" else None

    status = wait_for(final, timeout=60, message="cbk/orphan Failed")["status"]
    assert next(c for c in status["conditions"] if c["type"] == "Complete")["reason"] == "InstanceNotFound"
    changed = cluster.kubectl("patch", "cbk", "orphan", "-n", namespace, "--type=merge",
                              "-p", '{"spec": {"compression": "zstd"}}', check=False)
    assert changed.returncode != 0 and "immutable" in changed.stderr
    rerun = cluster.kubectl("patch", "cbk", "orphan", "-n", namespace, "--subresource=status", "--type=merge",
                            "-p", '{"status": {"phase": "Pending"}}', check=False)
    assert rerun.returncode != 0 and "never run again" in rerun.stderr
    pinned = cluster.kubectl("patch", "cbk", "orphan", "-n", namespace, "--type=merge",
                             "-p", '{"spec": {"pinned": true}}', check=False)
    assert pinned.returncode == 0, pinned.stderr
    both = backup("both", destination={"pvc": {"name": "pvc-a"}}, locationRef={"name": "offsite"})
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(both), check=False)
    assert refused.returncode != 0 and "not both" in refused.stderr


def coai(d: Deployed, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl coai ARGS` as a user runs it (the console script's module, the admin kubeconfig)."""
    return subprocess.run([sys.executable, "-m", "coai_operator.plugin.cli", "-n", d.namespace, *args],
                          capture_output=True, text=True, env=d.cluster.env, timeout=420)


def test_kubectl_coai_backup_waits_for_the_backup_and_lists_it(deployed: Deployed, s3_for_pods: S3Server) -> None:
    bucket = s3_for_pods.make_bucket()
    apply(deployed, *s3_location(s3_for_pods, bucket, default=False))
    made = coai(deployed, "backup", "chat", "--location", "offsite", "--name", "by-hand", "--wait")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("CoaiBackup by-hand: Completed, ")
    assert f"at s3://{bucket}/e2e/{deployed.namespace}/by-hand, verified" in made.stdout
    # The phases it saw while polling: a small backup may finish between two looks.
    phases = [line.split(": ", 1)[1] for line in made.stderr.splitlines() if line.startswith("coaibackup/by-hand: ")]
    assert phases[-1] == "Completed" and set(phases) <= {"Pending", "Running", "Completed"}, made.stderr
    # The plugin names the instance and the location; the rest is the CRD's defaults: a full,
    # verified, unpinned backup whose data goes with the CoaiBackup.
    assert deployed.get("cbk", "by-hand")["spec"] == {
        "instanceRef": {"name": "chat"}, "locationRef": {"name": "offsite"}, "compression": "gzip",
        "include": ["database", "storage", "config"], "pinned": False, "retainData": False, "verify": True}

    listed = coai(deployed, "backups", "chat", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = [b for b in json.loads(listed.stdout) if b["name"] == "by-hand"]
    assert entry["phase"] == "Completed" and entry["bytes"] > 0 and entry["pinned"] is False
    assert entry["where"] == f"s3://{bucket}/e2e/{deployed.namespace}/by-hand"
    table = coai(deployed, "backups", "chat").stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "SIZE", "AGE", "WHERE", "PINNED"]
    assert any(line.startswith("by-hand") and "Completed" in line for line in table[1:])

    refused = coai(deployed, "backup", "chat", "--location", "nowhere")
    assert refused.returncode == 1 and "CoaiBackupLocation nowhere not found" in refused.stderr
