"""backup → damage → restore, end to end through the CLI, against a real MariaDB and real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coai_operator.engine.dbconfig import DbConfig

from .engine_support import (
    populated_app,
    query,
    recreate_database,
    routines_and_views,
    run_engine,
    table_checksums,
    tree_digest,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def app(db_config: DbConfig, tmp_path: Path) -> Path:
    """A populated database and storage tree; returns the storage root."""
    return populated_app(db_config, tmp_path / "storage")


def _backup(db_env: dict[str, str], target: Path, storage: Path, *extra: str) -> dict:
    run = run_engine(db_env, "backup", "--dir", str(target), "--storage", str(storage), "--label", "test", *extra)
    assert run.returncode == 0, run.stderr
    assert run.result["ok"] is True
    return run.result


def test_backup_writes_verified_manifest(db_config: DbConfig, db_env: dict[str, str], app: Path,
                                         tmp_path: Path) -> None:
    result = _backup(db_env, tmp_path / "bk", app)

    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    assert manifest["formatVersion"] == 1
    assert manifest["include"] == ["database", "storage"]
    assert manifest["label"] == "test"
    assert manifest["database"]["name"] == db_config.database
    assert manifest["database"]["concurrentChanges"] == {}
    assert {a["name"] for a in manifest["artifacts"]} == {"database.sql.gz", "storage.tar.gz"}
    assert manifest["rowCounts"] == {"audit": 18, "conversations": 18, "files": 0, "odd ` name; --": 2, "users": 6}
    assert manifest["storage"]["fileCount"] == 3
    assert manifest["storage"]["symlinkCount"] == 1
    assert result["rowCounts"] == manifest["rowCounts"]
    assert result["artifacts"] == [{k: a[k] for k in ("name", "bytes", "sha256")} for a in manifest["artifacts"]]
    assert result["location"] == str(tmp_path / "bk")
    assert sorted(p.name for p in (tmp_path / "bk").iterdir()) == ["database.sql.gz", "manifest.json",
                                                                  "storage.tar.gz"]


def test_backup_drop_database_restore_is_identical(db_config: DbConfig, db_env: dict[str, str], app: Path,
                                                   tmp_path: Path) -> None:
    checksums, objects, files = table_checksums(db_config), routines_and_views(db_config), tree_digest(app)
    _backup(db_env, tmp_path / "bk", app)

    recreate_database(db_config)
    (app / "added after backup.txt").write_text("must disappear")
    (app / "avatars" / "new").mkdir()
    (app / "big.bin").write_bytes(b"changed")
    (app / "notes 'quoted' \"x\".txt").unlink()

    for _ in range(2):  # a second restore gives the same result
        run = run_engine(db_env, "restore", "--dir", str(tmp_path / "bk"), "--storage", str(app))
        assert run.returncode == 0, run.stderr
        assert run.result["ok"] is True
        assert run.result["rowCounts"]["users"] == 6
        assert table_checksums(db_config) == checksums
        assert routines_and_views(db_config) == objects
        assert tree_digest(app) == files


def test_restore_recreates_a_dropped_database(db_config: DbConfig, db_env: dict[str, str], app: Path,
                                              tmp_path: Path) -> None:
    checksums = table_checksums(db_config)
    _backup(db_env, tmp_path / "bk", app, "--include", "database")
    query(db_config, f"DROP DATABASE `{db_config.database}`")
    run = run_engine(db_env, "restore", "--dir", str(tmp_path / "bk"))
    assert run.returncode == 0, run.stderr
    assert table_checksums(db_config) == checksums


def test_restore_removes_tables_and_rows_added_after_backup(db_config: DbConfig, db_env: dict[str, str],
                                                           app: Path, tmp_path: Path) -> None:
    checksums = table_checksums(db_config)
    _backup(db_env, tmp_path / "bk", app, "--include", "database")
    query(db_config, "CREATE TABLE roles (id INT PRIMARY KEY)")
    query(db_config, "INSERT INTO users (username) VALUES ('late')")
    query(db_config, "ALTER TABLE users DROP COLUMN is_admin")

    run = run_engine(db_env, "restore", "--dir", str(tmp_path / "bk"))
    assert run.returncode == 0, run.stderr
    assert table_checksums(db_config) == checksums
    assert run.result["restored"] == ["database"]


@pytest.mark.parametrize("artifact", ["database.sql.gz", "storage.tar.gz"])
def test_restore_refuses_a_flipped_byte_and_changes_nothing(db_config: DbConfig, db_env: dict[str, str], app: Path,
                                                            tmp_path: Path, artifact: str) -> None:
    _backup(db_env, tmp_path / "bk", app)
    path = tmp_path / "bk" / artifact
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    query(db_config, "INSERT INTO users (username) VALUES ('after backup')")
    (app / "after backup.txt").write_text("stays")
    checksums, files = table_checksums(db_config), tree_digest(app)

    run = run_engine(db_env, "restore", "--dir", str(tmp_path / "bk"), "--storage", str(app))

    assert run.returncode == 1
    assert run.result["ok"] is False
    assert run.result["reason"] == "RestoreFailed"
    assert artifact in run.result["error"]
    assert "nothing was changed" in run.result["error"]
    assert table_checksums(db_config) == checksums
    assert tree_digest(app) == files


def test_rerun_reuses_complete_backup_unless_overwrite(db_config: DbConfig, db_env: dict[str, str], app: Path,
                                                       tmp_path: Path) -> None:
    first = _backup(db_env, tmp_path / "bk", app)
    query(db_config, "INSERT INTO users (username) VALUES ('later')")

    again = _backup(db_env, tmp_path / "bk", app)
    assert again["reused"] is True
    assert again["artifacts"] == first["artifacts"]
    assert again["rowCounts"]["users"] == 6

    fresh = _backup(db_env, tmp_path / "bk", app, "--overwrite")
    assert fresh["reused"] is False
    assert fresh["rowCounts"]["users"] == 7

    other = run_engine(db_env, "backup", "--dir", str(tmp_path / "bk"), "--include", "database")
    assert other.returncode == 1
    assert "--overwrite" in other.result["error"]


def test_crash_mid_backup_leaves_no_manifest_and_rerun_completes(db_env: dict[str, str], app: Path,
                                                                 tmp_path: Path) -> None:
    target = tmp_path / "bk"
    crashed = run_engine({**db_env, "COAI_ENGINE_CRASH_AFTER": "1"}, "backup", "--dir", str(target),
                         "--storage", str(app))
    assert crashed.returncode == -9
    assert (target / "database.sql.gz").exists()
    assert not (target / "manifest.json").exists()
    restore = run_engine(db_env, "restore", "--dir", str(target), "--storage", str(app))
    assert restore.returncode == 1
    assert "manifest.json is missing" in restore.result["error"]

    done = _backup(db_env, target, app)
    assert done["reused"] is False
    assert (target / "manifest.json").exists()
    assert not [p for p in target.iterdir() if p.name.endswith(".tmp")]


def test_export_post_migration_data_next_to_the_backup(db_config: DbConfig, db_env: dict[str, str], app: Path,
                                                       tmp_path: Path) -> None:
    pre = _backup(db_env, tmp_path / "mig", app)
    query(db_config, "INSERT INTO users (username) VALUES ('post-migration user')")
    post = _backup(db_env, tmp_path / "mig" / "post-migration", app, "--label", "post-migration")
    assert post["rowCounts"]["users"] == 7
    assert pre["rowCounts"]["users"] == 6
    # The pre-migration backup is untouched and still restorable.
    run = run_engine(db_env, "restore", "--dir", str(tmp_path / "mig"), "--include", "database")
    assert run.returncode == 0, run.stderr
    assert query(db_config, "SELECT COUNT(*) FROM users")[0][0] == 6


def test_zstd_compression_roundtrip(db_config: DbConfig, db_env: dict[str, str], app: Path, tmp_path: Path) -> None:
    pytest.importorskip("shutil").which("zstd") or pytest.skip("no zstd binary")
    checksums, files = table_checksums(db_config), tree_digest(app)
    result = _backup(db_env, tmp_path / "bk", app, "--compression", "zstd")
    assert {a["name"] for a in result["artifacts"]} == {"database.sql.zst", "storage.tar.zst"}
    recreate_database(db_config)
    (app / "big.bin").unlink()
    run = run_engine(db_env, "restore", "--dir", str(tmp_path / "bk"), "--storage", str(app))
    assert run.returncode == 0, run.stderr
    assert table_checksums(db_config) == checksums
    assert tree_digest(app) == files
