"""What `kubectl coai` shows: pure functions from API objects (plain dicts) to a summary dict (the
`-o json` output) and from that summary to terminal text. `now` is passed in, so tests are exact."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from coai_operator.backup.jobs import human_bytes
from coai_operator.metrics import parse_time
from coai_operator.migration.model import TERMINAL_PHASES, StepPhase

Obj = Mapping[str, Any]
MARKS = {StepPhase.SUCCEEDED: "[x]", StepPhase.RUNNING: "[>]", StepPhase.FAILED: "[!]", StepPhase.SKIPPED: "[-]"}


def duration(seconds: float | None) -> str:
    """42s, 3m05s, 2h10m, 3d4h: kubectl's style of age."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def size(value: int | None) -> str:
    return "-" if value is None else human_bytes(value)


def _condition(status: Obj, kind: str) -> Obj:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def pod_summary(pod: Obj, now: float) -> dict[str, Any]:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    return {
        "name": meta.get("name"),
        "component": (meta.get("labels") or {}).get("app.kubernetes.io/component", ""),
        "phase": status.get("phase", "Unknown"),
        "ready": f"{sum(1 for c in containers if c.get('ready'))}/{len(containers) or 1}",
        "restarts": sum(int(c.get("restartCount") or 0) for c in containers),
        "age": duration(now - t) if (t := parse_time(meta.get("creationTimestamp"))) else "-",
    }


def step_summary(step: Obj, now: float) -> dict[str, Any]:
    begin, end = parse_time(step.get("startedAt")), parse_time(step.get("finishedAt"))
    took = (end - begin) if begin and end else (now - begin) if begin else None
    return {"name": step.get("name"), "phase": step.get("phase") or "Pending", "job": step.get("job"),
            "duration": duration(took) if took is not None else "", "message": step.get("message") or ""}


def migration_summary(migration: Obj, now: float) -> dict[str, Any]:
    meta, spec, status = migration.get("metadata") or {}, migration.get("spec") or {}, migration.get("status") or {}
    started = parse_time(status.get("startedAt"))
    backup = status.get("backup") or {}
    return {
        "name": meta.get("name"),
        "from": status.get("fromVersion") or "?",
        "to": status.get("toVersion") or spec.get("targetVersion"),
        "phase": status.get("phase") or "Pending",
        "dryRun": bool(spec.get("dryRun")),
        "path": list(status.get("path") or []),
        "age": duration(now - started) if started else "",
        "message": status.get("message") or "",
        "rollbackRequested": bool((spec.get("rollback") or {}).get("requested")),
        "steps": [step_summary(s, now) for s in status.get("steps") or []],
        "backup": {"location": backup.get("location"), "completedAt": backup.get("completedAt"),
                   "bytes": sum(int(a.get("bytes") or 0) for a in backup.get("artifacts") or [])} if backup else None,
    }


def backup_summary(backup: Obj, now: float) -> dict[str, Any]:
    """A CoaiBackup; its age counts from its completion (a running one's from its creation)."""
    meta, spec, status = backup.get("metadata") or {}, backup.get("spec") or {}, backup.get("status") or {}
    since = parse_time(status.get("completionTime")) or parse_time(meta.get("creationTimestamp"))
    total = status.get("bytes")
    if total is None and status.get("artifacts"):
        total = sum(int(a.get("bytes") or 0) for a in status["artifacts"])
    return {"name": meta.get("name"), "source": "CoaiBackup", "phase": status.get("phase") or "Pending",
            "bytes": total, "age": duration(now - since) if since else "-", "where": status.get("where") or "",
            "pinned": bool(spec.get("pinned")), "pinnedBy": _owning_migration(meta),
            "verified": status.get("verified"), "message": status.get("message") or ""}


def _owning_migration(meta: Mapping[str, Any]) -> str:
    """A migration's own backup (its Backup step) is pinned by, and owned by, that CoaiMigration."""
    owners = meta.get("ownerReferences") or []
    return next((o.get("name") or "" for o in owners if o.get("kind") == "CoaiMigration"), "")


def pinned_text(b: Mapping[str, Any]) -> str:
    return f"by {b['pinnedBy']}" if b["pinnedBy"] else "yes" if b["pinned"] else ""


def render_backups(instance: str, backups: Sequence[Mapping[str, Any]] | None) -> str:
    if backups is None:
        return "no CoaiBackup resource in this cluster (install the operator's CRDs)\n"
    if not backups:
        return f"no CoaiBackup of {instance}; take one with: kubectl coai backup {instance}\n"
    rows = [("NAME", "PHASE", "SIZE", "AGE", "WHERE", "PINNED")] + [
        (b["name"], b["phase"], size(b["bytes"]), b["age"], b["where"] or "-", pinned_text(b)) for b in backups]
    return "\n".join(table(rows, indent="")) + "\n"


def render_backup(b: Mapping[str, Any]) -> str:
    """One line for a backup that was created or has finished."""
    if b["phase"] == "Completed":
        verified = ", verified" if b["verified"] else ""
        return f"CoaiBackup {b['name']}: Completed, {size(b['bytes'])} at {b['where'] or '?'}{verified}\n"
    return f"CoaiBackup {b['name']}: {b['phase']}{': ' + b['message'] if b['message'] else ''}\n"


