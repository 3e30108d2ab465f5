"""The real CoAI line (3.x / 4.x, the public image): versions, paths and the upstream SQL fixes.

Unlike the guide's line (bundles/hops.yaml) the real app migrates its own schema at start and has
no schema table, so a path is only a list of measured version pairs, downgrades along the line are
allowed, and the only SQL of ours is upstream's two never-applied fixes, each guarded by a check
of the live schema (information_schema), which makes them idempotent without any bookkeeping.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from coai_operator.domain.errors import PlanError
from coai_operator.domain.versions import UnknownVersionError, Version

# Tags that name no fixed build: a rollback to them could deploy anything.
FLOATING_TAGS = ("latest", "stable")
FIRST_REAL_MAJOR = 3  # the guide's line is 1.x-2.x
FINGERPRINT_MAJOR = 4  # GET /userinfo exists from 4.x on


class FloatingTagError(PlanError):
    reason = "FloatingTag"


@dataclass(frozen=True)
class Fix:
    id: str
    description: str
    sql: str
    when_missing: str | None = None  # "table.column"
    when_default: Mapping[str, str] | None = None  # {column: "table.column", is: "<default>"}


@dataclass(frozen=True)
class RealLine:
    versions: tuple[Version, ...]
    fixes: tuple[Fix, ...]

    def known(self) -> str:
        return ", ".join(str(v) for v in self.versions)


@cache
def load_real_line() -> RealLine:
    data = yaml.safe_load(resources.files(__package__).joinpath("real-line.yaml").read_text(encoding="utf-8"))
    versions = tuple(sorted(Version.parse(str(row["version"])) for row in data["versions"]))
    fixes = tuple(Fix(id=str(f["id"]), description=str(f.get("description", "")), sql=str(f["sql"]).strip(),
                      when_missing=f.get("when_missing"), when_default=f.get("when_default"))
                  for f in data.get("fixes") or [])
    return RealLine(versions=versions, fixes=fixes)


def check_pinned(version: str, field: str) -> None:
    if str(version).strip().lower() in FLOATING_TAGS:
        raise FloatingTagError(f"{field} {version!r} is a floating tag: it moves, so neither the upgrade nor a "
                               "rollback would know what it deploys; pin a version such as 4.25.0")


def is_real(version: str | Version) -> bool:
    """Whether `version` belongs to the real line (3.x and later) rather than the guide's."""
    try:
        return Version.parse(str(version)).major >= FIRST_REAL_MAJOR
    except PlanError:
        return False


def has_userinfo(version: str | Version) -> bool:
    """The version fingerprint: `GET /userinfo` is 404 on 3.x and answers on 4.x."""
    return Version.parse(str(version)).major >= FINGERPRINT_MAJOR


@dataclass(frozen=True)
class RealPlan:
    current: Version
    target: Version
    hops: tuple[str, ...]
    downgrade: bool

    def to_dict(self) -> dict[str, Any]:
        return {"current": str(self.current), "target": str(self.target), "path": list(self.hops),
                "downgrade": self.downgrade, "noop": not self.hops, "line": "real"}


def plan_real(current: str, target: str, line: RealLine | None = None) -> RealPlan:
    """The consecutive version pairs between `current` and `target`, either direction."""
    line = line or load_real_line()
    check_pinned(target, "target version")
    check_pinned(current, "current version")
    cur, tgt = Version.parse(current), Version.parse(target)
    if is_real(cur) != is_real(tgt):
        guide, real = (cur, tgt) if is_real(tgt) else (tgt, cur)
        raise UnknownVersionError(f"{cur} -> {tgt}: there is no migration between the guide's 1.x-2.x line "
                                  f"({guide}) and the real app's 3.x/4.x line ({real})")
    for role, v in (("current", cur), ("target", tgt)):
        if v not in line.versions:
            raise UnknownVersionError(f"{role} version {v} is not a known version of the real line "
                                      f"(known: {line.known()})")
    i, j = line.versions.index(cur), line.versions.index(tgt)
    step = 1 if j >= i else -1
    chain = line.versions[i:j + 1] if step == 1 else line.versions[j:i + 1][::-1]
    hops = tuple(f"{a}-to-{b}" for a, b in itertools.pairwise(chain))
    return RealPlan(current=cur, target=tgt, hops=hops, downgrade=step < 0 and i != j)


# --- the fixes, against a live database ------------------------------------------------------

def _split(column: str) -> tuple[str, str]:
    table, _, name = column.partition(".")
    return table, name


def _column(conn: Any, database: str, column: str) -> dict[str, Any] | None:
    table, name = _split(column)
    with conn.cursor() as cur:
        cur.execute("SELECT COLUMN_DEFAULT FROM information_schema.COLUMNS "
                    "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND COLUMN_NAME = %s", (database, table, name))
        row = cur.fetchone()
    return None if row is None else {"default": None if row[0] is None else str(row[0]).strip("'")}


def _table_exists(conn: Any, database: str, table: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                    (database, table))
        return cur.fetchone() is not None


def pending(conn: Any, database: str, fix: Fix) -> str | None:
    """Why `fix` must run on this database (None: it must not). A table the app has not created
    yet is left to the app, which creates it with every column."""
    column = fix.when_missing or (fix.when_default or {}).get("column")
    if not column or not _table_exists(conn, database, _split(column)[0]):
        return None
    live = _column(conn, database, column)
    if fix.when_missing:
        return f"{column} is missing" if live is None else None
    assert fix.when_default is not None
    wanted = str(fix.when_default["is"])
    return f"{column} defaults to {wanted}" if live is not None and live["default"] == wanted else None


def apply_fixes(conn: Any, database: str, line: RealLine | None = None) -> list[dict[str, str]]:
    """Run every pending fix in order; returns what ran and why. Each is one DDL statement."""
    applied = []
    for fix in (line or load_real_line()).fixes:
        why = pending(conn, database, fix)
        if why is None:
            continue
        with conn.cursor() as cur:
            cur.execute(fix.sql)
        conn.commit()
        applied.append({"id": fix.id, "reason": why, "description": fix.description})
    return applied
