"""The app's /config volume (config.yaml) in a backup and a restore: byte for byte, never
world-readable, never logged, refused when tampered with."""

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


def _config_dir(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.yaml").write_bytes(CONFIG)
    (config / "config.yaml").chmod(0o660)
    return config


def _config_artifact(result: dict) -> dict:
    return next(a for a in result["artifacts"] if a["name"].startswith("config.tar"))


def test_config_yaml_is_backed_up_and_restored_byte_for_byte(tmp_path: Path, db_config: DbConfig) -> None:
    query(db_config, "CREATE TABLE auth (id INT PRIMARY KEY, username VARCHAR(24))")
    query(db_config, "INSERT INTO auth VALUES (1, 'root')")
    config = _config_dir(tmp_path)
    env = engine_env(db_config)
    backup = run_engine(env, "backup", "--dir", str(tmp_path / "backup"), "--config", str(config))
    assert backup.returncode == 0, backup.stderr
    artifact = tmp_path / "backup" / _config_artifact(backup.result)["name"]
    assert stat.S_IMODE(artifact.stat().st_mode) & 0o007 == 0, "the archive holds channel keys: never world-readable"
    assert SECRET_KEY not in backup.stdout + backup.stderr

    (config / "config.yaml").write_bytes(b"channel: []\n")  # the admin panel rewrote it after the backup
    restore = run_engine(env, "restore", "--dir", str(tmp_path / "backup"), "--config", str(config))
    assert restore.returncode == 0, restore.stderr
    assert (config / "config.yaml").read_bytes() == CONFIG
    assert stat.S_IMODE((config / "config.yaml").stat().st_mode) == 0o660, "the mode as it was"
    assert SECRET_KEY not in restore.stdout + restore.stderr


def test_a_tampered_config_archive_stops_the_restore(tmp_path: Path, db_config: DbConfig) -> None:
    query(db_config, "CREATE TABLE t (id INT PRIMARY KEY)")
    config = _config_dir(tmp_path)
    env = engine_env(db_config)
    backup = run_engine(env, "backup", "--dir", str(tmp_path / "backup"), "--config", str(config))
    assert backup.returncode == 0, backup.stderr
    artifact = tmp_path / "backup" / _config_artifact(backup.result)["name"]
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    (config / "config.yaml").write_bytes(b"current\n")
    restore = run_engine(env, "restore", "--dir", str(tmp_path / "backup"), "--config", str(config))
    assert restore.returncode == 1
    assert "config.tar" in restore.result["error"]
    assert (config / "config.yaml").read_bytes() == b"current\n", "nothing restored from a corrupt backup"
