"""`engine backup`: dump the database and archive /storage into DIR, verify, then write the manifest.

DIR is a directory or `s3://bucket/prefix/<name>` (see store.py). Layout: `database.sql.gz`
(or `.zst`), `storage.tar.gz` (or `.zst`), `manifest.json`. Every artifact appears all at once
(renamed into place / multipart completed); after all artifacts are re-read from the store and
verified (sha256, full decode and decryption, tar listing) the manifest is written, last. So a
DIR without manifest.json is never a backup, whatever a crash or an unreachable store left.
With COAI_BACKUP_KEY(_FILE) set the artifacts are encrypted (crypto.py); `--verify` restores
the dump into a scratch database and compares CHECKSUM TABLE (verify.py).

Re-running into a DIR that already holds a complete backup re-verifies and reuses it (nothing
is overwritten: a retried Job never replaces a pre-migration backup with later data); pass
`--overwrite` to replace it. The same command exports post-migration data for a graceful
rollback: `backup --dir /backup/<name>/post-migration`.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import subprocess
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql

from coai_operator.domain.errors import BackupError, EngineError
from coai_operator.engine import compress, crypto, envcopy, testhooks
from coai_operator.engine.archive import TreeStats, scan_tar_stream, write_tree_tar
from coai_operator.engine.artifacts import artifact_reader, artifact_writer
from coai_operator.engine.dbconfig import DbConfig, option_file
from coai_operator.engine.dbtools import child_env, find_tool, finish_tool, open_connection
from coai_operator.engine.fsutil import CHUNK, widen_pipe
from coai_operator.engine.manifest import (
    CONFIG,
    DATABASE,
    MANIFEST_NAME,
    STORAGE,
    TREES,
    Artifact,
    Manifest,
    ManifestError,
    load_manifest,
    parse_include,
    save_manifest,
)
from coai_operator.engine.rowcounts import DumpRowCounter, checksum_tables, count_rows, list_tables, schema_version
from coai_operator.engine.store import LocalStore, Store, StoreError, open_store

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
KNOWN_ARTIFACTS = tuple(
    f"{base}{suffix}" for base in ("database.sql", "storage.tar", "config-env.json")
    for suffix in compress.SUFFIX.values()
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True, help="backup directory (created), e.g. /backup/<migration>, "
                                                      "or s3://bucket/prefix/<name>")
    parser.add_argument("--storage", type=Path, help="the app's storage root (/storage) to archive")
    parser.add_argument("--config", type=Path, help="the app's /config volume to archive (config.yaml)")
    parser.add_argument("--include", help="comma list of database,storage,config (default: database, plus "
                                          "storage/config when --storage/--config is given)")
    parser.add_argument("--label", default="", help="free text recorded in the manifest")
    parser.add_argument("--app-version", default="", help="the CoAI version running (recorded in the manifest)")
    parser.add_argument("--env-dir", type=Path, help="with config: the env ConfigMap and Secret as mounted volumes "
                                                     "(configmap.NAME/, secret.NAME/), copied into the backup")
    parser.add_argument("--compression", default="gzip", choices=["gzip", "zstd", "auto"],
                        help="gzip (default, in-process) or zstd (needs the zstd binary); auto picks zstd if present")
    parser.add_argument("--level", type=int, help="compression level (default gzip 1, zstd 3: fast, see compress.py)")
    parser.add_argument("--skip-events", action="store_true", help="do not dump events (needs no EVENT privilege)")
    parser.add_argument("--overwrite", action="store_true", help="replace a complete backup already in --dir")
    parser.add_argument("--verify", action="store_true",
                        help="restore the dump into a scratch database and compare CHECKSUM TABLE, then drop it")


@dataclass
class BackupRequest:
    directory: Path | str
    include: list[str]
    storage: Path | None = None
    config: Path | None = None
    label: str = ""
    compression: str = compress.GZIP
    level: int | None = None
    events: bool = True
    overwrite: bool = False
    verify: bool = False
    key: bytes | None = None
    app_version: str = ""
    env_dir: Path | None = None

    @property
    def store(self) -> Store:
        if not hasattr(self, "_store"):
            self._store = open_store(str(self.directory))
        return self._store


def run(args: argparse.Namespace) -> dict[str, Any]:
    include = parse_include(args.include) or [DATABASE, *([STORAGE] if args.storage else []),
                                              *([CONFIG] if args.config else [])]
    request = BackupRequest(
        directory=args.dir, include=include, storage=args.storage, config=args.config, label=args.label,
        compression=compress.resolve(args.compression), level=args.level,
        events=not args.skip_events, overwrite=args.overwrite, verify=args.verify, key=crypto.load_key(),
        app_version=args.app_version, env_dir=args.env_dir,
    )
    cfg = DbConfig.from_env() if DATABASE in include else None
    return create_backup(request, cfg)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_request(req: BackupRequest) -> None:
    for kind, tree in ((STORAGE, req.storage), (CONFIG, req.config)):
        if kind not in req.include:
            continue
        if tree is None:
            raise BackupError(f"--include {kind} needs --{kind} PATH")
        if not tree.is_dir():
            raise BackupError(f"{kind} path {tree} is not a directory")
        if not isinstance(req.store, LocalStore):
            continue
        root, target = tree.resolve(), req.store.root.resolve()
        if target == root or root in target.parents:
            raise BackupError(f"backup directory {req.directory} must not be inside the {kind} tree {tree}")


def _reuse_existing(req: BackupRequest) -> Manifest | None:
    """A complete backup already in DIR: verified and returned, unless --overwrite."""
    store = req.store
    if store.size(MANIFEST_NAME) is None:
        return None
    if req.overwrite:
        store.delete(MANIFEST_NAME)  # from here on DIR is incomplete until the new manifest
        return None
    hint = "pass --overwrite to replace it, or use another --dir"
    try:
        existing = load_manifest(store)
        _verify_artifacts(store, existing, req.storage, req.key)
    except (ManifestError, BackupError) as exc:
        raise BackupError(f"{store.where} holds a backup that does not verify ({exc}); {hint}") from exc
    if existing.include != req.include:
        raise BackupError(f"{store.where} already holds a complete backup of {','.join(existing.include)}; {hint}")
    log.info("%s already holds a complete, verified backup from %s: reusing it", store.where, existing.created_at)
    return existing


def _remove_leftovers(store: Store) -> None:
    """Temporary files of an interrupted run, and artifacts of an older backup this one replaces
    (only called when DIR holds no manifest, i.e. nothing in it is a complete backup)."""
    if not isinstance(store, LocalStore):
        return  # objects only ever appear complete; same names are simply overwritten
    for path in store.root.iterdir():
        stale_tmp = path.name.startswith(".") and path.name.endswith(".tmp") and path.name[1:].startswith(
            ("database.sql", "storage.tar", "config.tar", "config-env.json", MANIFEST_NAME))
        if stale_tmp or path.name in KNOWN_ARTIFACTS:
            path.unlink(missing_ok=True)


@dataclass
class DumpOutcome:
    artifact: Artifact
    row_counts: dict[str, int]
    tool: str
    raw_bytes: int
    seconds: float


def dump_database(cfg: DbConfig, tool: str, store: Store, compression: str, level: int | None,
                  events: bool, key: bytes | None = None) -> DumpOutcome:
    """Stream mariadb-dump → row counter → compressor → (encryption) → DIR/database.sql.<gz|zst>."""
    target = f"database.sql{compress.SUFFIX[compression]}"
    counter = DumpRowCounter()
    raw_bytes, tail, started = 0, b"", time.monotonic()
    with option_file(cfg) as opts, tempfile.TemporaryFile() as err:
        argv = [tool, f"--defaults-extra-file={opts}", *DUMP_OPTIONS, *(["--events"] if events else []), cfg.database]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=child_env())
        assert proc.stdout is not None
        widen_pipe(proc.stdout)
        try:
            with artifact_writer(store, target, compression, level, key) as (sink, hashed):
                while chunk := proc.stdout.read(CHUNK):
                    if raw_bytes == 0:
                        testhooks.pause_client()
                    counter.feed(chunk)
                    sink.write(chunk)
                    raw_bytes += len(chunk)
                    tail = (tail + chunk)[-512:]
                # checked before the artifact is committed: a failed dump never becomes an object
                finish_tool(proc, err, tool, BackupError)
                if DONE_MARKER not in tail:
                    raise BackupError(f"{Path(tool).name} output ended without its completion marker: "
                                      "dump incomplete")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    seconds = time.monotonic() - started
    artifact = Artifact(target, DATABASE, compression, hashed.bytes, hashed.sha256)
    log.info("dumped %s: %d bytes raw → %d bytes %s in %.2fs (%.1f MB/s)", cfg.database, raw_bytes,
             hashed.bytes, compression, seconds, raw_bytes / max(seconds, 1e-6) / 1e6)
    return DumpOutcome(artifact, counter.finish(), Path(tool).name, raw_bytes, seconds)


def archive_storage(root: Path, store: Store, compression: str, level: int | None,
                    key: bytes | None = None, kind: str = STORAGE) -> tuple[Artifact, TreeStats]:
    target = f"{kind}.tar{compress.SUFFIX[compression]}"
    started = time.monotonic()
    with artifact_writer(store, target, compression, level, key) as (sink, hashed):
        stats = write_tree_tar(root, sink)
    log.info("archived %s: %d files, %d bytes → %d bytes in %.2fs", root, stats.file_count, stats.bytes,
             hashed.bytes, time.monotonic() - started)
    return Artifact(target, kind, compression, hashed.bytes, hashed.sha256), stats


def _verify_artifacts(store: Store, manifest: Manifest, storage_root: Path | None, key: bytes | None,
                      raw_bytes: int | None = None) -> None:
    """Re-read every artifact from the store: size and sha256 as recorded, decrypts and decodes to
    the end, tar lists (and every member is safe to extract)."""
    encrypted = manifest.encryption is not None
    for art in manifest.artifacts:
        if store.size(art.name) != art.bytes:
            raise BackupError(f"verification failed: {art.name} is missing or not {art.bytes} bytes")
        if not isinstance(store, LocalStore):
            # The object store checked every part against its payload hash (SigV4 SHA-256 over
            # http, Content-MD5 over https) and the size matches: a second download would only
            # cost time. A restore re-checks the sha256 before it changes anything.
            continue
        try:
            with artifact_reader(store, art, key, encrypted) as view:
                if art.kind in TREES:
                    stats = scan_tar_stream(view, storage_root or Path("/nonexistent"))  # type: ignore[arg-type]
            if art.kind == DATABASE and raw_bytes is not None and view.decoded_bytes != raw_bytes:
                raise BackupError(f"verification failed: {art.name} decodes to {view.decoded_bytes} bytes, "
                                  f"dumped {raw_bytes}")
            recorded = manifest.tree(art.kind)
            if art.kind in TREES and recorded is not None and not stats.same_content(recorded):
                raise BackupError(f"verification failed: {art.name} lists {stats.to_dict()}, archived {recorded}")
        except (compress.CompressionError, crypto.DecryptionError, tarfile.TarError, OSError) as exc:
            raise BackupError(f"verification failed: {art.name}: {exc}") from exc


def _snapshot_counts(conn: pymysql.Connection, schema: str,
                     verify: bool) -> tuple[dict[str, int], dict[str, int | None] | None]:
    tables = list_tables(conn, schema)
    return count_rows(conn, tables), checksum_tables(conn, tables) if verify else None


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
    # The cross-check reads the snapshot while the dump streams (its own connection; 2.4 s of a
    # 26 s dump at 1M users when it ran after it).
    with ThreadPoolExecutor(max_workers=1) as pool:
        counted = pool.submit(_snapshot_counts, conn, cfg.database, req.verify)
        dump = dump_database(cfg, tool, req.store, req.compression, req.level, req.events, req.key)
        snapshot, checksums = counted.result()
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
    if checksums is not None and not changed:
        manifest.database["tableChecksums"] = checksums
    manifest.artifacts.append(dump.artifact)
    return dump.raw_bytes


def create_backup(req: BackupRequest, cfg: DbConfig | None) -> dict[str, Any]:
    try:
        return _create_backup(req, cfg)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        from coai_operator.engine.capacity import InsufficientSpaceError

        raise InsufficientSpaceError(f"the backup volume filled up while writing ({req.store.where}): grow it, "
                                     "or back up to object storage; no manifest was written") from exc


def _create_backup(req: BackupRequest, cfg: DbConfig | None) -> dict[str, Any]:
    _check_request(req)
    conn: pymysql.Connection | None = None
    tool = ""
    if DATABASE in req.include:  # fail on a missing tool or bad credentials before touching DIR
        if cfg is None:
            raise EngineError("database backup needs MYSQL_* settings")
        tool = find_tool(DUMP_TOOLS, BackupError)
        conn = open_connection(cfg, BackupError)
    store = req.store
    try:
        store.prepare()
        existing = _reuse_existing(req)
        if existing is not None:
            return _result(store, existing, reused=True)
        if isinstance(store, LocalStore) and os.environ.get("COAI_SKIP_CAPACITY_CHECK") != "1":
            from coai_operator.engine import capacity

            db_bytes = capacity.database_bytes(conn, cfg.database) if conn is not None and cfg is not None else 0
            trees = [t for k, t in ((STORAGE, req.storage), (CONFIG, req.config)) if k in req.include and t]
            log.info("preflight capacity: %s", capacity.check(store.root, db_bytes, trees))
        manifest = Manifest(created_at=_now(), label=req.label, include=list(req.include), app_version=req.app_version)
        if req.key is not None:
            manifest.encryption = {"algorithm": crypto.ALGORITHM, "keyId": crypto.key_id(req.key)}
        _remove_leftovers(store)
        raw_bytes: int | None = None
        if conn is not None and cfg is not None:
            raw_bytes = backup_database(conn, cfg, tool, req, manifest)
            testhooks.crash_point(1)
    except StoreError as exc:
        raise BackupError(str(exc)) from exc
    finally:
        if conn is not None:
            conn.close()
    try:
        for kind, tree in ((STORAGE, req.storage), (CONFIG, req.config)):
            if kind not in req.include:
                continue
            assert tree is not None
            artifact, stats = archive_storage(tree, store, req.compression, req.level, req.key, kind)
            summary = {"path": str(tree), **stats.to_dict()}
            if kind == STORAGE:
                manifest.storage = summary
            else:
                manifest.config = summary
                if req.env_dir is not None:
                    env_art, summary["env"] = envcopy.write(store, req.env_dir, req.compression, req.level, req.key)
                    manifest.artifacts.append(env_art)
            manifest.skipped_entries += [{**e, "volume": kind} if kind != STORAGE else e
                                         for e in stats.skipped_entries]
            manifest.artifacts.append(artifact)
            testhooks.crash_point(2)
        _verify_artifacts(store, manifest, req.storage, req.key, raw_bytes)
        if req.verify and cfg is not None:
            from coai_operator.engine.verify import verify_in_scratch

            manifest.verify = verify_in_scratch(cfg, store, manifest, req.key)
        manifest.completed_at = _now()
        save_manifest(store, manifest)
    except StoreError as exc:
        raise BackupError(str(exc)) from exc
    log.info("backup complete and verified: %s", store.where)
    return _result(store, manifest, reused=False)


def _result(store: Store, manifest: Manifest, *, reused: bool) -> dict[str, Any]:
    return {
        "location": store.where,
        "manifest": f"{store.where}/{MANIFEST_NAME}",
        "reused": reused,
        "createdAt": manifest.created_at,
        "completedAt": manifest.completed_at,
        "schemaVersion": (manifest.database or {}).get("schemaVersion"),
        "artifacts": [a.summary() for a in manifest.artifacts],
        "rowCounts": manifest.row_counts,
        "storage": manifest.storage,
        "encrypted": manifest.encryption is not None,
        "appVersion": manifest.app_version,
        "verify": manifest.verify,
        "skippedEntries": manifest.skipped_entries,
        "database": {k: (manifest.database or {}).get(k) for k in ("schemaVersion", "serverVersion", "rawBytes")},
    }
