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
DIR may be `s3://bucket/prefix/<name>` (store.py); encrypted backups need COAI_BACKUP_KEY(_FILE).
When the backup recorded CHECKSUM TABLE values (taken with --verify) the restored tables must match.
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
from coai_operator.engine import compress, crypto, envcopy, testhooks
from coai_operator.engine.archive import FilterError, clear_tree, extract_tar_stream, scan_tar_stream, tree_stats
from coai_operator.engine.artifacts import artifact_reader, stored_digest
from coai_operator.engine.dbconfig import DbConfig, connect, option_file
from coai_operator.engine.dbtools import child_env, describe_db_error, find_tool, finish_tool, open_connection
from coai_operator.engine.fsutil import CHUNK, widen_pipe
from coai_operator.engine.manifest import (
    CONFIG,
    DATABASE,
    STORAGE,
    Artifact,
    Manifest,
    ManifestError,
    load_manifest,
    parse_include,
)
from coai_operator.engine.rowcounts import checksum_tables, count_rows, list_tables, quote_ident
from coai_operator.engine.store import LocalStore, Store, StoreError, open_store

log = logging.getLogger(__name__)

CLIENT_TOOLS = ("mariadb", "mysql")
NOTHING_CHANGED = "refusing to restore; nothing was changed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True, help="backup directory holding manifest.json, or s3://bucket/prefix/name")
    parser.add_argument("--storage", type=Path, help="the app's storage root (/storage) to restore into")
    parser.add_argument("--config", type=Path, help="the app's /config volume to restore into")
    parser.add_argument("--target-version", default="", help="the CoAI version the target runs: a backup taken "
                                                               "by a newer version is refused")
    parser.add_argument("--force", action="store_true", help="restore a backup of a newer app version anyway")
    parser.add_argument("--include", help="comma list of database,storage,config (default: what the backup holds)")
    parser.add_argument("--env-dir", type=Path, help="the env ConfigMap and Secret the target mounts now (read-only): "
                                                     "the result names the keys that differ from the backup's copies")


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        store = open_store(args.dir)
        manifest = load_manifest(store)
    except (ManifestError, StoreError) as exc:
        raise RestoreError(f"{exc}; {NOTHING_CHANGED}") from exc
    include = parse_include(args.include) or list(manifest.include)
    check_version(manifest, args.target_version, args.force)
    cfg = DbConfig.from_env() if DATABASE in include else None
    try:
        return restore_backup(store, manifest, include, cfg, args.storage, crypto.load_key(), args.config,
                              args.env_dir)
    except StoreError as exc:
        raise RestoreError(str(exc)) from exc


def _artifact(manifest: Manifest, kind: str) -> Artifact:
    art = manifest.artifact(kind)
    if art is None:
        raise RestoreError(f"the backup holds no {kind} artifact (it has {', '.join(manifest.include) or 'nothing'})")
    return art


def check_version(manifest: Manifest, target: str, force: bool) -> None:
    """Data written by a newer CoAI may not load in an older one: refuse unless forced."""
    from coai_operator.engine.versions import UnknownVersionError, Version

    if not target or not manifest.app_version or force:
        return
    try:
        newer = Version.parse(manifest.app_version) > Version.parse(target)
    except UnknownVersionError:
        return
    if newer:
        raise RestoreError(f"the backup was taken by CoAI {manifest.app_version}, newer than the target's {target} "
                           f"(set force to restore anyway); {NOTHING_CHANGED}")


def check_key(manifest: Manifest, key: bytes | None) -> None:
    if manifest.encryption is None:
        return
    if key is None:
        raise RestoreError(f"the backup is encrypted: its key is needed (COAI_BACKUP_KEY); {NOTHING_CHANGED}")
    if crypto.key_id(key) != manifest.encryption.get("keyId"):
        raise RestoreError(f"the key given is not the key this backup was encrypted with; {NOTHING_CHANGED}")


def verify_backup(store: Store | Path, manifest: Manifest, include: list[str], storage: Path | None,
                  key: bytes | None = None, config: Path | None = None) -> None:
    """Every included artifact: present, same size, same sha256 as verified at backup, tar members safe."""
    store = LocalStore(store) if isinstance(store, Path) else store
    check_key(manifest, key)
    for kind in include:
        art = _artifact(manifest, kind)
        size = store.size(art.name)
        if size is None:
            raise RestoreError(f"backup artifact {art.name} is missing; {NOTHING_CHANGED}")
        if size != art.bytes:
            raise RestoreError(f"backup artifact {art.name} has the wrong size (corrupt); {NOTHING_CHANGED}")
        try:
            if kind == DATABASE:
                # The backup decoded this dump to its end before writing the manifest; the same sha256
                # means the same bytes, so a second full decode here would only cost time.
                digest, _ = stored_digest(store, art.name)
            else:
                root = storage if kind == STORAGE else config
                assert root is not None
                with artifact_reader(store, art, key, manifest.encryption is not None) as view:
                    stats = scan_tar_stream(view, root)  # type: ignore[arg-type]
                digest = view.sha256
                recorded = manifest.tree(kind)
                if recorded is not None and not stats.same_content(recorded):
                    raise RestoreError(f"backup artifact {art.name} does not list what the manifest records; "
                                       f"{NOTHING_CHANGED}")
        except (compress.CompressionError, crypto.DecryptionError) as exc:
            raise RestoreError(f"backup artifact {art.name} is corrupt ({exc}); {NOTHING_CHANGED}") from exc
        except FilterError as exc:
            raise RestoreError(f"backup artifact {art.name} has an unsafe member ({exc}); {NOTHING_CHANGED}") from exc
        except tarfile.TarError as exc:
            raise RestoreError(f"backup artifact {art.name} is not a valid tar ({exc}); {NOTHING_CHANGED}") from exc
        if digest != art.sha256:
            raise RestoreError(f"backup artifact {art.name} does not match its sha256 (corrupt); {NOTHING_CHANGED}")
        log.info("verified %s (%d bytes, sha256 %s)", art.name, art.bytes, art.sha256[:12])
    if CONFIG in include:
        try:  # the env copies: decrypted and decoded to the end, sha256 checked (artifact_reader)
            envcopy.read(store, manifest, key)
        except (compress.CompressionError, crypto.DecryptionError, ValueError) as exc:
            raise RestoreError(f"the env copies of the backup are corrupt ({exc}); {NOTHING_CHANGED}") from exc


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


