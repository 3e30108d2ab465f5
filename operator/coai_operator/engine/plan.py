"""`engine plan`: the upgrade path from the database's schema version to a target (read-only).

The current version comes from `--from`, else `schema_migrations`, else inspection of the
tables, else `--assume-version`. Nothing is written: a plan works with read-only credentials.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from coai_operator.bundles import Bundle, load_bundle
from coai_operator.domain.errors import PlanError
from coai_operator.domain.versions import Plan, UnknownVersionError, Version, plan_path
from coai_operator.engine.dbconfig import DbConfig, connect
from coai_operator.engine.schema_state import SchemaState, detect_version, read_state

log = logging.getLogger(__name__)

SOURCE_FROM = "--from"
SOURCE_TRACKED = "schema_migrations"
SOURCE_INSPECTED = "inspection"
SOURCE_ASSUMED = "--assume-version"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="target version, e.g. 2.0.0")
    parser.add_argument("--from", dest="from_version", metavar="X.Y.Z",
                        help="plan from this version without reading the database")
    parser.add_argument("--assume-version", metavar="X.Y.Z",
                        help="the schema version when schema_migrations has no rows (an empty database gets"
                             " this version's schema created by migrate)")
    parser.add_argument("--bundle-dir", metavar="DIR",
                        help="directory of override/extra SQL steps (see bundles/README.md)")
    parser.add_argument("--direct", action="store_true",
                        help="require the target line's 'upgrade from' to hold for the current version itself")


def resolve_current(state: SchemaState, bundle: Bundle, assume_version: str | None = None) -> tuple[Version, str]:
    """The database's schema version and where it was read from; PlanError when unknowable."""
    recorded = state.recorded_version()
    if recorded is not None:
        return recorded, SOURCE_TRACKED
    assumed = Version.parse(assume_version) if assume_version else None
    if state.empty or state.installing:
        if assumed is None:
            what = "is empty" if state.empty else "holds an interrupted schema install"
            raise PlanError(
                f"database {state.database} {what}: pass --assume-version X.Y.Z to create that version's"
                " schema, or let the app create its tables first"
            )
        return assumed, SOURCE_ASSUMED
    detected = detect_version(state.objects, bundle.markers())
    if detected is not None:
        if assumed is not None and assumed.line != detected.line:
            raise PlanError(f"--assume-version {assumed} contradicts the schema, which looks like {detected}")
        return detected, SOURCE_INSPECTED
    if assumed is not None:
        return assumed, SOURCE_ASSUMED
    sample = ", ".join(sorted(state.tables)[:6])
    raise UnknownVersionError(
        f"database {state.database} has tables ({sample}) but no schema_migrations rows and no schema this"
        " bundle knows; pass --assume-version X.Y.Z if you know its version"
    )


def describe_plan(plan: Plan, bundle: Bundle) -> dict[str, Any]:
    hops = []
    for hop in plan.hops:
        hb = bundle.hop(hop)
        hops.append({
            "id": hop.id,
            "from": str(hop.source),
            "to": str(hop.target),
            "description": hb.description,
            "checksum": hb.checksum,
            "steps": [step.id for step in hb.steps],
        })
    return {
        **plan.to_dict(),
        "hops": hops,
        "steps": [name for hop in plan.hops for name in bundle.hop(hop).step_names()],
        "config": [rules.to_dict() for rules in bundle.config_rules(plan.hops)],
    }


def drift_warnings(state: SchemaState, bundle: Bundle) -> list[str]:
    """Recorded hops whose checksum differs from this bundle's (applied with another bundle)."""
    checksums = {str(hb.version): hb.checksum for hb in bundle.hops.values()}
    return [
        f"hop to {row.version} was applied with checksum {row.checksum[:12]},"
        f" this bundle has {checksums[row.version][:12]}"
        for row in state.applied
        if row.checksum and row.version in checksums and row.checksum != checksums[row.version]
    ]


def interrupted_warnings(state: SchemaState, plan: Plan) -> list[str]:
    in_path = {str(hop.target) for hop in plan.hops}
    return [
        f"hop to {version} was interrupted (steps done: {', '.join(steps) or 'none'}); run migrate --target"
        f" {version} or newer to finish it, or restore the pre-migration backup"
        for version, steps in state.interrupted().items()
        if version not in in_path
    ]


def interrupted_steps(state: SchemaState, bundle: Bundle) -> dict[str, list[str]]:
    """Interrupted hops with their finished steps, in the hop's step order."""
    order = {str(hb.version): [s.id for s in hb.steps] for hb in bundle.hops.values()}
    order[str(bundle.baseline.version)] = ["schema"]
    result: dict[str, list[str]] = {}
    for version, done in state.interrupted().items():
        known = order.get(version, [])
        result[version] = [s for s in known if s in done] + sorted(s for s in done if s not in known)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    bundle = load_bundle(args.bundle_dir)
    target = Version.parse(args.target)
    if args.from_version:
        plan = plan_path(args.from_version, target, bundle.table, direct=args.direct)
        return {"source": SOURCE_FROM, **describe_plan(plan, bundle)}

    cfg = DbConfig.from_env()
    log.info("reading schema state of %s", cfg.describe())
    conn = connect(cfg)
    try:
        state = read_state(conn, cfg.database)
    finally:
        conn.close()
    current, source = resolve_current(state, bundle, args.assume_version)
    plan = plan_path(current, target, bundle.table, direct=args.direct)
    result = {"source": source, **describe_plan(plan, bundle)}
    result["warnings"] += drift_warnings(state, bundle) + interrupted_warnings(state, plan)
    result["interrupted"] = interrupted_steps(state, bundle)
    if state.empty or state.installing:
        result["create_schema"] = str(current)
    log.info("plan %s -> %s: %s", current, target, ", ".join(result["path"]) or "nothing to do")
    return result
