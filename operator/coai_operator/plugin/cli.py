"""`kubectl coai` (the console script kubectl-coai; kubectl finds it on PATH as a plugin).

  kubectl coai status INSTANCE                 version, phase, pods, the active (or last) migration
                                               with its steps, the last backups
  kubectl coai upgrade INSTANCE --to VERSION   create the CoaiMigration (--dry-run: print the plan only)
  kubectl coai rollback MIGRATION              set spec.rollback.requested on the CoaiMigration
  kubectl coai logs MIGRATION [--step STEP]    the logs of the migration's Jobs
  kubectl coai backup INSTANCE [--location L] [--wait]
                                               create a CoaiBackup (--wait: until it has finished)
  kubectl coai backups INSTANCE                the instance's CoaiBackups: phase, size, age, where, pinned

It talks to the cluster of the current kubeconfig context as the user (never the operator's
identity) and writes only what the user would write with kubectl: a new CoaiMigration or
CoaiBackup, or spec.rollback.requested of an existing CoaiMigration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from kubernetes import config

from coai_operator import constants
from coai_operator.kube import Kube, KubeError
from coai_operator.migration.model import Phase
from coai_operator.plugin import backups as backup_cmd
from coai_operator.plugin import view
from coai_operator.plugin.backups import PluginError, list_backups

Obj = dict[str, Any]
LOG_TAIL_LINES = 200


class Result(NamedTuple):
    document: Any  # the -o json output
    text: str
    code: int = 0


def current_namespace() -> str:
    try:
        _, active = config.list_kube_config_contexts()
        return str((active or {}).get("context", {}).get("namespace") or "default")
    except (config.ConfigException, FileNotFoundError, TypeError):
        return "default"


def _get(kube: Kube, kind: str, namespace: str, name: str) -> Obj:
    obj = kube.get(constants.API_VERSION, kind, namespace, name)
    if obj is None:
        raise PluginError(f"{kind} {name} not found in namespace {namespace}")
    return obj


def instance_migrations(kube: Kube, namespace: str, instance: str) -> list[Obj]:
    items = kube.list(constants.API_VERSION, constants.MIGRATION_KIND, namespace)
    mine = [m for m in items if (m.get("spec") or {}).get("instanceRef", {}).get("name") == instance]
    return sorted(mine, key=lambda m: m["metadata"].get("creationTimestamp") or "", reverse=True)


def status(kube: Kube, namespace: str, name: str, now: float) -> dict[str, Any]:
    instance = _get(kube, constants.INSTANCE_KIND, namespace, name)
    pods = kube.list("v1", "Pod", namespace,
                     f"{constants.LABEL_NAME}={constants.APP_NAME},{constants.LABEL_INSTANCE}={name}")
    migrations = instance_migrations(kube, namespace, name)
    active = (instance.get("status") or {}).get("activeMigration")
    migration = next((m for m in migrations if m["metadata"]["name"] == active), None) or next(
        (m for m in migrations if not (m.get("spec") or {}).get("dryRun")), None)
    backups = list_backups(kube, namespace, name)
    with_backup = [m for m in migrations if (m.get("status") or {}).get("backup", {}).get("completedAt")]
    return view.status_summary(instance, pods, migration, backups, with_backup[:5], now)


def plan(kube: Kube, namespace: str, name: str, target: str) -> dict[str, Any]:
    """The upgrade the operator would run, computed by the operator's own planner."""
    from coai_operator.bundles import load_bundle
    from coai_operator.migration import planner

    instance = _get(kube, constants.INSTANCE_KIND, namespace, name)
    try:
        p = planner.plan_migration({"targetVersion": target}, instance, load_bundle().table, name)
    except planner.PlanRefused as exc:
        raise PluginError(f"the operator would refuse this upgrade ({exc.reason}): {exc}") from exc
    return {"from": p.from_version, "to": p.to_version, "path": list(p.path), "steps": list(p.steps),
            "checks": list(p.checks), "warnings": list(p.warnings)}


def migration_name(instance: str, target: str) -> str:
    return f"{instance}-to-{target.replace('.', '-').replace('+', '-')}".lower()[:63].rstrip("-")


