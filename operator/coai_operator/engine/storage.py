"""`engine migrate-storage`: move files to the 2.0 layout (content-hash names), or `--undo` it.

2.0 layout under the storage root: `uploads/ processed/ cache/ temp/`. Each file a `files` row
references (`files.file_path`, relative to the root) is COPIED to `uploads/<sha256>.<ext>` and
the row updated; originals are never deleted, so the old image keeps working until the new one
rolls out, and undo is cheap.

Why the CONTENT hash, not the seed script's hash of the file NAME: two users uploading
`report.pdf` would map to the same name and overwrite each other (and the seed's
`UPDATE ... WHERE original_name=...` rewrites every row with that name). Content hashes only
collide when the bytes are identical, in which case sharing one copy is correct.

Crash safety / resumability:
- a batch's copies are written to `temp/.coai-migrate-*.tmp`, made durable together at the end
  of the batch (one syncfs(2), see fsutil.make_durable), then renamed to their final names and
  the directory fsynced, so a final name always holds complete content; an existing final name
  is simply reused;
- per batch, after the copies: one transaction inserts the mapping rows into
  `storage_migration_map(file_id PK, old_path, new_path, sha256, migrated_at)` and updates
  `files.file_path` from it in one parameterized statement (guarded by `file_path = old_path`);
- rows whose path already equals their mapping's new_path are skipped; a crash anywhere is
  fixed by running the command again.
The mapping lives in the database (so it is part of later backups and changes atomically with
the rows). `--undo` sets every still-migrated row back to its old_path, deletes copies no row
references any more, then drops the mapping table.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from coai_operator.domain.errors import MigrationError
from coai_operator.engine import testhooks
from coai_operator.engine.dbconfig import DbConfig
from coai_operator.engine.dbtools import open_connection
from coai_operator.engine.fsutil import CHUNK
from coai_operator.engine.storage_files import TMP_PREFIX, Sources, Staged, resolve_inside

log = logging.getLogger(__name__)

FILES = "files"
MAP_TABLE = "storage_migration_map"
LAYOUT_DIRS = ("uploads", "processed", "cache", "temp")
HASHED_PATH = re.compile(r"^uploads/[0-9a-f]{64}(\.[a-z0-9]{1,16})?$")
_EXT = re.compile(r"^[A-Za-z0-9]{1,16}$")
_ID_TYPE = re.compile(r"^((tiny|small|medium|big)?int(\(\d+\))?( unsigned)?|(var)?char\(\d+\)|binary\(16\)|uuid)$")
SAMPLE = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", required=True, type=Path, help="the app's storage root (/storage)")
    parser.add_argument("--undo", action="store_true", help="restore the original paths and remove the copies")
    # Each batch costs a syncfs, a directory fsync and a commit, and its transaction starts only
    # after its copies, so a larger batch holds no lock longer.
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per transaction (default 1000)")
    parser.add_argument("--strict", action="store_true",
                        help="fail, changing nothing, if any referenced file is missing or its path is invalid")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.batch_size < 1:
        raise MigrationError("--batch-size must be at least 1")
    root: Path = args.storage
    if not root.is_dir():
        raise MigrationError(f"storage path {root} is not a directory")
    cfg = DbConfig.from_env()
    conn = open_connection(cfg, MigrationError)
    try:
        id_type = files_id_type(conn, cfg.database)
        if args.undo:
            return undo_storage(conn, cfg.database, root, args.batch_size)
        return migrate_storage(conn, cfg.database, root, id_type, args.batch_size, strict=args.strict)
    finally:
        conn.close()


def files_id_type(conn: pymysql.Connection, schema: str) -> str:
    """The column type of files.id (mirrored by the mapping table); checks the columns we need."""
    with conn.cursor() as cur:
        cur.execute("SELECT COLUMN_NAME, COLUMN_TYPE, COLUMN_KEY FROM information_schema.COLUMNS"
                    " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s", (schema, FILES))
        columns = {name: (ctype, key) for name, ctype, key in cur.fetchall()}
    if not columns:
        raise MigrationError(f"database {schema!r} has no {FILES} table: nothing to migrate")
    if "file_path" not in columns or "id" not in columns:
        raise MigrationError(f"{FILES} needs columns id and file_path; it has {', '.join(sorted(columns))}")
    id_type, key = columns["id"]
    if key != "PRI" or not _ID_TYPE.match(str(id_type).lower()):
        raise MigrationError(f"{FILES}.id must be an integer or short string primary key (is {id_type} {key})")
    return str(id_type).lower()


def _map_exists(conn: pymysql.Connection, schema: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                    (schema, MAP_TABLE))
        return cur.fetchone() is not None


def _ensure_map(conn: pymysql.Connection, id_type: str) -> None:
    # id_type comes from information_schema and matched _ID_TYPE above: safe to place in DDL.
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {MAP_TABLE} ("
            f" file_id {id_type} NOT NULL PRIMARY KEY,"
            " old_path TEXT NOT NULL,"
            " new_path VARCHAR(255) NOT NULL,"
            " sha256 CHAR(64) NOT NULL,"
            " migrated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,"
            " KEY new_path (new_path)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        )


def extension(rel: str) -> str:
    suffix = os.path.splitext(os.path.basename(rel))[1][1:]
    return "." + suffix.lower() if _EXT.match(suffix) else ""


@dataclass
class Report:
    counts: Counter[str] = field(default_factory=Counter)
    missing: list[Any] = field(default_factory=list)
    invalid: list[Any] = field(default_factory=list)

    def problem(self, kind: str, file_id: Any) -> None:
        self.counts[kind] += 1
        bucket = self.missing if kind == "missing" else self.invalid
        if len(bucket) < SAMPLE:
            bucket.append(file_id)


def _batches(conn: pymysql.Connection, query_first: str, query_next: str, size: int) -> Iterable[Sequence[tuple]]:
    """Keyset pagination on the first column."""
    last: Any = None
    while True:
        with conn.cursor() as cur:
            if last is None:
                cur.execute(query_first, (size,))
            else:
                cur.execute(query_next, (last, size))
            rows = cur.fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


_PENDING_FIRST = (f"SELECT f.id, f.file_path, m.old_path, m.new_path FROM {FILES} f"
                  f" LEFT JOIN {MAP_TABLE} m ON m.file_id = f.id ORDER BY f.id LIMIT %s")
_PENDING_NEXT = (f"SELECT f.id, f.file_path, m.old_path, m.new_path FROM {FILES} f"
                 f" LEFT JOIN {MAP_TABLE} m ON m.file_id = f.id WHERE f.id > %s ORDER BY f.id LIMIT %s")


def _classify(sources: Sources, path: str | None, new_path: str | None, report: Report, file_id: Any) -> str | None:
    """The source file to migrate for one row, or None (already done, or a reported problem)."""
    if new_path is not None and path == new_path:
        report.counts["alreadyMigrated"] += 1
        return None
    if path is not None and HASHED_PATH.match(path):
        report.counts["alreadyInLayout"] += 1
        return None
    located = sources.locate(path)
    if located is None:
        report.problem("invalid", file_id)
        return None
    source, is_file = located
    if not is_file:
        report.problem("missing", file_id)
        return None
    return source


def _precheck(conn: pymysql.Connection, root: Path, batch_size: int, map_exists: bool) -> Report:
    report = Report()
    sources = Sources(root)
    first = _PENDING_FIRST if map_exists else f"SELECT id, file_path, NULL, NULL FROM {FILES} ORDER BY id LIMIT %s"
    nxt = _PENDING_NEXT if map_exists else f"SELECT id, file_path, NULL, NULL FROM {FILES} WHERE id > %s " \
                                           "ORDER BY id LIMIT %s"
    for rows in _batches(conn, first, nxt, batch_size):
        for file_id, path, _old, new in rows:
            _classify(sources, path, new, report, file_id)
    return report


def migrate_storage(conn: pymysql.Connection, schema: str, root: Path, id_type: str, batch_size: int,
                    *, strict: bool = False) -> dict[str, Any]:
    if strict:
        pre = _precheck(conn, root, batch_size, _map_exists(conn, schema))
        if pre.counts["missing"] or pre.counts["invalid"]:
            raise MigrationError(
                f"--strict: {pre.counts['missing']} referenced files are missing and {pre.counts['invalid']} paths "
                f"are invalid (file ids {(pre.missing + pre.invalid)[:5]}); nothing was changed")
    for name in LAYOUT_DIRS:
        (root / name).mkdir(exist_ok=True)
    for stale in (root / "temp").glob(f"{TMP_PREFIX}*.tmp"):
        stale.unlink(missing_ok=True)
    _ensure_map(conn, id_type)

    report = Report()
    sources = Sources(root)
    copied_total = 0
    for rows in _batches(conn, _PENDING_FIRST, _PENDING_NEXT, batch_size):
        pending: list[tuple[Any, str, str, str]] = []
        staged = Staged(root)
        started = time.monotonic()
        try:
            for file_id, path, _old, new in rows:
                source = _classify(sources, path, new, report, file_id)
                if source is None:
                    continue
                digest, new_rel, copied = staged.copy(source, extension(path))
                report.counts["copied" if copied else "deduplicated"] += 1
                pending.append((file_id, path, new_rel, digest))
                copied_total += 1
                testhooks.crash_point(copied_total)
            copied_at = time.monotonic()
            staged.commit_files()
            durable_at = time.monotonic()
        except BaseException:
            staged.discard()
            raise
        if not pending:
            continue
        conn.begin()
        try:
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {MAP_TABLE} (file_id, old_path, new_path, sha256) VALUES (%s, %s, %s, %s)"
                    " ON DUPLICATE KEY UPDATE old_path = VALUES(old_path), new_path = VALUES(new_path),"
                    " sha256 = VALUES(sha256), migrated_at = CURRENT_TIMESTAMP",
                    [(fid, old, new, digest) for fid, old, new, digest in pending],
                )
                # One statement for the batch (executemany sends an UPDATE per row); the join's
                # `file_path = old_path` is the guard against a row changed since it was read.
                cur.execute(
                    f"UPDATE {FILES} f JOIN {MAP_TABLE} m ON m.file_id = f.id AND f.file_path = m.old_path"
                    f" SET f.file_path = m.new_path WHERE m.file_id IN ({', '.join(['%s'] * len(pending))})",
                    [fid for fid, _, _, _ in pending],
                )
                report.counts["migrated"] += cur.rowcount
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        # The phases' times, so a stalled batch shows where it stalled (see docs/benchmarks.md).
        log.info("migrated %d files (batch up to id %s; copies %.2fs, fsyncs+renames %.2fs, database %.2fs)",
                 len(pending), pending[-1][0], copied_at - started, durable_at - copied_at,
                 time.monotonic() - durable_at)

    unreferenced = _unreferenced_files(conn, root)
    if report.counts["missing"] or report.counts["invalid"]:
        log.warning("%d referenced files are missing, %d paths invalid (ids %s)", report.counts["missing"],
                    report.counts["invalid"], (report.missing + report.invalid)[:5])
    return {
        "storage": str(root),
        "mode": "migrate",
        "mapTable": MAP_TABLE,
        **{k: report.counts[k] for k in ("migrated", "copied", "deduplicated", "alreadyMigrated", "alreadyInLayout")},
        "missing": {"count": report.counts["missing"], "ids": report.missing},
        "invalid": {"count": report.counts["invalid"], "ids": report.invalid},
        "unreferencedFiles": unreferenced,
    }


def _referenced_paths(conn: pymysql.Connection) -> set[str]:
    with conn.cursor(pymysql.cursors.SSCursor) as cur:
        cur.execute(f"SELECT file_path FROM {FILES} UNION SELECT old_path FROM {MAP_TABLE}")
        return {row[0] for row in cur if row[0] is not None}


def _regular_files(root: Path) -> Iterator[str]:
    """Relative names of the regular files under `root`, symlinks not followed; the entry types
    come with the directory listing, so no file is stat'ed (a fifth of a re-run's time)."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel)) as entries:
            for entry in entries:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append(name)
                elif entry.is_file(follow_symlinks=False):
                    yield name


