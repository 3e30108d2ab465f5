"""`engine import`: bring a plain `mysqldump` file and a tar of a Docker volume into an instance.

The guide's "Docker to Kubernetes: Migrate Data" starts from `mysqldump ... > dump.sql` and
`tar czf volume.tar.gz -C /var/lib/docker/volumes/<vol>/_data .`. Both may be at a path or in
S3 (`s3://bucket/key`), plain, `.gz` or `.zst`. Order, as for a restore: sha256 and a full
safety scan of the tar first (absolute names, `..`, links leaving the root, devices are refused,
nothing changed); then the database is emptied and the dump streamed into `mariadb`; then the
storage root is emptied and the tar extracted. The result reports both sha256s, row counts and
file counts (the same report a restore gives).
"""

from __future__ import annotations

import argparse
import logging
import posixpath
import tarfile
from pathlib import Path
from typing import Any

from coai_operator.engine import compress
from coai_operator.engine.archive import clear_tree, extract_tar_stream, scan_tar_stream, tree_stats
from coai_operator.engine.artifacts import artifact_reader, stored_digest
from coai_operator.engine.dbconfig import DbConfig
from coai_operator.engine.dbtools import find_tool
from coai_operator.engine.errors import RestoreError
from coai_operator.engine.manifest import DATABASE, STORAGE, Artifact
from coai_operator.engine.restore import CLIENT_TOOLS, NOTHING_CHANGED, _connect_creating_database, _drop_everything
from coai_operator.engine.restore import load_dump as _load
from coai_operator.engine.rowcounts import count_rows, list_tables
from coai_operator.engine.store import Store, StoreError, open_store

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dump", help="the mysqldump file (path or s3://bucket/key; .sql, .sql.gz, .sql.zst)")
    parser.add_argument("--tar", help="the volume tar (path or s3://bucket/key; .tar, .tar.gz/.tgz, .tar.zst)")
    parser.add_argument("--storage", type=Path, help="the app's storage root to fill from --tar")


def _compression(name: str) -> str:
    if name.endswith((".gz", ".tgz")):
        return compress.GZIP
    if name.endswith(".zst"):
        return compress.ZSTD
    return compress.NONE


def _source(url: str, kind: str) -> tuple[Store, Artifact]:
    parent, name = posixpath.split(url.rstrip("/"))
    store = open_store(parent or ".")
    if store.size(name) is None:
        raise RestoreError(f"{url} does not exist; {NOTHING_CHANGED}")
    digest, size = stored_digest(store, name)
    return store, Artifact(name, kind, _compression(name), size, digest)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not args.dump and not args.tar:
        raise RestoreError("give --dump and/or --tar")
    if args.tar and args.storage is None:
        raise RestoreError("--tar needs --storage PATH")
    try:
        return import_sources(args.dump, args.tar, args.storage, DbConfig.from_env() if args.dump else None)
    except StoreError as exc:
        raise RestoreError(f"{exc}; {NOTHING_CHANGED}") from exc


def import_sources(dump: str | None, tar: str | None, storage: Path | None, cfg: DbConfig | None) -> dict[str, Any]:
    result: dict[str, Any] = {"artifacts": []}
    db_src = _source(dump, DATABASE) if dump else None
    tar_src = _source(tar, STORAGE) if tar else None
    if tar_src is not None:
        assert storage is not None
        storage.mkdir(parents=True, exist_ok=True)
        try:
            with artifact_reader(*tar_src, None, False) as view:
                expected = scan_tar_stream(view, storage)  # type: ignore[arg-type]
        except tarfile.FilterError as exc:
            raise RestoreError(f"{tar} has an unsafe member ({exc}); {NOTHING_CHANGED}") from exc
        except (tarfile.TarError, compress.CompressionError) as exc:
            raise RestoreError(f"{tar} is not a readable tar ({exc}); {NOTHING_CHANGED}") from exc
    for src in (db_src, tar_src):
        if src is not None:
            result["artifacts"].append(src[1].summary())
    if db_src is not None:
        assert cfg is not None
        tool = find_tool(CLIENT_TOOLS, RestoreError)
        conn = _connect_creating_database(cfg)
        try:
            _drop_everything(conn, cfg.database)
            _load(cfg, tool, db_src[0], db_src[1], None, False)
            result["rowCounts"] = count_rows(conn, list_tables(conn, cfg.database))
        except compress.CompressionError as exc:
            raise RestoreError(f"{dump} is corrupt: {exc}") from exc
        finally:
            conn.close()
    if tar_src is not None:
        assert storage is not None
        clear_tree(storage)
        with artifact_reader(*tar_src, None, False) as view:
            extract_tar_stream(view, storage)  # type: ignore[arg-type]
        stats = tree_stats(storage)
        if not stats.same_content(expected.to_dict()):
            raise RestoreError(f"imported files differ from the tar: {stats.to_dict()} vs {expected.to_dict()}")
        result["storage"] = stats.to_dict()
    log.info("imported %s", ", ".join(a["name"] for a in result["artifacts"]))
    return result
