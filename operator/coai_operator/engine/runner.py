"""Apply bundle steps to a database: resumable, exactly-once where SQL allows it.

Every unit of work (one statement of an `sql` step, one key range of a `batched` step) commits
together with its progress row in `schema_migrations_progress`, so after a crash a re-run
continues after the last committed unit. MariaDB commits DDL on its own, before the progress
row can be written: a crash in that window re-runs the DDL, which is why hop DDL is written
with IF [NOT] EXISTS. A hop is recorded in `schema_migrations` and its progress rows deleted in
one transaction.

`COAI_ENGINE_CRASH_AFTER=<point>` makes the process SIGKILL itself at that point (tests use it to
crash deterministically). Points: `<version>/start`, `<version>/<step>/<n>` (unit n executed, not
committed), `<version>/<step>/<n>/committed`, `<version>/steps-done`, `<version>/recorded`.
n counts statements (sql) or batches (batched) from 1 in each run of the process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pymysql

from coai_operator.bundles import Baseline, HopBundle, Step
from coai_operator.domain.errors import MigrationError
from coai_operator.engine.schema_state import PROGRESS_TABLE, TRACKING_TABLE, StepProgress

log = logging.getLogger(__name__)

CRASH_ENV = "COAI_ENGINE_CRASH_AFTER"
DEFAULT_BATCH_SIZE = 5000
PROGRESS_LOG_SECONDS = 10.0


class LockBusyError(MigrationError):
    reason = "Locked"


def crash_point(name: str) -> None:
    log.debug("crash point %s", name)
    if os.environ.get(CRASH_ENV) == name:
        log.warning("%s=%s: killing this process now", CRASH_ENV, name)
        os.kill(os.getpid(), signal.SIGKILL)


def lock_name(database: str) -> str:
    name = f"coai-migrate:{database}"
    # Lock names are server-wide and at most 64 characters.
    return name if len(name) <= 64 else "coai-migrate:" + hashlib.sha256(database.encode()).hexdigest()[:32]


@contextlib.contextmanager
def named_lock(conn: pymysql.Connection, database: str, timeout: int) -> Iterator[None]:
    """Hold the database's migration lock (GET_LOCK) for the block; released when the connection dies."""
    name = lock_name(database)
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, %s)", (name, timeout))
        (got,) = cur.fetchone()
    conn.commit()  # start the work with a fresh snapshot, after the previous holder's last commit
    if got != 1:
        raise LockBusyError(
            f"another migration of {database} holds lock {name!r} (waited {timeout}s);"
            " let it finish, or find it with SELECT IS_USED_LOCK(...) and check it is gone"
        )
    log.info("holding lock %s", name)
    try:
        yield
    finally:
        with contextlib.suppress(pymysql.err.Error), conn.cursor() as cur:
            cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
            conn.commit()


_RECORD_SQL = (
    f"INSERT INTO {TRACKING_TABLE} (version, description, checksum) VALUES (%s, %s, %s)"
    " ON DUPLICATE KEY UPDATE description = VALUES(description), checksum = VALUES(checksum)"
)


def record_version(conn: pymysql.Connection, version: str, description: str, checksum: str | None) -> None:
    with conn.cursor() as cur:
        cur.execute(_RECORD_SQL, (version, description, checksum))
    conn.commit()


def install_baseline(conn: pymysql.Connection, baseline: Baseline) -> HopResult:
    """Create the baseline schema and record it (resumable like any hop)."""
    return apply_hop(conn, baseline.as_hop())


@dataclass
class HopResult:
    version: str
    checksum: str
    resumed: bool
    statements: int = 0
    batches: int = 0
    rows: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "seconds": round(self.seconds, 3)}


def _progress(conn: pymysql.Connection, version: str) -> dict[str, StepProgress]:
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT version, step, position, done, checksum FROM {PROGRESS_TABLE} WHERE version = %s", (version,)
        )
        return {s: StepProgress(v, s, p, bool(d), c) for v, s, p, d, c in cur.fetchall()}


def _work_checksum(step: Step, position: int | None) -> str:
    """What a progress row vouches for: the statements of an sql step done so far, or the whole
    step otherwise. A re-run may continue only if this still matches (a user may fix a statement
    that failed, not one that already ran)."""
    if step.kind == "sql":
        body: object = [step.kind, step.statements()[: int(position or 0)]]
    else:
        body = step.content()
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _save_progress(
    cur: pymysql.cursors.Cursor, hop: HopBundle, step: Step, position: int | None, done: bool
) -> None:
    cur.execute(
        f"INSERT INTO {PROGRESS_TABLE} (version, step, position, done, checksum) VALUES (%s, %s, %s, %s, %s)"
        " ON DUPLICATE KEY UPDATE position = VALUES(position), done = VALUES(done), checksum = VALUES(checksum)",
        (str(hop.version), step.id, position, int(done), _work_checksum(step, position)),
    )


