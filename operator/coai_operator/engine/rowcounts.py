"""Table listing, exact row counts and schema version; plus counting rows in a dump as it streams.

Why count rows from the dump stream: `mariadb-dump --single-transaction` reads one consistent
snapshot, but a second connection cannot join that snapshot, so COUNT(*) on another connection
is only equal to the dump when nothing writes in between (the app is still serving while the
backup runs). The manifest therefore records the rows the dump actually holds (exact, by
construction); COUNT(*) taken in a consistent snapshot started right before the dump is the
cross-check, and tables where the two differ are recorded as `concurrentChanges`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pymysql

TABLE_TYPES = ("BASE TABLE", "SYSTEM VERSIONED")


def quote_ident(name: str) -> str:
    """Backtick-quote an identifier read from information_schema (backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


def list_tables(conn: pymysql.Connection, schema: str) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE IN %s"
            " ORDER BY TABLE_NAME",
            (schema, TABLE_TYPES),
        )
        return [row[0] for row in cur.fetchall()]


def count_rows(conn: pymysql.Connection, tables: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(f"SELECT COUNT(*) FROM {quote_ident(table)}")
            counts[table] = int(cur.fetchone()[0])
    return counts


def checksum_tables(conn: pymysql.Connection, tables: Iterable[str]) -> dict[str, int | None]:
    result: dict[str, int | None] = {}
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(f"CHECKSUM TABLE {quote_ident(table)}")
            result[table] = cur.fetchone()[1]
    return result


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    parts = re.split(r"[.\-+]", version.lstrip("vV"))
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def schema_version(conn: pymysql.Connection, schema: str) -> str | None:
    """Highest version in `schema_migrations`, or None when the table (or its column) is absent."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'schema_migrations'"
            " AND COLUMN_NAME = 'version'",
            (schema,),
        )
        if cur.fetchone() is None:
            return None
        cur.execute("SELECT version FROM schema_migrations")
        versions = [str(row[0]) for row in cur.fetchall() if row[0] is not None]
    return max(versions, key=_version_key) if versions else None


# One alternative per line kind the counter cares about; all anchored at a line start.
_MARKER = re.compile(
    rb"^(?:LOCK TABLES `(?P<lock>(?:[^`]|``)+)` WRITE;"
    rb"|(?P<unlock>UNLOCK TABLES;)"
    rb"|CREATE TABLE `(?P<create>(?:[^`]|``)+)` \("
    rb"|DELIMITER (?P<delim>\S+))[ \t\r]*$",
    re.M,
)
_MARKER_HINTS = (b"LOCK TABLES `", b"UNLOCK TABLES;", b"CREATE TABLE `", b"DELIMITER ")
# Quoted strings (backslash escapes; mariadb-dump escapes newlines, so they never span lines) and
# backtick identifiers: removed before counting the "(" that opens each row tuple.
_QUOTED = re.compile(rb"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'|`[^`]*(?:``[^`]*)*`", re.S)


def _name(raw: bytes) -> str:
    return raw.replace(b"``", b"`").decode("utf-8", errors="surrogateescape")


class DumpRowCounter:
    """Counts rows per table in a mariadb-dump/mysqldump stream, fed in arbitrary chunks.

    Rows live between `LOCK TABLES `t` WRITE;` and `UNLOCK TABLES;` (we always pass --add-locks),
    in extended INSERTs: one statement per line (`INSERT INTO `t` VALUES (..),(..);`, mysqldump and
    older mariadb-dump) or one row per line (`(..),` after `INSERT INTO `t` VALUES`, newer
    mariadb-dump). Either way each row is exactly one "(" outside quotes (values are numbers,
    NULL, 0x hex with --hex-blob, or quoted strings). Tables are registered from their
    `CREATE TABLE` line outside DELIMITER blocks (routine and trigger bodies), so empty tables count 0.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._rest = b""
        self._table: str | None = None
        self._in_routine = False

    def feed(self, chunk: bytes) -> None:
        data = self._rest + chunk if self._rest else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._rest = data
            return
        self._rest = data[cut + 1:]
        self._scan(data[: cut + 1])

    def finish(self) -> dict[str, int]:
        if self._rest:
            self._scan(self._rest)
            self._rest = b""
        return self.counts

    def _count(self, segment: bytes, at_line_start: bool) -> None:
        if self._table is None or not segment:
            return
        if b" VALUES (" in segment:  # a statement per line (or such text inside a value): parse quotes
            self.counts[self._table] += _QUOTED.sub(b"", segment).count(b"(")
        else:  # a row per line; strings never hold a raw newline, so each line starting "(" is one row
            self.counts[self._table] += segment.count(b"\n(") + (at_line_start and segment.startswith(b"("))

    def _scan(self, block: bytes) -> None:
        if not any(hint in block for hint in _MARKER_HINTS):  # most blocks are rows only: skip the regex scan
            self._count(block, True)
            return
        pos = 0
        for m in _MARKER.finditer(block):
            self._count(block[pos: m.start()], pos == 0)
            pos = m.end()
            if m["delim"] is not None:
                self._in_routine = m["delim"] != b";"
            elif self._in_routine:
                continue
            elif m["lock"] is not None:
                self._table = _name(m["lock"])
                self.counts.setdefault(self._table, 0)
            elif m["unlock"] is not None:
                self._table = None
            elif m["create"] is not None:
                self.counts.setdefault(_name(m["create"]), 0)
        self._count(block[pos:], pos == 0)