def _unreferenced_files(conn: pymysql.Connection, root: Path) -> int:
    """Regular files under the root that no row references (left alone, only counted)."""
    referenced = {os.path.normpath(p) for p in _referenced_paths(conn)}
    return sum(1 for rel in _regular_files(root) if rel not in referenced and not rel.startswith("temp/"))


_MAP_FIRST = (f"SELECT m.file_id, m.old_path, m.new_path, f.file_path FROM {MAP_TABLE} m"
              f" LEFT JOIN {FILES} f ON f.id = m.file_id ORDER BY m.file_id LIMIT %s")
_MAP_NEXT = (f"SELECT m.file_id, m.old_path, m.new_path, f.file_path FROM {MAP_TABLE} m"
             f" LEFT JOIN {FILES} f ON f.id = m.file_id WHERE m.file_id > %s ORDER BY m.file_id LIMIT %s")


def _restore_original(root: Path, old_path: str, new_path: str) -> bool:
    """If an original has gone missing, put it back from its copy (atomic); True if it was needed."""
    original, copy = resolve_inside(root, old_path), resolve_inside(root, new_path)
    if original is None or original.exists() or copy is None or not copy.is_file():
        return False
    original.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".tmp", dir=original.parent)
    with copy.open("rb") as src, os.fdopen(fd, "wb") as out:
        while chunk := src.read(CHUNK):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    Path(tmp_name).replace(original)
    return True


