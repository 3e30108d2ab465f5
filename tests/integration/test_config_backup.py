"""The app's /config volume (config.yaml) in a backup and a restore: byte for byte, never
world-readable, never logged, refused when tampered with."""

from __future__ import annotations

import base64
import json
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


JWT = "jwt-signing-secret-marker-9f8e7d"


def _mounted(root: Path, name: str, data: dict[str, str]) -> None:
    """A ConfigMap/Secret volume as the kubelet writes it: KEY -> ..data/KEY, ..data -> ..<timestamp>."""
    target = root / name / "..2026_12_01_00_00_00.000000001"
    target.mkdir(parents=True)
    for key, value in data.items():
        (target / key).write_text(value)
    (root / name / "..data").symlink_to(target.name)
    for key in data:
        (root / name / key).symlink_to(f"..data/{key}")


def test_the_env_configmap_and_secret_copies_are_readable_only_with_the_key(
        tmp_path: Path, db_config: DbConfig) -> None:
    config, env_dir = _config_dir(tmp_path), tmp_path / "env"
    _mounted(env_dir, "configmap.chat-env", {"SERVE_STATIC": "true", "LEGACY": "1"})
    _mounted(env_dir, "secret.coai-app", {"SECRET": JWT, "OPENAI_API_KEY": "sk-openai"})
    (tmp_path / "key").write_text("the backup key, at least sixteen bytes")
    env = {**engine_env(db_config), "COAI_BACKUP_KEY_FILE": str(tmp_path / "key")}
    backup = run_engine(env, "backup", "--dir", str(tmp_path / "backup"), "--include", "config",
                        "--config", str(config), "--env-dir", str(env_dir))
    assert backup.returncode == 0, backup.stderr
    assert {a["name"] for a in backup.result["artifacts"]} == {"config.tar.gz", "config-env.json.gz"}
    stored = b"".join(p.read_bytes() for p in (tmp_path / "backup").iterdir())
    assert JWT.encode() not in stored and b"sk-openai" not in stored  # encrypted, manifest holds names only
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["config"]["env"] == {"configMap": {"name": "chat-env", "keys": ["LEGACY", "SERVE_STATIC"]},
                                         "secret": {"name": "coai-app", "keys": ["OPENAI_API_KEY", "SECRET"]}}
    assert JWT not in backup.stdout + backup.stderr

    # A restore reports what differs by key name and never writes the objects (Git and the user own them).
    (env_dir / "secret.coai-app" / "..2026_12_01_00_00_00.000000001" / "SECRET").write_text("rotated")
    (env_dir / "configmap.chat-env" / "LEGACY").unlink()
    restore = run_engine(env, "restore", "--dir", str(tmp_path / "backup"), "--config", str(config),
                         "--env-dir", str(env_dir))
    assert restore.returncode == 0, restore.stderr
    assert restore.result["env"] == {
        "configMap": {"name": "chat-env", "differ": [], "missing": ["LEGACY"], "added": []},
        "secret": {"name": "coai-app", "differ": ["SECRET"], "missing": [], "added": []}}
    assert JWT not in restore.stdout + restore.stderr and "rotated" not in restore.stdout
    assert (env_dir / "secret.coai-app" / "SECRET").read_text() == "rotated"

    # env-export gives a person the copies, with the key only.
    out = tmp_path / "env.json"
    exported = run_engine(env, "env-export", "--dir", str(tmp_path / "backup"), "--namespace", "apps",
                          "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and JWT not in exported.stdout
    items = {i["kind"]: i for i in json.loads(out.read_text())["items"]}
    assert items["ConfigMap"]["data"] == {"SERVE_STATIC": "true", "LEGACY": "1"}
    assert base64.b64decode(items["Secret"]["data"]["SECRET"]).decode() == JWT
    assert items["Secret"]["metadata"] == {"name": "coai-app", "namespace": "apps"}
    no_key = {k: v for k, v in env.items() if k != "COAI_BACKUP_KEY_FILE"}
    refused = run_engine(no_key, "env-export", "--dir", str(tmp_path / "backup"), "--out", str(tmp_path / "x.json"))
    assert refused.returncode != 0 and "key" in refused.result["error"] and not (tmp_path / "x.json").exists()
