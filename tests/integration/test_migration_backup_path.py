"""One backup path: the CoaiMigration's pre-upgrade CoaiBackup and its rollback restore, run as the
operator writes their Jobs, against a real MariaDB and a real S3 server (versitygw), encrypted.

The Jobs' manifests come from the operator's own builders (migration/backupstep.py, the CoaiBackup
controller's backup/jobs.py, migration/jobs.py for RollbackRestore and Validate); only the pod's
mount points are mapped to local directories and the secretKeyRef values taken from the fixtures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coai_operator.backup import controller
from coai_operator.backup.destination import ENV_MOUNT, BackupSource, restore_args
from coai_operator.engine.dbconfig import DbConfig
from coai_operator.migration import backupstep
from coai_operator.migration import jobs as migration_jobs
from tests.s3 import S3Server
from tests.unit.fakekube import FakeKube

from .engine_support import create_schema, make_storage, populate, query, run_engine, table_checksums, tree_digest

pytestmark = pytest.mark.integration
NS = "apps"
KEY = "the migration backup key, 32+ bytes"
INSTANCE = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "metadata": {"name": "chat", "namespace": NS},
            "spec": {"version": "1.8.0", "database": {"host": "db", "passwordSecretRef": {"name": "coai-db"}},
                     "secretRef": {"name": "coai-app"}},
            "status": {"version": "1.8.0", "upgrade": {"version": "1.8.0"}}}


def _run(job: dict[str, Any], secrets: dict[str, str], paths: dict[str, Path]) -> Any:
    """Run a Job's engine command here: its plain env values (the database's address: this test's
    MariaDB), its secretKeyRef values from `secrets`, and its mount points (/storage, /config, the
    key file) mapped to local paths."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update({e["name"]: secrets[e["name"]] for e in container["env"] if "valueFrom" in e})
    env.update({k: v for k, v in secrets.items() if k.startswith("MYSQL_")})
    env.pop("COAI_RESULT_FILE", None)
    env.pop("HOME", None)
    if "COAI_BACKUP_KEY_FILE" in env:
        env["COAI_BACKUP_KEY_FILE"] = str(paths["key"])
    args = [a.replace("=/storage", f"={paths['storage']}").replace("=/config", f"={paths['config']}")
            .replace(f"={ENV_MOUNT}", f"={paths['env']}") for a in container["args"][1:]]
    return run_engine(env, *args)


def test_the_migration_backup_and_its_rollback_restore_share_one_path(
        db_config: DbConfig, db_env: dict[str, str], s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    create_schema(db_config)
    populate(db_config)
    storage, config = tmp_path / "storage", tmp_path / "config"
    make_storage(storage)
    config.mkdir()
    (config / "config.yaml").write_text("channels:\n  - name: main\n    secret: sk-config-marker\n")
    key = tmp_path / "key"
    key.write_text(KEY)
    env_dir = tmp_path / "env"
    for name, data in (("configmap.chat-env", {"SERVE_STATIC": "true"}), ("secret.coai-app", {"SECRET": "jwt-x1"})):
        (env_dir / name).mkdir(parents=True)
        for k, v in data.items():
            (env_dir / name / k).write_text(v)
    paths = {"storage": storage, "config": config, "key": key, "env": env_dir}
    secrets = {**db_env, **s3_server.env()}

    kube = FakeKube()
    kube.put(INSTANCE)
    kube.put({"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiBackupLocation", "metadata": {"name": "offsite",
              "namespace": NS}, "spec": {"default": True, "s3": {
                  "bucket": s3_bucket, "prefix": "clusters/a", "endpoint": s3_server.endpoint,
                  "credentialsSecretRef": {"name": "s3-creds"}}}})
    migration = kube.put({"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiMigration",
                          "metadata": {"name": "to-2", "namespace": NS, "uid": "9d1e-migration"},
                          "spec": {"instanceRef": {"name": "chat"}, "targetVersion": "2.0.0",
                                   "backup": {"encryption": {"keySecretRef": {"name": "bk-key"}}}}})

    # Backup step: the CoaiBackup, then the Job its controller creates for it.
    kube.create(backupstep.desired(kube, migration, backupstep.PRE, 3600))
    backup = kube.get("coai.dev/v1alpha1", "CoaiBackup", NS, backupstep.backup_name(migration))
    status, _ = controller.reconcile_backup(kube, backup)
    [job] = [o for (k, _, _), o in kube.objects.items() if k == "Job"]
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MYSQL_PASSWORD" not in {k for k, e in env.items() if "value" in e}  # secrets only by reference
    before, files = table_checksums(db_config), tree_digest(storage)
    ran = _run(job, secrets, paths)
    assert ran.returncode == 0, ran.stderr
    assert ran.result["location"] == status["location"] == f"s3://{s3_bucket}/clusters/a/{NS}/{backup['metadata']['name']}"
    assert ran.result["appVersion"] == "1.8.0" and ran.result["encrypted"] is True
    stored = b"".join(s3_server.client().get_object(s3_bucket, k).read() for k in s3_server.keys(s3_bucket))
    assert b"sk-config-marker" not in stored and b"jwt-x1" not in stored  # readable only with the key
    assert {a["name"] for a in ran.result["artifacts"]} >= {"config.tar.gz", "config-env.json.gz"}

    # Validate compares with the row counts the backup recorded (status.backup.rowCounts).
    validate = migration_jobs.build_job(migration, INSTANCE, "Validate", row_counts=ran.result["rowCounts"])
    validate["spec"]["template"]["spec"]["containers"][0]["args"] = [
        "engine", "validate", "--checks", "dataIntegrity", "--row-counts-env", "COAI_EXPECTED_ROW_COUNTS"]
    assert _run(validate, secrets, paths).returncode == 0

    # The migration changes data and files; then the rollback restores the CoaiBackup.
    query(db_config, "DELETE FROM conversations")
    (storage / "new-after-backup.txt").write_text("x")
    (config / "config.yaml").write_text("migrated: true\n")
    lost = _run(validate, secrets, paths)
    assert lost.returncode != 0 and "conversations" in json.dumps(lost.result)
    kube.objects[("CoaiBackup", NS, backup["metadata"]["name"])]["status"] = {**status, "phase": "Completed"}
    source = backupstep.restore_source(kube, {**migration, "status": {"fromVersion": "1.8.0"}})
    assert isinstance(source, BackupSource) and source.url == ran.result["location"]
    restore = migration_jobs.build_job({**migration, "status": {"fromVersion": "1.8.0"}}, INSTANCE,
                                       "RollbackRestore", source=source)
    command = restore["spec"]["template"]["spec"]["containers"][0]["args"][1:]
    same, _ = restore_args(source.url, ["database", "storage", "config"], "1.8.0")
    assert command == same  # the CoaiRestore's command line
    done = _run(restore, secrets, paths)
    assert done.returncode == 0, done.stderr
    assert table_checksums(db_config) == before and tree_digest(storage) == files
    assert "sk-config-marker" in (config / "config.yaml").read_text()
    assert done.result["env"]["secret"] == {"name": "coai-app", "differ": [], "missing": [], "added": []}

    # Without the key nothing can be read: the restore refuses and changes nothing.
    query(db_config, "DELETE FROM conversations")
    key.write_text("a wrong key of at least sixteen bytes")
    refused = _run(restore, secrets, paths)
    assert refused.returncode != 0 and refused.result.get("ok") is False
    assert table_checksums(db_config) != before
