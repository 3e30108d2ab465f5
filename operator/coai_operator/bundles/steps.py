"""A hop's steps: what each kind needs, checked when the bundle is loaded (see README.md)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coai_operator.domain.errors import EngineError
from coai_operator.domain.sqlsplit import SqlSplitError, split_statements

STEP_KINDS = ("sql", "batched", "daily", "check")
_STEP_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# A daily step's `write`: the engine fills its VALUES tuple from a server-side table (datasteps.py).
VALUES_TUPLE = re.compile(r"\bVALUES\s*\(\s*%s(?:\s*,\s*%s)*\s*\)", re.IGNORECASE)


class BundleError(EngineError):
    reason = "InvalidBundle"


@dataclass(frozen=True)
class Step:
    id: str
    kind: str  # sql | batched | daily | check
    sql: str
    table: str | None = None  # batched: the table whose primary key is walked
    key: str | None = None
    write: str = ""  # daily: the INSERT ... VALUES (%s, ...) ON DUPLICATE KEY UPDATE that stores the rows
    message: str = ""  # check: shown when the count is not 0; may use {count}
    origin: str = "bundle"  # where the SQL came from, for logs

    def statements(self) -> list[str]:
        return split_statements(self.sql) if self.kind == "sql" else [self.sql.strip()]

    def content(self) -> dict[str, Any]:
        """What the checksum covers (not `origin`: moving a file does not change a step)."""
        body = {"id": self.id, "kind": self.kind, "sql": self.sql.strip(), "table": self.table, "key": self.key}
        return {**body, "write": self.write.strip()} if self.write else body


def load_step(raw: Mapping[str, Any], where: str, read_package_text: Callable[[str], str]) -> Step:
    step_id = str(raw.get("id", ""))
    if not _STEP_ID.match(step_id):
        raise BundleError(f"{where}: step id {step_id!r} must match [a-z0-9][a-z0-9_-]*")
    kind = str(raw.get("kind", "sql"))
    if kind not in STEP_KINDS:
        raise BundleError(f"{where} step {step_id}: kind must be one of {', '.join(STEP_KINDS)}")
    if "file" in raw:
        sql, origin = read_package_text(str(raw["file"])), f"bundle:{raw['file']}"
    else:
        sql, origin = str(raw.get("sql", "")), "bundle"
    step = Step(
        id=step_id,
        kind=kind,
        sql=sql,
        table=raw.get("table"),
        key=raw.get("key"),
        write=str(raw.get("write", "")),
        message=str(raw.get("message", "")),
        origin=origin,
    )
    validate_step(step, where)
    return step


def validate_step(step: Step, where: str) -> None:
    label = f"{where} step {step.id}"
    if not step.sql.strip():
        raise BundleError(f"{label}: no SQL")
    try:
        statements = split_statements(step.sql)
    except SqlSplitError as exc:
        raise BundleError(f"{label}: {exc}") from exc
    if not statements:
        raise BundleError(f"{label}: no SQL statement (only comments)")
    if step.kind == "batched":
        if not (step.table and step.key and _IDENT.match(step.table) and _IDENT.match(step.key)):
            raise BundleError(f"{label}: a batched step needs `table` and `key` (plain identifiers)")
        if "%(lo)s" not in step.sql or "%(hi)s" not in step.sql:
            raise BundleError(f"{label}: a batched statement must bound itself with %(lo)s and %(hi)s")
    if step.kind == "daily":
        _validate_daily_write(step, label)
    elif step.write:
        raise BundleError(f"{label}: only a daily step has `write`")
    if step.kind in ("batched", "daily", "check") and len(statements) != 1:
        raise BundleError(f"{label}: a {step.kind} step holds exactly one statement")


def _validate_daily_write(step: Step, label: str) -> None:
    try:
        writes = split_statements(step.write)
    except SqlSplitError as exc:
        raise BundleError(f"{label} write: {exc}") from exc
    text = " ".join(step.write.split()).upper()
    if len(writes) != 1 or not text.startswith("INSERT") or len(VALUES_TUPLE.findall(step.write)) != 1:
        raise BundleError(f"{label}: a daily step's `write` is one INSERT ... VALUES (%s, ...) statement")
    if "ON DUPLICATE KEY UPDATE" not in text:
        raise BundleError(f"{label}: a daily step's `write` must set values ON DUPLICATE KEY UPDATE"
                          " (a re-run after a crash writes a day again)")
