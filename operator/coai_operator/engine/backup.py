"""`engine backup`: dump the database and archive /storage into DIR, verify, then write the manifest.

Layout of DIR: `database.sql.gz` (or `.zst`), `storage.tar.gz` (or `.zst`), `manifest.json`.
Every artifact is written to a temporary name and renamed when complete; after all artifacts
are re-read and verified (sha256, full decode, tar listing) the manifest is written, atomically
and last. So a DIR without manifest.json is never a backup, whatever a crash left behind.

Re-running into a DIR that already holds a complete backup re-verifies and reuses it (nothing
is overwritten: a retried Job never replaces a pre-migration backup with later data); pass
`--overwrite` to replace it. The same command exports post-migration data for a graceful
rollback: `backup --dir /backup/<name>/post-migration`.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql

from coai_operator.domain.errors import BackupError, EngineError
from coai_operator.engine import compress, configfile, testhooks
from coai_operator.engine.archive import TreeStats, scan_tar, write_tree_tar
from coai_operator.engine.dbconfig import DbConfig, option_file
from coai_operator.engine.dbtools import child_env, find_tool, finish_tool, open_connection
from coai_operator.engine.fsutil import CHUNK, atomic_output, fsync_dir, sha256_file
from coai_operator.engine.manifest import (
    CONFIG,
    DATABASE,
    MANIFEST_NAME,
    STORAGE,
    Artifact,
    Manifest,
    ManifestError,
    parse_include,
    read_manifest,
    write_manifest,
)
from coai_operator.engine.rowcounts import DumpRowCounter, count_rows, list_tables, schema_version

log = logging.getLogger(__name__)

DUMP_TOOLS = ("mariadb-dump", "mysqldump")
DUMP_OPTIONS = (
    "--single-transaction",  # one consistent InnoDB snapshot, no table locks held
    "--quick",
    "--routines",
    "--triggers",
    "--hex-blob",
    "--add-locks",  # LOCK/UNLOCK TABLES around each table's rows: the row counter relies on it
    "--no-tablespaces",
    "--default-character-set=utf8mb4",
    "--max-allowed-packet=1G",
)
DONE_MARKER = b"-- Dump completed"
KNOWN_ARTIFACTS = (
    *(f"{base}{suffix}" for base in ("database.sql", "storage.tar") for suffix in compress.SUFFIX.values()),
    configfile.FILE_NAME,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True, type=Path, help="backup directory (created), e.g. /backup/<migration>")
    parser.add_argument("--storage", type=Path, help="the app's storage root (/storage) to archive")
    parser.add_argument("--config", type=Path, help="the app's /config directory (config.yaml is copied)")
    parser.add_argument("--include", help="comma list of database,storage,config (default: database, plus "
                                          "storage / config when --storage / --config is given)")
    parser.add_argument("--label", default="", help="free text recorded in the manifest")
    parser.add_argument("--compression", default="gzip", choices=["gzip", "zstd", "auto"],
                        help="gzip (default, in-process) or zstd (needs the zstd binary); auto picks zstd if present")
    parser.add_argument("--level", type=int, help="compression level (default gzip 1, zstd 3: fast, see compress.py)")
    parser.add_argument("--skip-events", action="store_true", help="do not dump events (needs no EVENT privilege)")
    parser.add_argument("--overwrite", action="store_true", help="replace a complete backup already in --dir")


@dataclass
class BackupRequest:
    directory: Path
    include: list[str]
    storage: Path | None = None
    config: Path | None = None
    label: str = ""
    compression: str = compress.GZIP
    level: int | None = None
    events: bool = True
    overwrite: bool = False


def run(args: argparse.Namespace) -> dict[str, Any]:
    include = parse_include(args.include) or (
        [DATABASE] + ([STORAGE] if args.storage else []) + ([CONFIG] if args.config else []))
    request = BackupRequest(
        directory=args.dir, include=include, storage=args.storage, config=args.config, label=args.label,
        compression=compress.resolve(args.compression), level=args.level,
        events=not args.skip_events, overwrite=args.overwrite,
    )
    cfg = DbConfig.from_env() if DATABASE in include else None
    return create_backup(request, cfg)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_request(req: BackupRequest) -> None:
    if STORAGE in req.include:
        if req.storage is None:
            raise BackupError("--include storage needs --storage PATH")
        if not req.storage.is_dir():
            raise BackupError(f"storage path {req.storage} is not a directory")
        root, target = req.storage.resolve(), req.directory.resolve()
        if target == root or root in target.parents:
            raise BackupError(f"backup directory {req.directory} must not be inside the storage tree {req.storage}")


def _reuse_existing(req: BackupRequest) -> Manifest | None:
    """A complete backup already in DIR: verified and returned, unless --overwrite."""
    if not (req.directory / MANIFEST_NAME).exists():
        return None
    if req.overwrite:
        (req.directory / MANIFEST_NAME).unlink()  # from here on DIR is incomplete until the new manifest
        fsync_dir(req.directory)
        return None
    hint = "pass --overwrite to replace it, or use another --dir"
    try:
        existing = read_manifest(req.directory)
        _verify_artifacts(req.directory, existing, req.storage)
    except (ManifestError, BackupError) as exc:
        raise BackupError(f"{req.directory} holds a backup that does not verify ({exc}); {hint}") from exc
    if existing.include != req.include:
        raise BackupError(f"{req.directory} already holds a complete backup of {','.join(existing.include)}; {hint}")
    log.info("%s already holds a complete, verified backup from %s: reusing it", req.directory, existing.created_at)
    return existing


def _remove_leftovers(directory: Path) -> None:
    """Temporary files of an interrupted run, and artifacts of an older backup this one replaces
    (only called when DIR holds no manifest, i.e. nothing in it is a complete backup)."""
    for path in directory.iterdir():
        stale_tmp = path.name.startswith(".") and path.name.endswith(".tmp") and path.name[1:].startswith(
            ("database.sql", "storage.tar", configfile.FILE_NAME, MANIFEST_NAME))
        if stale_tmp or path.name in KNOWN_ARTIFACTS:
            path.unlink(missing_ok=True)


@dataclass
class DumpOutcome:
    artifact: Artifact
    row_counts: dict[str, int]
    tool: str
    raw_bytes: int
    seconds: float


def dump_database(cfg: DbConfig, tool: str, directory: Path, compression: str, level: int | None,
                  events: bool) -> DumpOutcome:
    """Stream mariadb-dump → row counter → compressor → DIR/database.sql.<gz|zst> (atomic)."""
    target = directory / f"database.sql{compress.SUFFIX[compression]}"
    counter = DumpRowCounter()
    raw_bytes, tail, started = 0, b"", time.monotonic()
    with option_file(cfg) as opts, tempfile.TemporaryFile() as err, atomic_output(target) as out:
        argv = [tool, f"--defaults-extra-file={opts}", *DUMP_OPTIONS, *(["--events"] if events else []), cfg.database]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=child_env())
        assert proc.stdout is not None
        try:
            with compress.compressed_writer(out, compression, level) as (sink, hashed):
                while chunk := proc.stdout.read(CHUNK):
                    if raw_bytes == 0:
                        testhooks.pause_client()
                    counter.feed(chunk)
                    sink.write(chunk)
                    raw_bytes += len(chunk)
                    tail = (tail + chunk)[-512:]
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finish_tool(proc, err, tool, BackupError)
        if DONE_MARKER not in tail:
            raise BackupError(f"{Path(tool).name} output ended without its completion marker: dump incomplete")
    seconds = time.monotonic() - started
    artifact = Artifact(target.name, DATABASE, compression, hashed.bytes, hashed.sha256)
    log.info("dumped %s: %d bytes raw → %d bytes %s in %.2fs (%.1f MB/s)", cfg.database, raw_bytes,
             hashed.bytes, compression, seconds, raw_bytes / max(seconds, 1e-6) / 1e6)
    return DumpOutcome(artifact, counter.finish(), Path(tool).name, raw_bytes, seconds)


def archive_storage(root: Path, directory: Path, compression: str, level: int | None) -> tuple[Artifact, TreeStats]:
    target = directory / f"storage.tar{compress.SUFFIX[compression]}"
    started = time.monotonic()
    with atomic_output(target) as out, compress.compressed_writer(out, compression, level) as (sink, hashed):
        stats = write_tree_tar(root, sink)
    log.info("archived %s: %d files, %d bytes → %d bytes in %.2fs", root, stats.file_count, stats.bytes,
             hashed.bytes, time.monotonic() - started)
    return Artifact(target.name, STORAGE, compression, hashed.bytes, hashed.sha256), stats


def _verify_artifacts(directory: Path, manifest: Manifest, storage_root: Path | None,
                      raw_bytes: int | None = None) -> None:
    """Re-read every artifact: size and sha256 as recorded, stream decodes to the end, tar lists."""
    for art in manifest.artifacts:
        path = directory / art.name
        if not path.is_file() or path.stat().st_size != art.bytes:
            raise BackupError(f"verification failed: {art.name} is missing or not {art.bytes} bytes")
        try:
            if art.kind == CONFIG:
                digest = sha256_file(path)
            elif art.kind == DATABASE:
                digest, decoded = compress.hash_and_decode(path, art.compression)
                if raw_bytes is not None and decoded != raw_bytes:
                    raise BackupError(f"verification failed: {art.name} decodes to {decoded} bytes, dumped {raw_bytes}")
            else:
                digest, stats = scan_tar(path, art.compression, storage_root or directory)
                if manifest.storage is not None and not stats.same_content(manifest.storage):
                    raise BackupError(f"verification failed: {art.name} lists {stats.to_dict()}, "
                                      f"archived {manifest.storage}")
        except (compress.CompressionError, OSError) as exc:
            raise BackupError(f"verification failed: {art.name}: {exc}") from exc
        if digest != art.sha256:
            raise BackupError(f"verification failed: {art.name} sha256 changed after it was written")


def backup_database(conn: pymysql.Connection, cfg: DbConfig, tool: str, req: BackupRequest,
                    manifest: Manifest) -> int:
    """Dump into DIR and fill the manifest's database fields and rowCounts; returns the raw dump size.

    `conn` starts a consistent snapshot just before the dump starts its own; COUNT(*) in it is the
    cross-check of the rows counted in the dump stream (see rowcounts.py)."""
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        server_version = str(cur.fetchone()[0])
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
    version = schema_version(conn, cfg.database)
    dump = dump_database(cfg, tool, req.directory, req.compression, req.level, req.events)
    snapshot = count_rows(conn, list_tables(conn, cfg.database))
    conn.rollback()
    changed = {
        t: {"dump": dump.row_counts.get(t), "snapshot": snapshot.get(t)}
        for t in sorted(set(dump.row_counts) | set(snapshot))
        if dump.row_counts.get(t) != snapshot.get(t)
    }
    if changed:
        log.warning("rows changed while the dump ran (recorded counts are the dump's): %s", changed)
    manifest.row_counts = dict(sorted(dump.row_counts.items()))
    manifest.database = {
        "name": cfg.database, "host": cfg.host, "serverVersion": server_version, "schemaVersion": version,
        "dumpTool": dump.tool, "rawBytes": dump.raw_bytes, "seconds": round(dump.seconds, 3),
        "rowCountSource": "dump", "concurrentChanges": changed,
    }
    manifest.artifacts.append(dump.artifact)
    return dump.raw_bytes


def create_backup(req: BackupRequest, cfg: DbConfig | None) -> dict[str, Any]:
    _check_request(req)
    conn: pymysql.Connection | None = None
    tool = ""
    if DATABASE in req.include:  # fail on a missing tool or bad credentials before touching DIR
        if cfg is None:
            raise EngineError("database backup needs MYSQL_* settings")
        tool = find_tool(DUMP_TOOLS, BackupError)
        conn = open_connection(cfg, BackupError)
    try:
        req.directory.mkdir(parents=True, exist_ok=True)
        existing = _reuse_existing(req)
        if existing is not None:
            return _result(req.directory, existing, reused=True)
        manifest = Manifest(created_at=_now(), label=req.label, include=list(req.include))
        _remove_leftovers(req.directory)
        raw_bytes: int | None = None
        if conn is not None and cfg is not None:
            raw_bytes = backup_database(conn, cfg, tool, req, manifest)
            testhooks.crash_point(1)
    finally:
        if conn is not None:
            conn.close()
    if STORAGE in req.include:
        assert req.storage is not None
        artifact, stats = archive_storage(req.storage, req.directory, req.compression, req.level)
        manifest.storage = {"path": str(req.storage), **stats.to_dict()}
        manifest.artifacts.append(artifact)
        testhooks.crash_point(2)
    if CONFIG in req.include:
        config_artifact = configfile.backup_config(req.config, req.directory)
        if config_artifact is not None:
            manifest.artifacts.append(config_artifact)

    _verify_artifacts(req.directory, manifest, req.storage, raw_bytes)
    manifest.completed_at = _now()
    write_manifest(req.directory, manifest)
    log.info("backup complete and verified: %s", req.directory)
    return _result(req.directory, manifest, reused=False)


def _result(directory: Path, manifest: Manifest, *, reused: bool) -> dict[str, Any]:
    return {
        "location": str(directory),
        "manifest": str(directory / MANIFEST_NAME),
        "reused": reused,
        "createdAt": manifest.created_at,
        "completedAt": manifest.completed_at,
        "schemaVersion": (manifest.database or {}).get("schemaVersion"),
        "artifacts": [a.summary() for a in manifest.artifacts],
        "rowCounts": manifest.row_counts,
        "storage": manifest.storage,
    }
