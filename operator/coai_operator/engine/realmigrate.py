"""`engine migrate-real`: the database side of an upgrade on the real 3.x/4.x line.

The app migrates its own schema when the new version starts, so this only applies upstream's
two never-applied fixes ("3.6": subscription.level, "3.8": auth.email / auth.is_banned) where
the live schema lacks them, under the same named lock as `engine migrate`. `--plan-only` reports
the path and the pending fixes without writing (the Preflight step).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from coai_operator.bundles.realline import apply_fixes, load_real_line, pending, plan_real
from coai_operator.engine.dbconfig import DbConfig, connect
from coai_operator.engine.runner import named_lock

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="target version, e.g. 4.25.0")
    parser.add_argument("--from", dest="from_version", required=True, metavar="X.Y.Z",
                        help="the version the instance runs (the real app keeps no schema version)")
    parser.add_argument("--plan-only", action="store_true", help="report the pending fixes, change nothing")
    parser.add_argument("--lock-timeout", type=int, default=60,
                        help="seconds to wait for another migration of this database (default 60)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = plan_real(args.from_version, args.target)
    cfg = DbConfig.from_env()
    line = load_real_line()
    conn = connect(cfg, autocommit=False)
    try:
        result: dict[str, Any] = {"database": cfg.describe(), **plan.to_dict()}
        if args.plan_only:
            result["pending"] = [fix.id for fix in line.fixes if pending(conn, cfg.database, fix)]
            return result
        with named_lock(conn, cfg.database, args.lock_timeout):
            result["applied"] = apply_fixes(conn, cfg.database, line)
    finally:
        conn.close()
    for fix in result["applied"]:
        log.info("applied %s (%s)", fix["id"], fix["reason"])
    if not result["applied"]:
        log.info("no upstream fix pending on %s", cfg.describe())
    return result
