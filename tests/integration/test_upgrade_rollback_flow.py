"""The operator's data path end to end on a seeded 1.6 install: backup → migrate → migrate-storage →
validate → export → restore, ending exactly where it started."""

from __future__ import annotations

from pathlib import Path

import pytest

from coai_operator.engine.dbconfig import DbConfig

from .engine_support import query, run_engine, table_checksums, tree_digest

pytestmark = pytest.mark.integration

pytest.importorskip("coai_operator.engine.seed")


def _ok(env: dict[str, str], *args: str) -> dict:
    run = run_engine(env, *args)
    assert run.returncode == 0, run.stderr
    return run.result


def test_upgrade_then_roll_back_to_the_backup(db_config: DbConfig, db_env: dict[str, str], tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    _ok(db_env, "seed-data", "--version", "1.6.0", "--users", "20", "--conversations-per-user", "2",
        "--files", "15", "--storage", str(storage))
    before_db, before_files = table_checksums(db_config), tree_digest(storage)

    backup = _ok(db_env, "backup", "--dir", str(tmp_path / "bk"), "--storage", str(storage), "--label", "pre-2.0")
    assert backup["schemaVersion"].startswith("1.6")
    assert backup["rowCounts"]["users"] == 20

    _ok(db_env, "migrate", "--target", "2.0.0")
    moved = _ok(db_env, "migrate-storage", "--storage", str(storage))
    assert moved["migrated"] == query(db_config, "SELECT COUNT(*) FROM files")[0][0] == 15
    assert moved["missing"]["count"] == 0
    integrity = _ok(db_env, "validate", "--checks", "database,dataIntegrity", "--manifest", str(tmp_path / "bk"))
    assert integrity["passed"] == 2

    _ok(db_env, "backup", "--dir", str(tmp_path / "bk" / "post-migration"), "--storage", str(storage))
    restored = _ok(db_env, "restore", "--dir", str(tmp_path / "bk"), "--storage", str(storage))
    assert restored["rowCounts"] == backup["rowCounts"]
    assert table_checksums(db_config) == before_db
    assert tree_digest(storage) == before_files
    exact = _ok(db_env, "validate", "--checks", "dataIntegrity", "--exact", "--manifest", str(tmp_path / "bk"))
    assert exact["failed"] == 0