def load_dump(cfg: DbConfig, tool: str, store: Store, art: Artifact, key: bytes | None, encrypted: bool) -> None:
    """Stream the decoded (decrypted) dump artifact into `mariadb` for cfg.database."""
    with option_file(cfg) as opts, tempfile.TemporaryFile() as err:
        argv = [tool, f"--defaults-extra-file={opts}", "--default-character-set=utf8mb4",
                "--max-allowed-packet=1G", cfg.database]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=child_env())
        assert proc.stdin is not None
        widen_pipe(proc.stdin)
        try:
            with artifact_reader(store, art, key, encrypted) as decoded:
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


def restore_database(cfg: DbConfig, store: Store, manifest: Manifest, conn: pymysql.Connection,
                     tool: str, key: bytes | None = None) -> dict[str, int]:
    art = _artifact(manifest, DATABASE)
    started = time.monotonic()
    dropped = _drop_everything(conn, cfg.database)
    log.info("dropped %d objects from %s; loading %s", dropped, cfg.database, art.name)
    load_dump(cfg, tool, store, art, key, manifest.encryption is not None)
    present = set(list_tables(conn, cfg.database))
    missing = sorted(set(manifest.row_counts) - present)
    if missing:
        raise RestoreError(f"restored database lacks tables the backup holds: {', '.join(missing[:5])}")
    counts = count_rows(conn, sorted(manifest.row_counts))
    wrong = [f"{t} has {counts[t]} rows, backup {n}" for t, n in manifest.row_counts.items() if counts[t] != n]
    if wrong:
        raise RestoreError(f"restored row counts differ from the backup: {'; '.join(wrong[:5])}")
    recorded = (manifest.database or {}).get("tableChecksums") or (manifest.verify or {}).get("tableChecksums") or {}
    if recorded:
        now = checksum_tables(conn, sorted(recorded))
        differ = [t for t, v in recorded.items() if now.get(t) != v]
        if differ:
            raise RestoreError(f"restored CHECKSUM TABLE differs from the backup for {', '.join(differ[:5])}")
    log.info("database restored and row counts match (%d tables) in %.2fs", len(counts), time.monotonic() - started)
    return counts


def restore_storage(store: Store, manifest: Manifest, root: Path, key: bytes | None = None,
                    kind: str = STORAGE) -> dict[str, Any]:
    art = _artifact(manifest, kind)
    clear_tree(root)
    with artifact_reader(store, art, key, manifest.encryption is not None) as decoded:
        extract_tar_stream(decoded, root)  # type: ignore[arg-type]
    stats = tree_stats(root)
    recorded = manifest.tree(kind)
    if recorded is not None and not stats.same_content(recorded):
        raise RestoreError(f"restored {kind} differs from the backup: {stats.to_dict()} vs {recorded}")
    log.info("%s restored: %d files, %d bytes", kind, stats.file_count, stats.bytes)
    return stats.to_dict()


def restore_backup(store: Store | Path, manifest: Manifest, include: list[str], cfg: DbConfig | None,
                   storage: Path | None, key: bytes | None = None, config: Path | None = None,
                   env_dir: Path | None = None) -> dict[str, Any]:
    store = LocalStore(store) if isinstance(store, Path) else store
    for kind, tree in ((STORAGE, storage), (CONFIG, config)):
        if kind not in include:
            continue
        if tree is None:
            raise RestoreError(f"the backup includes {kind}: pass --{kind} PATH (or --include database)")
        tree.mkdir(parents=True, exist_ok=True)
        if isinstance(store, LocalStore):
            root, target = tree.resolve(), store.root.resolve()
            if target == root or root in target.parents:
                raise RestoreError(f"backup directory {store.where} is inside the {kind} tree {tree}; "
                                   f"{NOTHING_CHANGED}")
    verify_backup(store, manifest, include, storage, key, config)

    result: dict[str, Any] = {"location": store.where, "restored": include, "appVersion": manifest.app_version,
                              "artifacts": [a.summary() for a in manifest.artifacts if a.kind in include],
                              "schemaVersion": (manifest.database or {}).get("schemaVersion")}
    if DATABASE in include:
        assert cfg is not None
        tool = find_tool(CLIENT_TOOLS, RestoreError)
        conn = _connect_creating_database(cfg)
        try:
            result["rowCounts"] = restore_database(cfg, store, manifest, conn, tool, key)
        finally:
            conn.close()
    if STORAGE in include:
        assert storage is not None
        result["storage"] = restore_storage(store, manifest, storage, key)
    if CONFIG in include:
        assert config is not None
        result["config"] = restore_storage(store, manifest, config, key, CONFIG)
        saved = envcopy.read(store, manifest, key)
        if saved:  # reported, never written back: the operator renders the ConfigMap, the Secret is the user's
            result["env"] = envcopy.differences(saved, env_dir)
    return result