def _check_resumable(hop: HopBundle, progress: dict[str, StepProgress]) -> None:
    steps = {step.id: step for step in hop.steps}
    for row in progress.values():
        step = steps.get(row.step)
        if step is None or row.checksum != _work_checksum(step, row.position):
            how = "applied" if row.done else "partly applied"
            raise MigrationError(
                f"hop {hop.hop} step {row.step} was {how} with different SQL than this bundle has;"
                " re-run with the bundle it started with, or restore the pre-migration backup"
            )


def apply_hop(conn: pymysql.Connection, hop: HopBundle, *, batch_size: int = DEFAULT_BATCH_SIZE) -> HopResult:
    """Run (or finish) one hop and record it. The caller holds the migration lock."""
    version = str(hop.version)
    started = time.monotonic()
    progress = _progress(conn, version)
    _check_resumable(hop, progress)
    result = HopResult(version=version, checksum=hop.checksum, resumed=bool(progress))
    log.info("hop %s: %s%s", hop.hop, hop.description, " (resuming)" if progress else "")
    crash_point(f"{version}/start")
    for step in hop.steps:
        done = progress.get(step.id)
        if done is not None and done.done:
            log.info("hop %s step %s: already done", hop.hop, step.id)
            continue
        position = done.position if done is not None else None
        step_started = time.monotonic()
        try:
            if step.kind == "sql":
                _run_sql(conn, hop, step, int(position or 0), result)
            elif step.kind == "batched":
                _run_batched(conn, hop, step, position, batch_size, result)
            else:
                _run_check(conn, hop, step)
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else "?"
            text = str(exc.args[1] if len(exc.args) > 1 else exc).splitlines()[0]
            raise MigrationError(
                f"hop {hop.hop} step {step.id} ({step.origin}) failed: database error {code}: {text};"
                " fix the cause and run migrate again (it resumes at this step), or restore the backup"
            ) from exc
        log.info("hop %s step %s: done in %.2fs", hop.hop, step.id, time.monotonic() - step_started)
    crash_point(f"{version}/steps-done")
    with conn.cursor() as cur:
        cur.execute(_RECORD_SQL, (version, hop.description, hop.checksum))
        cur.execute(f"DELETE FROM {PROGRESS_TABLE} WHERE version = %s", (version,))
    conn.commit()
    crash_point(f"{version}/recorded")
    result.seconds = time.monotonic() - started
    log.info("hop %s: recorded (checksum %s) in %.2fs", hop.hop, hop.checksum[:12], result.seconds)
    return result


def _run_sql(conn: pymysql.Connection, hop: HopBundle, step: Step, position: int, result: HopResult) -> None:
    statements = step.statements()
    version = str(hop.version)
    with conn.cursor() as cur:
        for number, statement in enumerate(statements, start=1):
            if number <= position:
                continue
            log.debug("hop %s step %s statement %d: %s", hop.hop, step.id, number, statement.splitlines()[0])
            cur.execute(statement)
            if cur.description:
                cur.fetchall()
            crash_point(f"{version}/{step.id}/{number}")
            _save_progress(cur, hop, step, number, done=number == len(statements))
            conn.commit()
            result.statements += 1
            crash_point(f"{version}/{step.id}/{number}/committed")


def _run_batched(
    conn: pymysql.Connection, hop: HopBundle, step: Step, position: int | None, batch_size: int, result: HopResult
) -> None:
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
            _save_progress(cur, hop, step, hi, done=False)
            conn.commit()
            crash_point(f"{version}/{step.id}/{number}/committed")
            lo = hi
            if time.monotonic() - last_log > PROGRESS_LOG_SECONDS:
                log.info("hop %s step %s: %d batches, %d rows changed, up to %s=%d",
                         hop.hop, step.id, number, rows, step.key, hi)
                last_log = time.monotonic()
        _save_progress(cur, hop, step, lo, done=True)
        conn.commit()
    result.batches += number
    result.rows += rows
    log.info("hop %s step %s: %d batches, %d rows changed", hop.hop, step.id, number, rows)


def _run_check(conn: pymysql.Connection, hop: HopBundle, step: Step) -> None:
    with conn.cursor() as cur:
        cur.execute(step.sql)
        row = cur.fetchone()
        count = int(row[0]) if row and row[0] is not None else 0
        if count:
            conn.rollback()
            template = step.message or "check {step} found {count} offending row(s)"
            raise MigrationError(f"hop {hop.hop} check {step.id}: " + template.format(count=count, step=step.id))
        _save_progress(cur, hop, step, None, done=True)
        conn.commit()
