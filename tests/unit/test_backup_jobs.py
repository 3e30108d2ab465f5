"""Backup Jobs and destinations (pure): URLs, env without secrets, mounts, schedule-made backups."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from coai_operator.backup import jobs
from coai_operator.backup.jobs import Destination
from coai_operator.backup.schedule import backup_for, candidates
from coai_operator.instance.render import APP_UID

S3 = {"bucket": "bk", "prefix": "/coai/prod/", "endpoint": "https://s3.example.com", "pathStyle": False,
      "credentialsSecretRef": {"name": "s3-creds"}, "caBundleSecretRef": {"name": "ca", "key": "bundle.pem"}}
BACKUP = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiBackup",
          "metadata": {"name": "nightly", "namespace": "apps", "uid": "u-1"},
          "spec": {"instanceRef": {"name": "coai"}, "include": ["database", "storage"], "compression": "zstd",
                   "verify": True, "encryption": {"keySecretRef": {"name": "bk-key"}}}}
INSTANCE = {"metadata": {"name": "coai", "namespace": "apps"},
            "spec": {"version": "2.0.0", "database": {"host": "db", "user": "chatnio",
                                                      "passwordSecretRef": {"name": "db-pass"}}}}


def test_urls_and_where() -> None:
    s3 = Destination("s3", S3)
    assert s3.url("apps/nightly") == "s3://bk/coai/prod/apps/nightly" == s3.where("apps/nightly")
    pvc = Destination("pvc", {"name": "backups"})
    assert pvc.url("apps/nightly") == "/backup/apps/nightly"
    assert pvc.where("apps/nightly") == "pvc/backups/apps/nightly"


def test_backup_job_args_env_and_mounts() -> None:
    dest = Destination("s3", S3)
    args, trees = jobs.backup_args(BACKUP, dest)
    assert args[:4] == ["backup", "--dir", "s3://bk/coai/prod/apps/nightly", "--include"]
    assert "--verify" in args and "--storage=/storage" in args and trees == ("storage",)
    job = jobs.engine_job(BACKUP, "backup", args, dest, instance=INSTANCE, trees=trees, read_only_trees=True,
                          key_ref=BACKUP["spec"]["encryption"]["keySecretRef"])
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["COAI_S3_PATH_STYLE"]["value"] == "false"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert env["MYSQL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "db-pass"
    assert env["COAI_BACKUP_KEY_FILE"]["value"].endswith("/key") and "COAI_BACKUP_KEY" not in env
    assert all("value" not in e or "secret" not in e["name"].lower() for e in env.values())
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["storage"]["persistentVolumeClaim"]["claimName"] == "coai-storage"
    assert volumes["s3-ca"]["secret"]["items"] == [{"key": "bundle.pem", "path": "ca.crt"}]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["storage"]["readOnly"] is True
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] > 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["fsGroup"]) == (APP_UID, APP_UID)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CoaiBackup"
    assert jobs.job_name(BACKUP, "backup") == jobs.job_name(BACKUP, "backup") != jobs.job_name(BACKUP, "delete0")
    assert "bk-key" not in json.dumps(pod["containers"][0]["args"])


def test_schedule_backups_and_candidates() -> None:
    schedule = {"metadata": {"name": "nightly", "namespace": "apps"},
                "spec": {"instanceRef": {"name": "coai"}, "template": {"locationRef": {"name": "s3"}}}}
    body = backup_for(schedule, datetime(2026, 3, 2, 3, 0, tzinfo=UTC))
    assert body["metadata"]["name"] == "nightly-202603020300"
    assert body["metadata"]["labels"][jobs.LABEL_SCHEDULE] == "nightly"
    assert body["spec"] == {"instanceRef": {"name": "coai"}, "locationRef": {"name": "s3"}}
    items = [
        {"metadata": {"name": "a", "creationTimestamp": "2026-03-01T00:00:00Z"}, "spec": {},
         "status": {"phase": "Completed", "startTime": "2026-03-01T00:00:01Z"}},
        {"metadata": {"name": "b", "creationTimestamp": "2026-03-02T00:00:00Z"}, "spec": {"pinned": True},
         "status": {"phase": "Failed"}},
        {"metadata": {"name": "running", "creationTimestamp": "2026-03-02T00:00:00Z"}, "spec": {},
         "status": {"phase": "Running"}},
    ]
    got = {c.name: (c.good, c.pinned) for c in candidates(items)}
    assert got == {"a": (True, False), "b": (False, True)}


def test_human_bytes() -> None:
    assert jobs.human_bytes(512) == "512 B"
    assert jobs.human_bytes(3 * 1024 * 1024) == "3.0 MiB"


def test_job_names_follow_the_action() -> None:
    job = jobs.engine_job(BACKUP, "delete1", ["catalog"], Destination("s3", S3), database=False)
    assert job["metadata"]["name"] == jobs.job_name(BACKUP, "delete1") != jobs.job_name(BACKUP, "delete0")
    env = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MYSQL_PASSWORD" not in env and "AWS_ACCESS_KEY_ID" in env


def test_config_backups_mount_the_env_configmap_and_secret_read_only_never_as_env() -> None:
    backup = {**BACKUP, "spec": {**BACKUP["spec"], "include": ["config"]}}
    instance = {**INSTANCE, "spec": {**INSTANCE["spec"], "secretRef": {"name": "coai-app"}}}
    args, trees = jobs.backup_args(backup, Destination("pvc", {"name": "bk"}))
    assert "--config=/config" in args and "--env-dir=/var/run/coai-env" in args
    pod = jobs.engine_job(backup, "backup", args, Destination("pvc", {"name": "bk"}), instance=instance,
                          trees=trees, read_only_trees=True)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["env-configmap"]["configMap"] == {"name": "coai-env", "optional": True}
    assert volumes["env-secret"]["secret"] == {"secretName": "coai-app", "optional": True}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["env-secret"] == {"name": "env-secret", "mountPath": "/var/run/coai-env/secret.coai-app",
                                    "readOnly": True}
    assert not any("coai-app" in json.dumps(e) for e in pod["containers"][0]["env"])
    assert pod["automountServiceAccountToken"] is False  # no API access needed for the copies
    without, _ = jobs.backup_args({**BACKUP, "spec": {**BACKUP["spec"], "include": ["database"]}},
                                  Destination("pvc", {"name": "bk"}))
    assert not any(a.startswith("--env-dir") for a in without)


def test_a_restore_reports_env_drift_by_key_name_only() -> None:
    from coai_operator.backup.restore import env_drift

    assert env_drift({"secret": {"name": "coai-app", "differ": [], "missing": [], "added": []}}) == ""
    text = env_drift({"configMap": {"name": "c-env", "differ": ["A"], "missing": ["B"], "added": []},
                      "secret": {"name": "coai-app", "differ": ["SECRET"], "missing": [], "added": ["NEW"]}})
    assert "spec.config (the env ConfigMap) c-env: A, -B" in text and "Secret coai-app: SECRET, +NEW" in text
    assert "env-export" in text