def undo_storage(conn: pymysql.Connection, schema: str, root: Path, batch_size: int) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    if not _map_exists(conn, schema):
        return {"storage": str(root), "mode": "undo", "reverted": 0, "removedCopies": 0,
                "message": f"no {MAP_TABLE} table: nothing to undo"}
    for rows in _batches(conn, _MAP_FIRST, _MAP_NEXT, batch_size):
        revert = [(fid, old, new) for fid, old, new, current in rows if current == new]
        counts["changedSinceMigration"] += sum(1 for _, old, new, cur in rows if cur not in (new, old, None))
        for _, old, new in revert:
            counts["restoredOriginals"] += _restore_original(root, old, new)
        conn.begin()
        try:
            with conn.cursor() as cur:
                cur.executemany(f"UPDATE {FILES} SET file_path = %s WHERE id = %s AND file_path = %s",
                                [(old, fid, new) for fid, old, new in revert])
                counts["reverted"] += cur.rowcount if revert else 0
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        counts["removedCopies"] += _remove_unreferenced_copies(conn, root, {new for _, _, new, _ in rows})
        with conn.cursor() as cur:  # only after the copies are gone: a crash before this re-runs cleanly
            cur.executemany(f"DELETE FROM {MAP_TABLE} WHERE file_id = %s", [(row[0],) for row in rows])
    with conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {MAP_TABLE}")
        if cur.fetchone()[0] == 0:
            cur.execute(f"DROP TABLE {MAP_TABLE}")
    log.info("undo: %d rows reverted, %d copies removed", counts["reverted"], counts["removedCopies"])
    return {"storage": str(root), "mode": "undo",
            **{k: counts[k] for k in ("reverted", "removedCopies", "restoredOriginals", "changedSinceMigration")}}


def _remove_unreferenced_copies(conn: pymysql.Connection, root: Path, candidates: set[str]) -> int:
    if not candidates:
        return 0
    names = sorted(candidates)
    placeholders = ", ".join(["%s"] * len(names))
    with conn.cursor() as cur:
        cur.execute(f"SELECT DISTINCT file_path FROM {FILES} WHERE file_path IN ({placeholders})", names)
        still_used = {row[0] for row in cur.fetchall()}
    removed = 0
    for rel in names:
        if rel in still_used or not HASHED_PATH.match(rel):
            continue
        path = root / rel
        if path.is_file():
            path.unlink()
            removed += 1
    return removed
