"""/config/config.yaml in a backup and a restore: byte for byte, owner-only, never logged."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from coai_operator.engine.dbconfig import DbConfig
from tests.mariadb import engine_env, query

from .engine_support import run_engine

pytestmark = pytest.mark.integration

SECRET_KEY = "sk-upstream-channel-key-0123456789"
CONFIG = (b"channel:\n  - name: upstream\n    secret: " + SECRET_KEY.encode()
          + b"\n    endpoint: http://127.0.0.1:9\nmysql:\n  password: \"p\xc3\xa4ss \\t\"\n")


def test_config_yaml_is_backed_up_and_restored_byte_for_byte(tmp_path: Path, db_config: DbConfig) -> None:
    query(db_config, "CREATE TABLE auth (id INT PRIMARY KEY, username VARCHAR(24))")
    query(db_config, "INSERT INTO auth VALUES (1, 'root')")
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.yaml").write_bytes(CONFIG)
    env = engine_env(db_config)
    backup = run_engine(env, "backup", "--dir", str(tmp_path / "backup"), "--config", str(config))
    assert backup.returncode == 0, backup.stderr
    copy = tmp_path / "backup" / "config.yaml"
    assert copy.read_bytes() == CONFIG
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600, "the copy holds channel keys: owner only"
    assert {"name": "config.yaml", "bytes": len(CONFIG)}.items() <= next(
        a for a in backup.result["artifacts"] if a["name"] == "config.yaml").items()
    assert SECRET_KEY not in backup.stdout + backup.stderr

    (config / "config.yaml").write_bytes(b"channel: []\n")  # the admin panel rewrote it after the backup
    restore = run_engine(env, "restore", "--dir", str(tmp_path / "backup"), "--config", str(config))
    assert restore.returncode == 0, restore.stderr
    assert (config / "config.yaml").read_bytes() == CONFIG
    assert stat.S_IMODE((config / "config.yaml").stat().st_mode) & 0o007 == 0, "never world-readable"
    assert restore.result["config"]["restored"] is True
    assert SECRET_KEY not in restore.stdout + restore.stderr


def test_a_config_dir_without_config_yaml_is_recorded_and_left_alone(tmp_path: Path, db_config: DbConfig) -> None:
    query(db_config, "CREATE TABLE t (id INT PRIMARY KEY)")
    config = tmp_path / "config"
    config.mkdir()
    env = engine_env(db_config)
    backup = run_engine(env, "backup", "--dir", str(tmp_path / "backup"), "--config", str(config))
    assert backup.returncode == 0, backup.stderr
    assert [a["name"] for a in backup.result["artifacts"]] == ["database.sql.gz"]
    (config / "config.yaml").write_bytes(b"written later\n")
    restore = run_engine(env, "restore", "--dir", str(tmp_path / "backup"), "--config", str(config))
    assert restore.returncode == 0, restore.stderr
    assert restore.result["config"]["restored"] is False
    assert (config / "config.yaml").read_bytes() == b"written later\n"


def test_a_tampered_config_copy_stops_the_restore(tmp_path: Path, db_config: DbConfig) -> None:
    query(db_config, "CREATE TABLE t (id INT PRIMARY KEY)")
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.yaml").write_bytes(CONFIG)
    env = engine_env(db_config)
    assert run_engine(env, "backup", "--dir", str(tmp_path / "backup"), "--config", str(config)).returncode == 0
    copy = tmp_path / "backup" / "config.yaml"
    copy.write_bytes(CONFIG.replace(b"upstream", b"attacker"))
    (config / "config.yaml").write_bytes(b"current\n")
    restore = run_engine(env, "restore", "--dir", str(tmp_path / "backup"), "--config", str(config))
    assert restore.returncode == 1
    assert "config.yaml" in restore.result["error"]
    assert (config / "config.yaml").read_bytes() == b"current\n", "nothing restored from a corrupt backup"
