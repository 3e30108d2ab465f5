"""The data steps of a hop: `batched` (key ranges) and `daily` (a per-day aggregate).

Both commit each unit of work together with its progress row (progress.py), so a re-run after a
crash continues after the last committed unit and never applies one twice.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Sequence
from typing import Any

import pymysql

from coai_operator.bundles import HopBundle, Step
from coai_operator.bundles.steps import VALUES_TUPLE
from coai_operator.domain.errors import MigrationError
from coai_operator.engine.progress import PROGRESS_LOG_SECONDS, crash_point, save_progress

log = logging.getLogger(__name__)


def run_batched(
    conn: pymysql.Connection, hop: HopBundle, step: Step, position: int | None, batch_size: int
) -> tuple[int, int]:
    """Run the statement once per primary-key range of `batch_size` rows; (batches, rows changed)."""
    version = str(hop.version)
    table, key = f"`{step.table}`", f"`{step.key}`"
    with conn.cursor() as cur:
        lo = position
        if lo is None:
            cur.execute(f"SELECT MIN({key}) FROM {table}")
            (first,) = cur.fetchone()
            lo = None if first is None else int(first) - 1
        conn.commit()
        number, rows, last_log = 0, 0, time.monotonic()
        while lo is not None:
            cur.execute(f"SELECT {key} FROM {table} WHERE {key} > %s ORDER BY {key} LIMIT 1 OFFSET %s",
                        (lo, batch_size - 1))
            row = cur.fetchone()
            if row is None:
                cur.execute(f"SELECT MAX({key}) FROM {table} WHERE {key} > %s", (lo,))
                row = cur.fetchone()
            if row is None or row[0] is None:
                break
            hi = int(row[0])
            cur.execute(step.sql, {"lo": lo, "hi": hi})
            number += 1
            rows += max(cur.rowcount, 0)
            crash_point(f"{version}/{step.id}/{number}")
            save_progress(cur, hop, step, hi, done=False)
            conn.commit()
            crash_point(f"{version}/{step.id}/{number}/committed")
            lo = hi
            if time.monotonic() - last_log > PROGRESS_LOG_SECONDS:
                log.info("hop %s step %s: %d batches, %d rows changed, up to %s=%d",
                         hop.hop, step.id, number, rows, step.key, hi)
                last_log = time.monotonic()
        save_progress(cur, hop, step, lo, done=True)
        conn.commit()
    return number, rows


def day_key(value: object, step: Step) -> int:
    """A day as the integer YYYYMMDD (what the progress row's position holds for a daily step)."""
    if not isinstance(value, datetime.date):
        raise MigrationError(
            f"step {step.id}: the first column of its SELECT must be a DATE (the day), got {value!r};"
            " fix the step's SQL (e.g. DATE(created_at)) and run migrate again"
        )
    return value.year * 10000 + value.month * 100 + value.day


def _day_of(key: int) -> datetime.date:
    return datetime.date(key // 10000, key // 100 % 100, key % 100)


def day_ranges(
    day_rows: Sequence[Sequence[Any]], step: Step, after: int | None, batch_size: int
) -> list[tuple[datetime.date, datetime.date]]:
    """Batches of whole days, as (exclusive, inclusive] day bounds, from (day, rows that day) pairs:
    days after `after` in order, added to a batch until it holds `batch_size` rows or more (pure)."""
    days = sorted((day_key(day, step), int(count)) for day, count in day_rows)
    pending = [(key, count) for key, count in days if after is None or key > after]
    if not pending:
        return []
    lo = _day_of(after) if after is not None else _day_of(pending[0][0]) - datetime.timedelta(days=1)
    ranges: list[tuple[datetime.date, datetime.date]] = []
    size = 0
    for key, count in pending:
        size += count
        if size >= batch_size:
            ranges.append((lo, _day_of(key)))
            lo, size = _day_of(key), 0
    if size:
        ranges.append((lo, _day_of(pending[-1][0])))
    return ranges


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def copy_statement(write: str, table: str, day_column: str) -> str:
    """`write` with its VALUES (%s, ...) replaced by the rows of `table` in one day range (pure).
    It runs with parameters, so a literal % in a name is doubled."""
    day, source = _quoted(day_column).replace("%", "%%"), _quoted(table).replace("%", "%%")
    return VALUES_TUPLE.sub(lambda _: f"SELECT * FROM {source} WHERE {day} > %s AND {day} <= %s", write, count=1)


STATEMENT_BINLOG = 1665  # READ COMMITTED writes refused: binlog_format=STATEMENT


def _aggregate(conn: pymysql.Connection, cur: pymysql.cursors.Cursor, table: str, step: Step) -> None:
    """The step's SELECT into a temporary table, read as READ COMMITTED: InnoDB then reads the
    source as a consistent read and locks none of its rows (REPEATABLE READ would share-lock every
    row scanned, as the one statement does)."""
    cur.execute(f"DROP TEMPORARY TABLE IF EXISTS {_quoted(table)}")
    conn.commit()  # SET TRANSACTION applies to the next transaction and is refused inside one
    cur.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
    try:
        cur.execute(f"CREATE TEMPORARY TABLE {_quoted(table)} {step.sql}")
    except pymysql.err.MySQLError as exc:
        if not exc.args or exc.args[0] != STATEMENT_BINLOG:
            raise
        conn.rollback()
        log.warning("step %s: binlog_format=STATEMENT refuses a READ COMMITTED read, so this scan locks"
                    " the rows it reads until it ends; binlog_format MIXED or ROW avoids that", step.id)
        cur.execute(f"CREATE TEMPORARY TABLE {_quoted(table)} {step.sql}")
    conn.commit()


def run_daily(
    conn: pymysql.Connection, hop: HopBundle, step: Step, position: int | None, batch_size: int
) -> tuple[int, int]:
    """One scan computes every day's aggregate (`step.sql`) into a temporary table, locking no
    source rows; `step.write` then copies it into the target whole days per transaction, each batch
    committed with the last day it holds. Nothing leaves the server. The write sets values (ON
    DUPLICATE KEY UPDATE c = VALUES(c)), so a day's result never depends on how often it was
    written; a crash loses the temporary table, and the next run computes it again. (batches, rows)."""
    version = str(hop.version)
    table = f"coai_{step.id.replace('-', '_')}"
    number = written = 0
    with conn.cursor() as cur:
        started = time.monotonic()
        _aggregate(conn, cur, table, step)
        cur.execute(f"SELECT * FROM {_quoted(table)} LIMIT 0")
        day_column = cur.description[0][0]
        cur.execute(f"SELECT {_quoted(day_column)}, COUNT(*) FROM {_quoted(table)} GROUP BY 1")
        day_rows = cur.fetchall()
        conn.commit()
        log.info("hop %s step %s: %d rows aggregated in %.2fs", hop.hop, step.id,
                 sum(int(n) for _, n in day_rows), time.monotonic() - started)
        crash_point(f"{version}/{step.id}/scanned")
        ranges = day_ranges(day_rows, step, position, batch_size)
        copy = copy_statement(step.write, table, day_column)
        for index, (lo, hi) in enumerate(ranges):
            cur.execute(copy, (lo, hi))
            number += 1
            written += sum(int(n) for day, n in day_rows if lo < day <= hi)
            crash_point(f"{version}/{step.id}/{number}")
            save_progress(cur, hop, step, day_key(hi, step), done=index == len(ranges) - 1)
            conn.commit()
            crash_point(f"{version}/{step.id}/{number}/committed")
        if not ranges:
            save_progress(cur, hop, step, position, done=True)
            conn.commit()
        cur.execute(f"DROP TEMPORARY TABLE IF EXISTS {_quoted(table)}")
    return number, written
