"""The data steps of a hop: `batched` (key ranges) and `daily` (a per-day aggregate).

Both commit each unit of work together with its progress row (progress.py), so a re-run after a
crash continues after the last committed unit and never applies one twice.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pymysql

from coai_operator.bundles import HopBundle, Step
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


def day_batches(
    rows: Sequence[Sequence[Any]], step: Step, after: int | None, batch_size: int
) -> Iterator[tuple[int, list[Sequence[Any]]]]:
    """Whole days in day order, skipping days <= `after`: batches of at least one day, adding days
    while the batch has fewer than `batch_size` rows. Yields (last day's key, rows) (pure)."""
    keyed = sorted(((day_key(row[0], step), row) for row in rows), key=lambda pair: pair[0])
    batch: list[Sequence[Any]] = []
    current: int | None = None
    for key, row in keyed:
        if after is not None and key <= after:
            continue
        if key != current and current is not None and len(batch) >= batch_size:
            yield current, batch
            batch = []
        batch.append(row)
        current = key
    if batch and current is not None:
        yield current, batch


def run_daily(
    conn: pymysql.Connection, hop: HopBundle, step: Step, position: int | None, batch_size: int
) -> tuple[int, int]:
    """One scan computes every day's aggregate (`step.sql`, a plain SELECT: a consistent read that
    locks no rows); `step.write` then stores it whole days per transaction, each batch committed
    with the last day it holds. The write sets values (ON DUPLICATE KEY UPDATE c = VALUES(c)), so
    the result of a day never depends on how often it was written. (batches, rows written)."""
    version = str(hop.version)
    number = written = 0
    with conn.cursor() as cur:
        started = time.monotonic()
        cur.execute(step.sql)
        rows = cur.fetchall()
        conn.commit()  # ends the read view before the first write
        log.info("hop %s step %s: %d rows aggregated in %.2fs", hop.hop, step.id, len(rows),
                 time.monotonic() - started)
        crash_point(f"{version}/{step.id}/scanned")
        batches = list(day_batches(rows, step, position, batch_size))
        for index, (last_day, batch) in enumerate(batches):
            cur.executemany(step.write, batch)
            number, written = number + 1, written + len(batch)
            crash_point(f"{version}/{step.id}/{number}")
            save_progress(cur, hop, step, last_day, done=index == len(batches) - 1)
            conn.commit()
            crash_point(f"{version}/{step.id}/{number}/committed")
        if not batches:
            save_progress(cur, hop, step, position, done=True)
            conn.commit()
    return number, written