def upgrade(kube: Kube, namespace: str, instance: str, target: str, name: str | None) -> Obj:
    _get(kube, constants.INSTANCE_KIND, namespace, instance)
    body = {"apiVersion": constants.API_VERSION, "kind": constants.MIGRATION_KIND,
            "metadata": {"name": name or migration_name(instance, target), "namespace": namespace},
            "spec": {"instanceRef": {"name": instance}, "targetVersion": target}}
    try:
        return kube.create(body)
    except KubeError as exc:
        if exc.status == 409:
            raise PluginError(f"CoaiMigration {body['metadata']['name']} already exists; follow it with "
                              f"`kubectl coai status {instance}`, or pass --name") from exc
        raise


def rollback(kube: Kube, namespace: str, name: str) -> Obj:
    migration = _get(kube, constants.MIGRATION_KIND, namespace, name)
    if (migration.get("status") or {}).get("phase") == Phase.ROLLED_BACK:
        raise PluginError(f"CoaiMigration {name} is already rolled back")
    return kube.patch(constants.API_VERSION, constants.MIGRATION_KIND, namespace, name,
                      {"spec": {"rollback": {"requested": True}}})


def step_logs(kube: Kube, namespace: str, name: str, step: str | None) -> list[dict[str, Any]]:
    migration = _get(kube, constants.MIGRATION_KIND, namespace, name)
    steps = [s for s in (migration.get("status") or {}).get("steps") or [] if s.get("job")]
    if step:
        steps = [s for s in steps if s["name"].lower() == step.lower()]
        if not steps:
            known = ", ".join(s["name"] for s in (migration.get("status") or {}).get("steps") or [] if s.get("job"))
            raise PluginError(f"CoaiMigration {name} has no Job for step {step!r} "
                              f"(steps with a Job: {known or 'none'})")
    result = []
    for s in steps:
        pods = kube.list("v1", "Pod", namespace, f"job-name={s['job']}")
        entry: dict[str, Any] = {"step": s["name"], "job": s["job"], "pods": []}
        for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
            pod_name = pod["metadata"]["name"]
            path = Kube.path("v1", "Pod", namespace, pod_name, "log")
            try:
                response = kube.api.call_api(*kube.api.param_serialize(
                    method="GET", resource_path=path, query_params=[("tailLines", str(LOG_TAIL_LINES))],
                    auth_settings=["BearerToken"])[:3], _request_timeout=30)
                text = response.read().decode(errors="replace")
                if not 200 <= response.status <= 299:
                    text = f"(log unavailable: HTTP {response.status})"
            except Exception as exc:  # the log is best effort: the pod may be gone
                text = f"(log unavailable: {exc})"
            entry["pods"].append({"name": pod_name, "log": text})
        result.append(entry)
    return result


def render_logs(entries: Sequence[dict[str, Any]]) -> str:
    out = []
    for e in entries:
        if not e["pods"]:
            out.append(f"==> {e['step']} (Job {e['job']}): no pod left (Jobs are kept, their pods may be gone)")
        for pod in e["pods"]:
            out.append(f"==> {e['step']} (Job {e['job']}, pod {pod['name']}) <==\n{pod['log'].rstrip()}")
    return "\n".join(out) + "\n" if out else "no step of this migration has run in a Job yet\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl coai", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("status", help="an instance, its pods, its migration, its backups")
    p.add_argument("instance")
    p = sub.add_parser("upgrade", help="create a CoaiMigration to VERSION")
    p.add_argument("instance")
    p.add_argument("--to", required=True, metavar="VERSION")
    p.add_argument("--name", help="name of the CoaiMigration (default INSTANCE-to-X-Y-Z)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, create nothing")
    p = sub.add_parser("rollback", help="request the rollback of a CoaiMigration")
    p.add_argument("migration")
    p = sub.add_parser("logs", help="the logs of a migration's Jobs")
    p.add_argument("migration")
    p.add_argument("--step", help="only this step (e.g. Backup, Migrate)")
    p = sub.add_parser("backup", help="create a CoaiBackup of an instance")
    p.add_argument("instance")
    p.add_argument("--location", help="a CoaiBackupLocation (default: the namespace's default location)")
    p.add_argument("--name", help="name of the CoaiBackup (default INSTANCE-YYYYMMDD-HHMMSS, UTC)")
    p.add_argument("--wait", action="store_true", help="wait until the backup has completed or failed")
    p.add_argument("--timeout", type=float, default=backup_cmd.DEFAULT_WAIT_SECONDS, metavar="SECONDS",
                   help="with --wait: give up waiting after this long (the backup goes on)")
    p = sub.add_parser("backups", help="list an instance's CoaiBackups")
    p.add_argument("instance")
    for action in sub.choices.values():  # `kubectl coai status x -n ns` as well as `-n ns status x`
        action.add_argument("-n", "--namespace", dest="sub_namespace", help=argparse.SUPPRESS)
        action.add_argument("-o", "--output", dest="sub_output", choices=["text", "json"], help=argparse.SUPPRESS)
    return parser


