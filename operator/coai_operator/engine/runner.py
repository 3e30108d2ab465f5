"""Apply bundle steps to a database: resumable, exactly-once where SQL allows it.

Every unit of work (one statement of an `sql` step, one key range of a `batched` step, a batch
of whole days of a `daily` step; see datasteps.py) commits together with its progress row in
`schema_migrations_progress`, so after a crash a re-run continues after the last committed unit.
MariaDB commits DDL on its own, before the progress row can be written: a crash in that window
re-runs the DDL, which is why hop DDL is written with IF [NOT] EXISTS. A hop is recorded in
`schema_migrations` and its progress rows deleted in one transaction.

`COAI_ENGINE_CRASH_AFTER=<point>` makes the process SIGKILL itself at that point (tests use it to
crash deterministically). Points: `<version>/start`, `<version>/<step>/<n>` (unit n executed, not
committed), `<version>/<step>/<n>/committed`, `<version>/steps-done`, `<version>/recorded`.
n counts statements (sql) or batches (batched, daily) from 1 in each run of the process; a
daily step also has `<version>/<step>/scanned` (aggregate read, nothing written yet).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pymysql

from coai_operator.bundles import Baseline, HopBundle, Step
from coai_operator.domain.errors import MigrationError
from coai_operator.engine.datasteps import run_batched, run_daily
from coai_operator.engine.progress import CRASH_ENV, crash_point, save_progress, work_checksum
from coai_operator.engine.schema_state import PROGRESS_TABLE, TRACKING_TABLE, StepProgress

log = logging.getLogger(__name__)

__all__ = ["CRASH_ENV", "DEFAULT_BATCH_SIZE", "apply_hop", "crash_point", "install_baseline", "named_lock"]

DEFAULT_BATCH_SIZE = 5000
DATA_STEPS = {"batched": run_batched, "daily": run_daily}


class LockBusyError(MigrationError):
    reason = "Locked"


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


def _check_resumable(hop: HopBundle, progress: dict[str, StepProgress]) -> None:
    steps = {step.id: step for step in hop.steps}
    for row in progress.values():
        step = steps.get(row.step)
        if step is None or row.checksum != work_checksum(step, row.position):
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
            elif step.kind in DATA_STEPS:
                batches, rows = DATA_STEPS[step.kind](conn, hop, step, position, batch_size)
                result.batches += batches
                result.rows += rows
                log.info("hop %s step %s: %d batches, %d rows changed", hop.hop, step.id, batches, rows)
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
            save_progress(cur, hop, step, number, done=number == len(statements))
            conn.commit()
            result.statements += 1
            crash_point(f"{version}/{step.id}/{number}/committed")


def _run_check(conn: pymysql.Connection, hop: HopBundle, step: Step) -> None:
    with conn.cursor() as cur:
        cur.execute(step.sql)
        row = cur.fetchone()
        count = int(row[0]) if row and row[0] is not None else 0
        if count:
            conn.rollback()
            template = step.message or "check {step} found {count} offending row(s)"
            raise MigrationError(f"hop {hop.hop} check {step.id}: " + template.format(count=count, step=step.id))
        save_progress(cur, hop, step, None, done=True)
        conn.commit()