def status_summary(instance: Obj, pods: Iterable[Obj], migration: Obj | None, backups: Sequence[Obj] | None,
                   migration_backups: Iterable[Obj], now: float) -> dict[str, Any]:
    meta, spec, status = instance.get("metadata") or {}, instance.get("spec") or {}, instance.get("status") or {}
    ready = _condition(status, "Ready")
    listed = [backup_summary(b, now) for b in backups or []]
    names = {b["name"] for b in listed}
    for m in migration_backups:
        b = migration_summary(m, now)["backup"]
        # A migration's backup is a CoaiBackup (status.backup.name), listed once as such.
        if b and b["completedAt"] and ((m.get("status") or {}).get("backup") or {}).get("name") not in names:
            listed.append({"name": m["metadata"]["name"], "source": "CoaiMigration", "phase": "Succeeded",
                           "bytes": b["bytes"], "age": duration(now - (parse_time(b["completedAt"]) or now))})
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "version": status.get("version") or "?",
        "desiredVersion": spec.get("version"),
        "phase": status.get("phase") or "Pending",
        "ready": {"status": ready.get("status", "Unknown"), "reason": ready.get("reason", ""),
                  "message": ready.get("message", "")},
        "endpoint": status.get("endpoint") or "",
        "readyReplicas": int(status.get("readyReplicas") or 0),
        "pods": [pod_summary(p, now) for p in pods],
        "migration": migration_summary(migration, now) if migration else None,
        "backups": listed,
        "backupsAvailable": backups is not None,
    }


def path_text(start: str, path: Sequence[str]) -> str:
    """1.8.0 -> 1.9.0 -> 2.0.0, from hop ids (1.8.0-to-1.9.0) or plain versions."""
    return " -> ".join([start, *(hop.rsplit("-to-", 1)[-1] for hop in path)])


def table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))] if rows else []
    return [indent + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def render_steps(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [(MARKS.get(s["phase"], "[ ]"), s["name"], s["phase"], s["duration"]) for s in steps]
    lines = []
    for line, step in zip(table(rows, indent="    "), steps, strict=True):
        lines.append(line)
        if step["phase"] == "Failed" and step["message"]:
            lines.append(f"        {step['message'].splitlines()[0][:200]}")
    return lines


def render_migration(m: Mapping[str, Any]) -> list[str]:
    done = sum(1 for s in m["steps"] if s["phase"] in ("Succeeded", "Skipped"))
    running = m["age"] and m["phase"] not in TERMINAL_PHASES
    head = (f"CoaiMigration {m['name']}: {m['from']} -> {m['to']}, {m['phase']}"
            f"{' (dry run)' if m['dryRun'] else ''}, {done}/{len(m['steps'])} steps"
            f"{', running ' + m['age'] if running else ''}")
    lines = [head]
    if m["path"]:
        lines.append(f"  Path:      {path_text(m['from'], m['path'])}")
    if m["message"]:
        lines.append(f"  Message:   {m['message']}")
    if m["rollbackRequested"]:
        lines.append("  Rollback:  requested")
    return lines + render_steps(m["steps"])


def render_status(s: Mapping[str, Any]) -> str:
    version = s["version"] + (f" (spec: {s['desiredVersion']})" if s["desiredVersion"] not in (None, s["version"])
                              else "")
    ready = s["ready"]
    lines = [f"CoaiInstance {s['namespace']}/{s['name']}",
             f"  Version:   {version}",
             f"  Phase:     {s['phase']} (Ready={ready['status']}{', ' + ready['reason'] if ready['reason'] else ''})"]
    if ready["message"]:
        lines.append(f"  Message:   {ready['message']}")
    if s["endpoint"]:
        lines.append(f"  Endpoint:  {s['endpoint']}")
    lines.append(f"Pods ({len(s['pods'])}):")
    if s["pods"]:
        lines += table([("NAME", "COMPONENT", "PHASE", "READY", "RESTARTS", "AGE")]
                       + [(p["name"], p["component"], p["phase"], p["ready"], str(p["restarts"]), p["age"])
                          for p in s["pods"]])
    else:
        lines.append("  none")
    if s["migration"]:
        lines += render_migration(s["migration"])
    else:
        lines.append("Migration: none")
    lines.append("Backups:" if s["backups"] else
                 "Backups: none" + ("" if s["backupsAvailable"] else " (no CoaiBackup resource in this cluster)"))
    if s["backups"]:
        lines += table([("NAME", "KIND", "PHASE", "SIZE", "AGE")]
                       + [(b["name"], b["source"], b["phase"], size(b["bytes"]), b["age"]) for b in s["backups"]])
    return "\n".join(lines) + "\n"


def render_plan(instance: str, plan: Mapping[str, Any]) -> str:
    lines = [f"Upgrade plan for CoaiInstance {instance}: {plan['from']} -> {plan['to']} (dry run: nothing created)",
             f"  Path:    {path_text(plan['from'], plan['path'])}",
             f"  Checks:  {', '.join(plan['checks']) or 'none'}"]
    lines += [f"  Warning: {w}" for w in plan["warnings"]]
    lines.append("  Steps:")
    lines += [f"    {i}. {step}" for i, step in enumerate(plan["steps"], 1)]
    return "\n".join(lines) + "\n"
