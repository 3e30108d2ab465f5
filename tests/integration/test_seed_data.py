"""`engine seed-data`: realistic, deterministic datasets of a given version."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from coai_operator.engine.dbconfig import DbConfig

from .migrate_support import columns, engine, env_for, fingerprint, new_database, query, seed, tables

pytestmark = pytest.mark.integration
__all__ = ["new_database"]  # fixture


def test_seed_1_6_with_files(db_config: DbConfig, db_env: dict[str, str], tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    result = seed(db_env, "--version", "1.6.0", "--users", "40", "--conversations-per-user", "3",
                  "--files", "60", "--storage", str(storage), "--admin-ratio", "0.2")

    assert result["version"] == "1.6.0"
    assert (result["users"], result["conversations"], result["files"], result["channels"]) == (40, 120, 60, 4)
    assert query(db_config, "SELECT version FROM schema_migrations") == [("1.6.0",)]
    assert query(db_config, "SELECT COUNT(*) FROM users")[0][0] == 40
    assert query(db_config, "SELECT COUNT(*) FROM conversations")[0][0] == 120
    assert "is_admin" in columns(db_config, "users")
    admins = query(db_config, "SELECT COUNT(*) FROM users WHERE is_admin = 1")[0][0]
    assert admins == result["admins"] and 1 <= admins < 40

    prefs = [p for (p,) in query(db_config, "SELECT preferences FROM users")]
    assert any(p is None for p in prefs)
    parsed = [json.loads(p) for p in prefs if p is not None]
    assert any(0 < len(p) < 5 for p in parsed)  # partial preferences
    assert query(db_config, "SELECT COUNT(*) FROM conversations WHERE metadata IS NULL")[0][0] > 0
    assert query(db_config, "SELECT COUNT(*) FROM conversations WHERE metadata IS NOT NULL")[0][0] > 0

    rows = query(db_config, "SELECT file_path, original_name, size, mime_type FROM files")
    assert len(rows) == 60
    for file_path, _original, size, _mime in rows:
        path = storage / file_path
        assert path.is_file(), file_path
        assert path.stat().st_size == size
    names = "".join(r[1] for r in rows)
    assert "'" in names and '"' in names and " " in names
    assert any(ord(ch) > 127 for ch in names)
    assert len({r[0] for r in rows}) == 60  # every file has its own path


def test_same_seed_same_dataset(new_database: Callable[[], DbConfig], tmp_path: Path) -> None:
    a, b, c = new_database(), new_database(), new_database()
    for cfg, name, seed_value in ((a, "a", "s1"), (b, "b", "s1"), (c, "c", "s2")):
        ok_run = engine(env_for(cfg), "seed-data", "--users", "25", "--files", "10",
                        "--storage", str(tmp_path / name), "--seed", seed_value)
        assert ok_run.returncode == 0, ok_run.stderr
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a)["checksum"]["users"] != fingerprint(c)["checksum"]["users"]


def test_seed_1_8_runs_the_hops(db_config: DbConfig, db_env: dict[str, str]) -> None:
    seed(db_env, "--version", "1.8.0", "--users", "10", "--conversations-per-user", "2")
    assert query(db_config, "SELECT version FROM schema_migrations ORDER BY version") == [
        ("1.6.0",), ("1.7.0",), ("1.8.0",)]
    assert "api_keys" in tables(db_config)
    assert "last_login_at" in columns(db_config, "users")
    assert "is_admin" in columns(db_config, "users")
    assert query(db_config, "SELECT COUNT(*) FROM schema_migrations_progress")[0][0] == 0


def test_seed_2_0_is_an_upgraded_dataset(db_config: DbConfig, db_env: dict[str, str]) -> None:
    seed(db_env, "--version", "2.0.0", "--users", "12", "--conversations-per-user", "2")
    assert "is_admin" not in columns(db_config, "users")
    assert query(db_config, "SELECT COUNT(DISTINCT user_id) FROM user_roles")[0][0] == 12
    assert query(db_config, "SELECT COUNT(*) FROM conversations WHERE metadata IS NULL")[0][0] == 0


def test_seed_refuses_a_database_with_tables(db_config: DbConfig, db_env: dict[str, str]) -> None:
    query(db_config, "CREATE TABLE precious (id INT PRIMARY KEY)")
    run = engine(db_env, "seed-data", "--users", "3")
    assert run.returncode == 1
    assert run.result["ok"] is False
    assert "not empty" in run.result["error"]
    assert tables(db_config) == ["precious"]


def test_seed_files_need_storage(db_env: dict[str, str]) -> None:
    run = engine(db_env, "seed-data", "--users", "3", "--files", "2")
    assert run.returncode == 1
    assert "--storage" in run.result["error"]
