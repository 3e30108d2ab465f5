"""`coai-operator engine <command>`: one safe, resumable step per command.

Every command logs to stderr and ends with exactly one JSON line on stdout,
`{"command": ..., "ok": true|false, ...}`, and exit code 0 (ok) or 1 (failed). The operator reads
that line from the Job's log; a person can read it too.

Each command lives in its own module exposing `add_arguments(parser)` and `run(args) -> dict`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import pymysql

from coai_operator.domain.errors import EngineError
from coai_operator.engine import testhooks
from coai_operator.engine.dbconfig import ConfigError

COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("coai_operator.engine.plan", "show the upgrade path from the database's version"),
    "backup": ("coai_operator.engine.backup", "dump database + archive storage, write a verified manifest"),
    "restore": ("coai_operator.engine.restore", "verify a backup's checksums, then restore it"),
    "catalog": ("coai_operator.engine.catalog", "list the backups at a location, or --delete one"),
    "env-export": ("coai_operator.engine.envcopy", "write a backup's env ConfigMap and Secret copies as manifests"),
    "import": ("coai_operator.engine.importer", "import a plain mysqldump file and a volume tar"),
    "migrate": ("coai_operator.engine.migrate", "apply each pending schema/data hop"),
    "migrate-real": ("coai_operator.engine.realmigrate", "real 3.x/4.x line: apply upstream's missing SQL fixes"),
    "admin-password": ("coai_operator.engine.adminpw", "set the real app's root password from the environment"),
    "migrate-storage": ("coai_operator.engine.storage", "re-lay files out as 2.0 hash names (or --undo)"),
    "validate": ("coai_operator.engine.validate", "check database, health, chat, files, data integrity"),
    "seed-data": ("coai_operator.engine.seed", "generate a realistic dataset for a version"),
}

log = logging.getLogger("coai_operator.engine")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coai-operator engine", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module_name).add_arguments(cmd)
        cmd.set_defaults(module=module_name)
    return parser


# Kubernetes keeps at most 4096 bytes of a termination message.
RESULT_FILE_LIMIT = 4096
ESSENTIAL_KEYS = ("command", "ok", "reason", "error", "location", "artifacts", "rowCounts", "current", "target",
                  "path", "applied", "checks", "failed", "verify", "encrypted", "deleted")


def emit(result: dict[str, Any]) -> None:
    """The final JSON line on stdout, and in $COAI_RESULT_FILE (the Job's termination message)."""
    line = json.dumps(result, sort_keys=True, default=str)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    result_file = os.environ.get("COAI_RESULT_FILE")
    if not result_file:
        return
    if len(line.encode()) > RESULT_FILE_LIMIT:
        line = json.dumps({k: result[k] for k in ESSENTIAL_KEYS if k in result} | {"truncated": True},
                          sort_keys=True, default=str)
    with contextlib.suppress(OSError), open(result_file, "w", encoding="utf-8") as out:
        out.write(line[-RESULT_FILE_LIMIT:] + "\n")


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, pymysql.err.OperationalError) and exc.args:
        code, text = exc.args[0], (exc.args[1] if len(exc.args) > 1 else "")
        return f"database error {code}: {text}".splitlines()[0]
    return (str(exc) or type(exc).__name__).splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if injected := testhooks.injected_failure():
            raise EngineError(f"{injected} ({testhooks.FAIL}, a test hook)")
        result = importlib.import_module(args.module).run(args)
    except (EngineError, ConfigError, pymysql.err.MySQLError, OSError) as exc:
        reason = getattr(exc, "reason", "ConfigError" if isinstance(exc, ConfigError) else "Error")
        message = _one_line(exc)
        log.error("%s failed: %s", args.command, message)
        details = getattr(exc, "details", None) or {}
        emit({**details, "command": args.command, "ok": False, "reason": reason, "error": message})
        return 1
    emit({"command": args.command, "ok": True, **(result or {})})
    return 0
