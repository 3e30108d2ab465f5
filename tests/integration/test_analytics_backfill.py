"""`analytics-backfill` (a `daily` step) on real MariaDB: batched by day, it ends with exactly what
the same aggregate as one statement over the whole table writes, and a run killed between (or
inside) its per-day batches and run again ends the same way."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pymysql
import pytest
from e2e.bench.backfill_bench import ONE_RANGE_SQL

from coai_operator.bundles import load_bundle
from coai_operator.engine.datasteps import run_daily
from coai_operator.engine.dbconfig import DbConfig, connect

from .migrate_support import engine, env_for, new_database, ok, query

pytestmark = pytest.mark.integration
__all__ = ["new_database"]  # fixture

SEED = ("seed-data", "--seed", "daily", "--version", "1.8.0", "--users", "60", "--conversations-per-user", "4")
MIGRATE = ("migrate", "--target", "1.9.0", "--batch-size", "10")
DAILY = "SELECT day, model_name, conversation_count, token_count FROM analytics_daily ORDER BY day, model_name"


@pytest.fixture
def one_range(new_database: Callable[[], DbConfig]) -> list[tuple]:
    """analytics_daily as the one-range statement computes it, on the same seed."""
    cfg = new_database()
    env = env_for(cfg)
    ok(engine(env, *SEED))
    ok(engine(env, *MIGRATE))
    query(cfg, "DELETE FROM analytics_daily")
    query(cfg, ONE_RANGE_SQL["analytics-backfill"])
    rows = query(cfg, DAILY)
    assert len({row[0] for row in rows}) > 20  # many days, so --batch-size 10 makes many batches
    return rows


def _crash(env: dict[str, str], point: str) -> None:
    run = engine(env, *MIGRATE, extra_env={"COAI_ENGINE_CRASH_AFTER": point})
    assert run.returncode == -signal.SIGKILL, f"{point} was not reached: {run.stderr[-2000:]}"


def test_batched_by_day_equals_one_range(new_database: Callable[[], DbConfig], one_range: list[tuple]) -> None:
    cfg = new_database()
    env = env_for(cfg)
    ok(engine(env, *SEED))
    result = ok(engine(env, *MIGRATE))
    (hop,) = result["applied"]
    assert hop["batches"] > 5 and hop["rows"] == len(one_range)
    assert query(cfg, DAILY) == one_range


def _days_up_to_marker(cfg: DbConfig, one_range: list[tuple]) -> list[tuple]:
    """What the progress row vouches for holds: exactly the whole days up to its position are written."""
    (position,) = query(cfg, "SELECT position FROM schema_migrations_progress WHERE step = 'analytics-backfill'")[0]
    written = query(cfg, DAILY)
    assert written == [row for row in one_range if int(row[0].strftime("%Y%m%d")) <= position]
    return written


def test_rerun_after_interruptions_is_idempotent(new_database: Callable[[], DbConfig], one_range: list[tuple]) -> None:
    cfg = new_database()
    env = env_for(cfg)
    ok(engine(env, *SEED))
    _crash(env, "1.9.0/analytics-backfill/3/committed")
    first = _days_up_to_marker(cfg, one_range)
    assert 0 < len(first) < len(one_range)
    _crash(env, "1.9.0/analytics-backfill/2")  # batch 2 executed, its transaction not committed
    second = _days_up_to_marker(cfg, one_range)
    assert len(first) < len(second) < len(one_range)  # batch 1 of this run is there, batch 2 is not
    _crash(env, "1.9.0/analytics-backfill/scanned")  # aggregate read, nothing written
    assert _days_up_to_marker(cfg, one_range) == second
    _crash(env, "1.9.0/analytics-backfill/1/committed")
    ok(engine(env, *MIGRATE))
    assert query(cfg, DAILY) == one_range
    assert query(cfg, "SELECT COUNT(*) FROM schema_migrations_progress") == [(0,)]


def test_the_scan_locks_no_conversation(new_database: Callable[[], DbConfig]) -> None:
    """At every commit of the step (the aggregate's read, each batch) a concurrent writer could take
    any conversation row: the aggregate is read as READ COMMITTED, which locks nothing."""
    cfg = new_database()
    ok(engine(env_for(cfg), "seed-data", "--seed", "daily", "--version", "1.9.0", "--users", "30"))
    query(cfg, "DELETE FROM analytics_daily")
    hop = load_bundle().hops["1.8.0-to-1.9.0"]
    step = next(s for s in hop.steps if s.id == "analytics-backfill")
    conn = connect(cfg, autocommit=False)
    probes: list[str] = []
    commit = conn.commit

    def probing_commit() -> None:
        other = connect(cfg, autocommit=False)
        try:
            with other.cursor() as cur:
                cur.execute("SELECT id FROM conversations ORDER BY id LIMIT 1 FOR UPDATE NOWAIT")
                probes.append("free")
        except pymysql.err.MySQLError as exc:
            probes.append(f"locked ({exc.args[0]})")
        finally:
            other.close()
        commit()

    conn.commit = probing_commit  # type: ignore[method-assign]
    try:
        batches, rows = run_daily(conn, hop, step, None, 10)
    finally:
        conn.close()
    assert batches > 1 and rows == len(query(cfg, DAILY))
    assert probes and set(probes) == {"free"}, probes
