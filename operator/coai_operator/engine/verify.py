"""Verify a backup by restoring its dump into a scratch database, then drop the scratch database.

Checked: every table the backup counted exists with the same row count, and CHECKSUM TABLE of
each equals the source's, taken inside the dump's consistent snapshot (when no rows changed
while the dump ran; otherwise the row counts are the check and the result says so). The
scratch checksums are recorded, so a later restore can prove it reproduced the same tables.
Needs CREATE/DROP DATABASE for the backup's user; without it the backup fails with that reason.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import replace
from typing import Any

from coai_operator.engine.dbconfig import DbConfig
from coai_operator.engine.dbtools import find_tool, open_connection
from coai_operator.engine.errors import BackupError, RestoreError
from coai_operator.engine.manifest import DATABASE, Manifest
from coai_operator.engine.rowcounts import checksum_tables, count_rows, list_tables, quote_ident
from coai_operator.engine.store import Store

log = logging.getLogger(__name__)


def scratch_name(database: str) -> str:
    return f"{database[:40]}_verify_{secrets.token_hex(4)}"


def verify_in_scratch(cfg: DbConfig, store: Store, manifest: Manifest, key: bytes | None) -> dict[str, Any]:
    from coai_operator.engine.restore import CLIENT_TOOLS, load_dump

    art = manifest.artifact(DATABASE)
    if art is None:
        return {"verified": False, "reason": "the backup holds no database"}
    scratch = replace(cfg, database=scratch_name(cfg.database))
    started = time.monotonic()
    server = open_connection(cfg, BackupError, with_database=False)
    try:
        with server.cursor() as cur:
            try:
                cur.execute(f"CREATE DATABASE {quote_ident(scratch.database)} CHARACTER SET utf8mb4")
            except Exception as exc:
                raise BackupError(f"verify needs CREATE DATABASE for {cfg.user!r} (scratch database "
                                  f"{scratch.database}): {exc}") from exc
        try:
            try:
                load_dump(scratch, find_tool(CLIENT_TOOLS, BackupError), store, art, key,
                          manifest.encryption is not None)
            except RestoreError as exc:
                raise BackupError(f"verify: the dump does not load into a scratch database: {exc}") from exc
            conn = open_connection(scratch, BackupError)
            try:
                tables = list_tables(conn, scratch.database)
                counts = count_rows(conn, tables)
                checksums = checksum_tables(conn, tables)
            finally:
                conn.close()
        finally:
            with server.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(scratch.database)}")
    finally:
        server.close()
    if counts != manifest.row_counts:
        wrong = sorted(set(counts.items()) ^ set(manifest.row_counts.items()))[:5]
        raise BackupError(f"verify: row counts in the scratch restore differ from the backup: {wrong}")
    source = (manifest.database or {}).get("tableChecksums")
    if source is not None:
        differ = sorted(t for t in source if source[t] != checksums.get(t))
        if differ:
            raise BackupError(f"verify: CHECKSUM TABLE of the scratch restore differs for {', '.join(differ[:5])}")
    seconds = round(time.monotonic() - started, 3)
    log.info("verified by a scratch restore: %d tables, checksums %s, %.2fs", len(tables),
             "match" if source is not None else "recorded (rows changed during the dump)", seconds)
    return {"verified": True, "method": "scratch-restore", "checksumsCompared": source is not None,
            "tableChecksums": checksums, "seconds": seconds}
