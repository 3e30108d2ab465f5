"""`engine migrate`: apply each pending hop's SQL and data steps, resumably, under a named lock.

Refusals (unknown version, downgrade, empty database without --assume-version) happen before
anything is written. Killed at any point and run again, it finishes the interrupted hop from its
last committed unit and ends in the same state as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from coai_operator.bundles import load_bundle
from coai_operator.domain.errors import MigrationError, PlanError
from coai_operator.domain.versions import Version, plan_path
from coai_operator.engine.dbconfig import DbConfig, connect
from coai_operator.engine.plan import (
    SOURCE_INSPECTED,
    SOURCE_TRACKED,
    drift_warnings,
    interrupted_warnings,
    resolve_current,
)
from coai_operator.engine.runner import DEFAULT_BATCH_SIZE, apply_hop, install_baseline, named_lock, record_version
from coai_operator.engine.schema_state import ensure_tracking, read_state

log = logging.getLogger(__name__)


class MigrationRefusedError(MigrationError):
    """The database's version or the requested path is not one we migrate."""

    reason = PlanError.reason


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="target version, e.g. 2.0.0")
    parser.add_argument("--bundle-dir", metavar="DIR",
                        help="directory of override/extra SQL steps (see bundles/README.md)")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                        help=f"rows per transaction in data steps (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--assume-version", metavar="X.Y.Z",
                        help="the schema version when schema_migrations has no rows; on an empty database,"
                             " that version's schema is created first")
    parser.add_argument("--lock-timeout", type=int, default=60,
                        help="seconds to wait for another migration of this database to finish (default 60)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    bundle = load_bundle(args.bundle_dir)
    try:
        target = Version.parse(args.target)
    except PlanError as exc:
        raise MigrationRefusedError(str(exc)) from exc
    cfg = DbConfig.from_env()
    log.info("migrating %s to %s", cfg.describe(), target)
    conn = connect(cfg, autocommit=False)
    try:
        with named_lock(conn, cfg.database, args.lock_timeout):
            state = read_state(conn, cfg.database)
            try:
                current, source = resolve_current(state, bundle, args.assume_version)
                plan = plan_path(current, target, bundle.table)
            except PlanError as exc:
                raise MigrationRefusedError(str(exc)) from exc
            warnings = [*plan.warnings, *drift_warnings(state, bundle), *interrupted_warnings(state, plan)]
            for warning in warnings:
                log.warning("%s", warning)
            result: dict[str, Any] = {
                "database": cfg.describe(),
                "from": str(current),
                "to": str(plan.schema_target),
                "target": str(target),
                "source": source,
                "path": [hop.id for hop in plan.hops],
                "noop": plan.noop,
                "warnings": warnings,
                "applied": [],
            }
            if plan.noop:
                log.info("already at %s: nothing to apply", current)
                return result

            ensure_tracking(conn)
            if state.empty or state.installing:
                install_baseline(conn, bundle.baseline)
                for hb in bundle.hops_to(current):
                    apply_hop(conn, hb, batch_size=args.batch_size)
                result["created_schema"] = str(plan.schema_current)
            elif source != SOURCE_TRACKED:
                how = "detected by inspection" if source == SOURCE_INSPECTED else "assumed (--assume-version)"
                record_version(conn, str(plan.schema_current), f"existing schema, {how}", None)
            for hop in plan.hops:
                result["applied"].append(apply_hop(conn, bundle.hop(hop), batch_size=args.batch_size).to_dict())
    finally:
        conn.close()
    result["seconds"] = round(time.monotonic() - started, 3)
    log.info("migrated %s from %s to %s in %.1fs", cfg.describe(), current, plan.schema_target, result["seconds"])
    return result
