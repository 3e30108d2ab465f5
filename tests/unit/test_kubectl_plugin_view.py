"""kubectl coai: the summaries and the terminal text, from fixed objects and a fixed clock."""

from __future__ import annotations

import json
from typing import Any

from coai_operator.plugin import cli, view

NOW = view.parse_time("2026-12-01T09:00:00Z") or 0.0


def instance(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "chat", "namespace": "apps"}, "spec": {"version": "2.0.0"},
            "status": {"phase": "Migrating", "version": "1.9.0", "endpoint": "http://chat.apps.svc:80",
                       "activeMigration": "chat-to-2-0-0",
                       "conditions": [{"type": "Ready", "status": "False", "reason": "Migrating",
                                       "message": "CoaiMigration chat-to-2-0-0 holds the instance"}], **status}}


POD = {"metadata": {"name": "chat-7d9f-abcde", "creationTimestamp": "2026-12-01T08:55:00Z",
                    "labels": {"app.kubernetes.io/component": "app"}},
       "status": {"phase": "Running", "containerStatuses": [{"ready": True, "restartCount": 2}]}}

MIGRATION = {
    "metadata": {"name": "chat-to-2-0-0"}, "spec": {"targetVersion": "2.0.0", "instanceRef": {"name": "chat"}},
    "status": {"phase": "Migrating", "fromVersion": "1.9.0", "toVersion": "2.0.0", "path": ["2.0.0"],
               "startedAt": "2026-12-01T08:58:00Z",
               "backup": {"completedAt": "2026-12-01T08:58:42Z", "artifacts": [{"name": "db.sql", "bytes": 3 << 20}]},
               "steps": [
                   {"name": "Preflight", "phase": "Succeeded", "startedAt": "2026-12-01T08:58:00Z",
                    "finishedAt": "2026-12-01T08:58:01Z"},
                   {"name": "Backup", "phase": "Succeeded", "job": "chat-to-2-0-0-backup",
                    "startedAt": "2026-12-01T08:58:01Z", "finishedAt": "2026-12-01T08:58:42Z"},
                   {"name": "Migrate", "phase": "Running", "job": "chat-to-2-0-0-migrate",
                    "startedAt": "2026-12-01T08:59:30Z"},
                   {"name": "Rollout"},
               ]},
}


def test_status_text_lists_pods_and_the_migration_steps_as_progress() -> None:
    summary = view.status_summary(instance(), [POD], MIGRATION, None, [MIGRATION], NOW)
    text = view.render_status(summary)
    assert text == """\
CoaiInstance apps/chat
  Version:   1.9.0 (spec: 2.0.0)
  Phase:     Migrating (Ready=False, Migrating)
  Message:   CoaiMigration chat-to-2-0-0 holds the instance
  Endpoint:  http://chat.apps.svc:80
Pods (1):
  NAME             COMPONENT  PHASE    READY  RESTARTS  AGE
  chat-7d9f-abcde  app        Running  1/1    2         5m00s
CoaiMigration chat-to-2-0-0: 1.9.0 -> 2.0.0, Migrating, 2/4 steps, running 2m00s
  Path:      1.9.0 -> 2.0.0
    [x]  Preflight  Succeeded  1s
    [x]  Backup     Succeeded  41s
    [>]  Migrate    Running    30s
    [ ]  Rollout    Pending
Backups: none (no CoaiBackup resource in this cluster)
""".replace("Backups: none (no CoaiBackup resource in this cluster)", """\
Backups:
  NAME           KIND           PHASE      SIZE     AGE
  chat-to-2-0-0  CoaiMigration  Succeeded  3.0 MiB  1m18s""")


def test_status_tolerates_no_backup_resource_and_no_migration() -> None:
    summary = view.status_summary(instance(phase="Ready", activeMigration=None), [], None, None, [], NOW)
    text = view.render_status(summary)
    assert "Pods (0):\n  none\n" in text
    assert "Migration: none\n" in text
    assert text.endswith("Backups: none (no CoaiBackup resource in this cluster)\n")
    assert view.render_status({**summary, "backupsAvailable": True}).endswith("Backups: none\n")


