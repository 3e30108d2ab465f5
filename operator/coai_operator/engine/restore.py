"""`engine restore`: put the database and /storage back exactly as a verified backup holds them.

Order, so that a bad backup never touches anything:
1. read the manifest; verify EVERY included artifact (size, sha256 — the backup decoded it fully
   before recording that sha256 — and every tar member safe to extract); any mismatch is a
   RestoreError naming the artifact;
2. check the client tool exists and the database is reachable (a dropped database is created
   empty again);
3. database: drop every table, view, sequence, routine and event of the database (so tables
   created after the backup disappear), stream the decoded dump into `mariadb`, then check each
   table's COUNT(*) equals the manifest;
4. storage: empty the root, extract with tarfile's `data` filter, check file/dir counts and bytes.

Re-running gives the same result (idempotent), so a crash mid-restore is fixed by running it again.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import pymysql

from coai_operator.domain.errors import RestoreError
from coai_operator.engine import compress, configfile, testhooks
from coai_operator.engine.archive import clear_tree, extract_tar, scan_tar, tree_stats
from coai_operator.engine.dbconfig import DbConfig, connect, option_file
from coai_operator.engine.dbtools import child_env, describe_db_error, find_tool, finish_tool, open_connection
from coai_operator.engine.fsutil import CHUNK, sha256_file
from coai_operator.engine.manifest import (
    CONFIG,
    DATABASE,
    STORAGE,
    Artifact,
    Manifest,
    ManifestError,
    parse_include,
    read_manifest,
)
from coai_operator.engine.rowcounts import count_rows, list_tables, quote_ident

log = logging.getLogger(__name__)

CLIENT_TOOLS = ("mariadb", "mysql")
NOTHING_CHANGED = "refusing to restore; nothing was changed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True, type=Path, help="backup directory holding manifest.json")
    parser.add_argument("--storage", type=Path, help="the app's storage root (/storage) to restore into")
    parser.add_argument("--config", type=Path, help="the app's /config directory (config.yaml is put back)")
    parser.add_argument("--include", help="comma list of database,storage,config (default: what the backup holds)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        manifest = read_manifest(args.dir)
    except ManifestError as exc:
        raise RestoreError(f"{exc}; {NOTHING_CHANGED}") from exc
    include = parse_include(args.include) or list(manifest.include)
    cfg = DbConfig.from_env() if DATABASE in include else None
    return restore_backup(args.dir, manifest, include, cfg, args.storage, args.config)


def _artifact(manifest: Manifest, kind: str) -> Artifact:
    art = manifest.artifact(kind)
    if art is None:
        raise RestoreError(f"the backup holds no {kind} artifact (it has {', '.join(manifest.include) or 'nothing'})")
    return art


def verify_backup(directory: Path, manifest: Manifest, include: list[str], storage: Path | None) -> None:
    """Every included artifact: present, same size, same sha256 as verified at backup, tar members safe."""
    for kind in include:
        if kind == CONFIG and manifest.artifact(CONFIG) is None:
            continue  # the backed-up /config held no config.yaml (engine/configfile.py)
        art = _artifact(manifest, kind)
        path = directory / art.name
        if not path.is_file():
            raise RestoreError(f"backup artifact {art.name} is missing; {NOTHING_CHANGED}")
        if path.stat().st_size != art.bytes:
            raise RestoreError(f"backup artifact {art.name} has the wrong size (corrupt); {NOTHING_CHANGED}")
        try:
            if kind in (DATABASE, CONFIG):
                # The backup decoded this dump to its end before writing the manifest; the same sha256
                # means the same bytes, so a second full decode here would only cost time.
                digest = sha256_file(path)
            else:
                assert storage is not None
                digest, stats = scan_tar(path, art.compression, storage)
                if manifest.storage is not None and not stats.same_content(manifest.storage):
                    raise RestoreError(f"backup artifact {art.name} does not list what the manifest records; "
                                       f"{NOTHING_CHANGED}")
        except compress.CompressionError as exc:
            raise RestoreError(f"backup artifact {art.name} is corrupt ({exc}); {NOTHING_CHANGED}") from exc
        except tarfile.FilterError as exc:
            raise RestoreError(f"backup artifact {art.name} has an unsafe member ({exc}); {NOTHING_CHANGED}") from exc
        except tarfile.TarError as exc:
            raise RestoreError(f"backup artifact {art.name} is not a valid tar ({exc}); {NOTHING_CHANGED}") from exc
        if digest != art.sha256:
            raise RestoreError(f"backup artifact {art.name} does not match its sha256 (corrupt); {NOTHING_CHANGED}")
        log.info("verified %s (%d bytes, sha256 %s)", art.name, art.bytes, art.sha256[:12])


def _drop_everything(conn: pymysql.Connection, schema: str) -> int:
    """Drop all events, routines, views, sequences and tables of `schema`; returns how many."""
    statements: list[str] = []
    with conn.cursor() as cur:
        cur.execute("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s", (schema,))
        statements += [f"DROP EVENT IF EXISTS {quote_ident(n)}" for (n,) in cur.fetchall()]
        cur.execute("SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s"
                    " AND ROUTINE_TYPE IN ('PROCEDURE', 'FUNCTION')", (schema,))
        statements += [f"DROP {kind} IF EXISTS {quote_ident(n)}" for n, kind in cur.fetchall()]
        cur.execute("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (schema,))
        objects = cur.fetchall()
        kinds = {"VIEW": "VIEW", "SEQUENCE": "SEQUENCE"}
        views = [(n, t) for n, t in objects if t == "VIEW"]
        others = [(n, t) for n, t in objects if t != "VIEW"]
        statements += [f"DROP {kinds.get(t, 'TABLE')} IF EXISTS {quote_ident(n)}" for n, t in views + others]
        cur.execute("SET SESSION FOREIGN_KEY_CHECKS = 0")
        for statement in statements:
            cur.execute(statement)
        cur.execute("SET SESSION FOREIGN_KEY_CHECKS = 1")
    return len(statements)


def _load_dump(cfg: DbConfig, tool: str, path: Path, compression: str) -> None:
    with option_file(cfg) as opts, tempfile.TemporaryFile() as err:
        argv = [tool, f"--defaults-extra-file={opts}", "--default-character-set=utf8mb4",
                "--max-allowed-packet=1G", cfg.database]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=child_env())
        assert proc.stdin is not None
        try:
            with compress.decompressed_reader(path, compression) as decoded:
                first = True
                while chunk := decoded.read(CHUNK):
                    proc.stdin.write(chunk)
                    if first:
                        testhooks.pause_client()
                        first = False
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the client stopped reading: its exit code and stderr say why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finish_tool(proc, err, tool, RestoreError)


def _connect_creating_database(cfg: DbConfig) -> pymysql.Connection:
    """Connect; if the database itself is gone (dropped), create it empty first."""
    try:
        return connect(cfg)
    except pymysql.err.OperationalError as exc:
        if not exc.args or exc.args[0] != 1049:
            raise RestoreError(describe_db_error(cfg, exc)) from exc
    except pymysql.err.MySQLError as exc:
        raise RestoreError(describe_db_error(cfg, exc)) from exc
    log.info("database %s does not exist: creating it", cfg.database)
    server = open_connection(cfg, RestoreError, with_database=False)
    try:
        with server.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {quote_ident(cfg.database)} CHARACTER SET utf8mb4")
    except pymysql.err.MySQLError as exc:
        raise RestoreError(f"database {cfg.database!r} does not exist and cannot be created: "
                           f"{describe_db_error(cfg, exc)}") from exc
    finally:
        server.close()
    return open_connection(cfg, RestoreError)


def restore_database(cfg: DbConfig, directory: Path, manifest: Manifest, conn: pymysql.Connection,
                     tool: str) -> dict[str, int]:
    art = _artifact(manifest, DATABASE)
    started = time.monotonic()
    dropped = _drop_everything(conn, cfg.database)
    log.info("dropped %d objects from %s; loading %s", dropped, cfg.database, art.name)
    _load_dump(cfg, tool, directory / art.name, art.compression)
    present = set(list_tables(conn, cfg.database))
    missing = sorted(set(manifest.row_counts) - present)
    if missing:
        raise RestoreError(f"restored database lacks tables the backup holds: {', '.join(missing[:5])}")
    counts = count_rows(conn, sorted(manifest.row_counts))
    wrong = [f"{t} has {counts[t]} rows, backup {n}" for t, n in manifest.row_counts.items() if counts[t] != n]
    if wrong:
        raise RestoreError(f"restored row counts differ from the backup: {'; '.join(wrong[:5])}")
    log.info("database restored and row counts match (%d tables) in %.2fs", len(counts), time.monotonic() - started)
    return counts


def restore_storage(directory: Path, manifest: Manifest, root: Path) -> dict[str, Any]:
    art = _artifact(manifest, STORAGE)
    clear_tree(root)
    extract_tar(directory / art.name, art.compression, root)
    stats = tree_stats(root)
    if manifest.storage is not None and not stats.same_content(manifest.storage):
        raise RestoreError(f"restored storage differs from the backup: {stats.to_dict()} vs {manifest.storage}")
    log.info("storage restored: %d files, %d bytes", stats.file_count, stats.bytes)
    return stats.to_dict()


def restore_backup(directory: Path, manifest: Manifest, include: list[str], cfg: DbConfig | None,
                   storage: Path | None, config: Path | None = None) -> dict[str, Any]:
    if CONFIG in include and manifest.artifact(CONFIG) is not None and config is None:
        raise RestoreError(f"the backup includes config: pass --config PATH (or --include without config); "
                           f"{NOTHING_CHANGED}")
    if STORAGE in include:
        if storage is None:
            raise RestoreError("the backup includes storage: pass --storage PATH (or --include database)")
        storage.mkdir(parents=True, exist_ok=True)
        root, target = storage.resolve(), directory.resolve()
        if target == root or root in target.parents:
            raise RestoreError(f"backup directory {directory} is inside the storage tree {storage}; {NOTHING_CHANGED}")
    verify_backup(directory, manifest, include, storage)

    result: dict[str, Any] = {"location": str(directory), "restored": include,
                              "schemaVersion": (manifest.database or {}).get("schemaVersion")}
    if DATABASE in include:
        assert cfg is not None
        tool = find_tool(CLIENT_TOOLS, RestoreError)
        conn = _connect_creating_database(cfg)
        try:
            result["rowCounts"] = restore_database(cfg, directory, manifest, conn, tool)
        finally:
            conn.close()
    if STORAGE in include:
        assert storage is not None
        result["storage"] = restore_storage(directory, manifest, storage)
    if CONFIG in include:
        result["config"] = configfile.restore_config(directory, manifest, config)
    return result