def backup(args: argparse.Namespace, kube: Kube, ns: str, now: float, waiter: backup_cmd.Waiter) -> Result:
    created = backup_cmd.create_backup(kube, ns, args.instance, args.location, args.name, now)
    name = created["metadata"]["name"]
    where = f"location {args.location}" if args.location else "the namespace's default location"
    head = f"coaibackup.{constants.GROUP}/{name} created for {args.instance} ({where})\n"
    if not args.wait:
        return Result(created, head + f"follow it with: kubectl coai backups {args.instance} -n {ns}\n")
    sys.stderr.write(head)
    final = waiter.wait(ns, name, args.timeout,
                        on_phase=lambda phase, _: sys.stderr.write(f"coaibackup/{name}: {phase}\n"))
    summary = view.backup_summary(final, time.time())
    return Result(final, view.render_backup(summary), 0 if summary["phase"] == "Completed" else 1)


def run(args: argparse.Namespace, kube: Kube, now: float, waiter: backup_cmd.Waiter | None = None) -> Result:
    ns = args.sub_namespace or args.namespace or current_namespace()
    if args.command == "status":
        summary = status(kube, ns, args.instance, now)
        return Result(summary, view.render_status(summary))
    if args.command == "upgrade":
        if args.dry_run:
            p = plan(kube, ns, args.instance, args.to)
            return Result(p, view.render_plan(args.instance, p))
        created = upgrade(kube, ns, args.instance, args.to, args.name)
        name = created["metadata"]["name"]
        return Result(created, f"coaimigration.{constants.GROUP}/{name} created: {args.instance} -> {args.to}\n"
                               f"follow it with: kubectl coai status {args.instance} -n {ns}\n")
    if args.command == "rollback":
        patched = rollback(kube, ns, args.migration)
        return Result(patched, f"coaimigration.{constants.GROUP}/{args.migration}: rollback requested "
                               f"(phase {(patched.get('status') or {}).get('phase', 'Pending')})\n")
    if args.command == "backup":
        return backup(args, kube, ns, now, waiter or backup_cmd.Waiter(kube))
    if args.command == "backups":
        items = list_backups(kube, ns, args.instance)
        summaries = None if items is None else [view.backup_summary(b, now) for b in items]
        return Result(summaries, view.render_backups(args.instance, summaries))
    entries = step_logs(kube, ns, args.migration, args.step)
    return Result(entries, render_logs(entries))


def user_kube() -> Kube:
    return Kube(field_manager="kubectl-coai")  # the user's writes are not the operator's


def main(argv: Sequence[str] | None = None, kube_factory: Callable[[], Kube] = user_kube) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args, kube_factory(), time.time())
    except (PluginError, KubeError) as exc:
        print(f"kubectl coai: {exc}", file=sys.stderr)
        return 1
    output = args.sub_output or args.output
    sys.stdout.write(json.dumps(result.document, indent=2, default=str) + "\n" if output == "json" else result.text)
    return result.code


if __name__ == "__main__":
    sys.exit(main())
