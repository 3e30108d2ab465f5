"""A migration SIGKILLed at any point and run again ends exactly where an uninterrupted one does.

Crashes are placed with COAI_ENGINE_CRASH_AFTER=<point> (see engine/runner.py): the process
kills itself there, e.g. right after a DDL statement committed but before its progress row was
written, or in the middle of a batch's transaction.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from coai_operator.engine.dbconfig import DbConfig

from .migrate_support import engine, env_for, fingerprint, new_database, ok, query

pytestmark = pytest.mark.integration
__all__ = ["new_database"]  # fixture

SEED = ("seed-data", "--seed", "crash", "--users", "40", "--conversations-per-user", "3", "--admin-ratio", "0.25")
MIGRATE = ("migrate", "--target", "2.0.0", "--batch-size", "7")

# Each list is one database's history: crash at each point in turn, then finish. In every
# re-run, statement and batch numbers count from 1 again.
LINEAGES = {
    "ddl-and-dml-windows": [
        "1.7.0/schema/1",                    # DDL committed, progress not written
        "1.9.0/analytics-backfill/2",        # batch executed, transaction open (rolled back)
        "1.9.0/analytics-backfill/1/committed",
        "2.0.0/default-roles/1",             # INSERT IGNORE executed, not committed
        "2.0.0/user-roles/2/committed",
        "2.0.0/drop-is-admin/1",             # column dropped, step not marked done
        "2.0.0/steps-done",                  # everything done, hop not recorded
    ],
    "between-units": [
        "1.7.0/start",
        "1.8.0/schema/2/committed",
        "1.9.0/schema/3",
        "2.0.0/schema/1",
        "2.0.0/schema/4/committed",
        "2.0.0/preferences/2",
        "2.0.0/conversation-metadata/3",
        "2.0.0/recorded",
    ],
}


@pytest.fixture
def reference(new_database: Callable[[], DbConfig]) -> dict:
    """The same seed migrated in one go (and with the default batch size)."""
    cfg = new_database()
    env = env_for(cfg)
    ok(engine(env, *SEED))
    ok(engine(env, "migrate", "--target", "2.0.0"))
    return fingerprint(cfg)


def _crash(env: dict[str, str], point: str, *args: str) -> None:
    run = engine(env, *args, extra_env={"COAI_ENGINE_CRASH_AFTER": point})
    assert run.returncode == -signal.SIGKILL, f"{point} was not reached: {run.stderr[-2000:]}"


@pytest.mark.parametrize("lineage", sorted(LINEAGES))
def test_killed_and_rerun_equals_uninterrupted(
    new_database: Callable[[], DbConfig], reference: dict, lineage: str
) -> None:
    cfg = new_database()
    env = env_for(cfg)
    ok(engine(env, *SEED))
    for point in LINEAGES[lineage]:
        _crash(env, point, *MIGRATE)
    result = ok(engine(env, *MIGRATE))

    after = fingerprint(cfg)
    assert after == reference
    assert query(cfg, "SELECT COUNT(*) FROM schema_migrations_progress") == [(0,)]
    if lineage == "between-units":  # the last crash came after the hop was recorded
        assert result["noop"] is True


def test_interrupted_plan_reports_the_hop(new_database: Callable[[], DbConfig]) -> None:
    cfg = new_database()
    env = env_for(cfg)
    ok(engine(env, *SEED))
    _crash(env, "2.0.0/preferences/1/committed", *MIGRATE)

    plan = ok(engine(env, "plan", "--target", "2.0.0"))
    assert plan["current"] == "1.9.0"
    assert plan["interrupted"] == {"2.0.0": ["schema", "default-roles", "user-roles"]}
    # Stopping short of the interrupted hop leaves it half-done: say so.
    noop = ok(engine(env, "migrate", "--target", "1.9.0"))
    assert noop["noop"] is True
    assert any("interrupted" in w for w in noop["warnings"])


def test_interrupted_install_on_empty_database(new_database: Callable[[], DbConfig]) -> None:
    args = (*MIGRATE, "--assume-version", "1.7.0")
    reference_cfg, cfg = new_database(), new_database()
    ok(engine(env_for(reference_cfg), *args))

    env = env_for(cfg)
    _crash(env, "1.6.0/schema/2", *args)
    refused = engine(env, *MIGRATE)  # without --assume-version, a half-made schema is not guessed at
    assert refused.returncode == 1 and "interrupted schema install" in refused.result["error"]
    _crash(env, "1.7.0/schema/1/committed", *args)
    ok(engine(env, *args))
    assert fingerprint(cfg) == fingerprint(reference_cfg)
