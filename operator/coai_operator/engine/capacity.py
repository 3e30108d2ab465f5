"""Preflight capacity check (the guide's "Check System Requirements") before a backup to a volume.

The database size comes from information_schema (data + index length of every table), the file
trees from a walk. The backup must fit in the destination's free space in the worst case
(incompressible data), so the check compares the raw sizes with statvfs of the destination. An
object store has no free-space notion: the check is skipped there. Refused with both numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pymysql

from coai_operator.engine.archive import tree_stats
from coai_operator.engine.errors import BackupError


class InsufficientSpaceError(BackupError):
    reason = "InsufficientSpace"


def database_bytes(conn: pymysql.Connection, schema: str) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = %s", (schema,))
        return int(cur.fetchone()[0])


def free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def check(destination: Path, db_bytes: int, trees: list[Path]) -> dict[str, int]:
    files = sum(tree_stats(t).bytes for t in trees if t.is_dir())
    need, free = db_bytes + files, free_bytes(destination)
    if need > free:
        err = InsufficientSpaceError(
            f"not enough space at {destination}: the database is {_human(db_bytes)} and the files "
            f"{_human(files)} ({_human(need)} in the worst case), but only {_human(free)} is free; "
            "grow the backup volume or back up to object storage")
        err.details = {"needBytes": need, "freeBytes": free}  # type: ignore[attr-defined]
        raise err
    return {"databaseBytes": db_bytes, "fileBytes": files, "freeBytes": free}