def test_a_coai_backup_summary_reads_the_crd_status() -> None:
    backup = {"metadata": {"name": "nightly-1", "creationTimestamp": "2026-12-01T06:00:00Z"},
              "spec": {"pinned": True},
              "status": {"phase": "Completed", "completionTime": "2026-12-01T06:10:00Z", "where": "pvc://b/apps/n",
                         "artifacts": [{"bytes": 1024}, {"bytes": 1024}], "verified": True}}
    assert view.backup_summary(backup, NOW) == {
        "name": "nightly-1", "source": "CoaiBackup", "phase": "Completed", "bytes": 2048, "age": "2h50m",
        "where": "pvc://b/apps/n", "pinned": True, "pinnedBy": "", "verified": True, "message": ""}
    fresh = view.backup_summary({"metadata": {"name": "new", "creationTimestamp": "2026-12-01T08:59:00Z"}}, NOW)
    assert (fresh["phase"], fresh["age"], fresh["bytes"]) == ("Pending", "1m00s", None)


def test_a_migrations_backup_is_listed_once_as_its_coaibackup() -> None:
    migration = json.loads(json.dumps(MIGRATION))
    migration["status"]["backup"]["name"] = "chat-to-2-0-0-pre-1a2b3"
    backup = {"metadata": {"name": "chat-to-2-0-0-pre-1a2b3", "creationTimestamp": "2026-12-01T08:58:01Z"},
              "status": {"phase": "Completed", "completionTime": "2026-12-01T08:58:42Z", "bytes": 3 << 20}}
    listed = view.status_summary(instance(), [], migration, [backup], [migration], NOW)["backups"]
    assert [{k: b[k] for k in ("name", "source", "phase", "bytes", "age")} for b in listed] == [
        {"name": "chat-to-2-0-0-pre-1a2b3", "source": "CoaiBackup", "phase": "Completed", "bytes": 3 << 20,
         "age": "1m18s"}]


def test_a_failed_step_shows_its_message() -> None:
    failed = json.loads(json.dumps(MIGRATION))
    failed["status"]["steps"][2].update(phase="Failed", finishedAt="2026-12-01T08:59:40Z",
                                        message="ERROR 1054: Unknown column 'x'\nmore detail")
    lines = view.render_migration(view.migration_summary(failed, NOW))
    assert "    [!]  Migrate    Failed     10s" in lines
    assert lines[lines.index("    [!]  Migrate    Failed     10s") + 1] == "        ERROR 1054: Unknown column 'x'"


def test_plan_text() -> None:
    text = view.render_plan("chat", {"from": "1.8.0", "to": "2.0.0", "path": ["1.8.0-to-1.9.0", "1.9.0-to-2.0.0"],
                                     "steps": ["Preflight", "Backup"], "checks": ["database"], "warnings": []})
    assert text.splitlines() == [
        "Upgrade plan for CoaiInstance chat: 1.8.0 -> 2.0.0 (dry run: nothing created)",
        "  Path:    1.8.0 -> 1.9.0 -> 2.0.0",
        "  Checks:  database",
        "  Steps:",
        "    1. Preflight",
        "    2. Backup",
    ]


def test_small_formatters() -> None:
    assert [view.duration(s) for s in (None, -3, 5, 65, 3600 * 2 + 60, 86400 * 3 + 3600 * 4)] == [
        "-", "0s", "5s", "1m05s", "2h01m", "3d4h"]
    assert [view.size(v) for v in (None, 12, 2048, 5 << 30)] == ["-", "12 B", "2.0 KiB", "5.0 GiB"]
    assert cli.migration_name("chat", "2.0.0") == "chat-to-2-0-0"
    assert len(cli.migration_name("x" * 80, "1.0.0")) <= 63


def test_namespace_and_output_are_accepted_after_the_command() -> None:
    args = cli.build_parser().parse_args(["status", "chat", "-n", "apps", "-o", "json"])
    assert (args.sub_namespace, args.sub_output, args.instance) == ("apps", "json", "chat")
    args = cli.build_parser().parse_args(["-n", "apps", "upgrade", "chat", "--to", "2.0.0", "--dry-run"])
    assert (args.namespace, args.to, args.dry_run) == ("apps", "2.0.0", True)
