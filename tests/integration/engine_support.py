"""Shared helpers for the engine's part-B integration tests (backup, restore, storage, validate)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coai_operator.engine.dbconfig import DbConfig, connect
from tests.mariadb import (
    query,  # noqa: F401  (re-exported)
    table_checksums,  # noqa: F401  (re-exported)
)

# A 1.6-style schema (users / conversations / files), plus a trigger, a view and a routine so the
# dump's DELIMITER blocks and view placeholders are exercised too.
SCHEMA = [
    """CREATE TABLE users (
        id INT AUTO_INCREMENT PRIMARY KEY,
        username VARCHAR(64) NOT NULL UNIQUE,
        email VARCHAR(255),
        is_admin TINYINT(1) NOT NULL DEFAULT 0,
        preferences TEXT,
        avatar BLOB,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
    ) ENGINE=InnoDB""",
    """CREATE TABLE conversations (
        id INT AUTO_INCREMENT PRIMARY KEY,
        user_id INT NOT NULL,
        title VARCHAR(255),
        model_name VARCHAR(64),
        total_tokens INT DEFAULT 0,
        metadata TEXT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        CONSTRAINT fk_conv_user FOREIGN KEY (user_id) REFERENCES users (id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE files (
        id INT AUTO_INCREMENT PRIMARY KEY,
        user_id INT NOT NULL,
        file_path VARCHAR(1024) NOT NULL,
        original_name VARCHAR(255) NOT NULL,
        size BIGINT NOT NULL DEFAULT 0,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
    ) ENGINE=InnoDB""",
    "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(255))",
    "CREATE TABLE `odd `` name; --` (id INT PRIMARY KEY, v VARCHAR(20))",  # quoting of table names
    """CREATE TRIGGER conv_audit AFTER INSERT ON conversations FOR EACH ROW
INSERT INTO audit (note) VALUES (CONCAT('conversation ', NEW.id))""",
    "CREATE VIEW user_conversations AS SELECT u.username, COUNT(c.id) AS n FROM users u "
    "LEFT JOIN conversations c ON c.user_id = u.id GROUP BY u.username",
    """CREATE PROCEDURE count_users()
BEGIN
CREATE TABLE `not_a_table` (id INT);
SELECT COUNT(*) FROM users;
END""",
]

TRICKY_TEXTS = [
    "plain",
    "it's \"quoted\" and back\\slash",
    "multi\nline\r\n\ttext ),( (1,'x')",
    "unicode ü 中文 🚀",
    "; DROP TABLE users; --",
    "",
]


def create_schema(cfg: DbConfig) -> None:
    conn = connect(cfg)
    with conn.cursor() as cur:
        for statement in SCHEMA:
            cur.execute(statement)
    conn.close()


def populate(cfg: DbConfig, users: int = 6, conversations_per_user: int = 3) -> None:
    conn = connect(cfg)
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO `odd `` name; --` VALUES (%s, %s)", [(1, "a`b"), (2, "(x),(y)")])
        for i in range(users):
            text = TRICKY_TEXTS[i % len(TRICKY_TEXTS)]
            cur.execute(
                "INSERT INTO users (username, email, is_admin, preferences, avatar) VALUES (%s, %s, %s, %s, %s)",
                (f"user{i}", f"user{i}@example.com", int(i == 0), json.dumps({"theme": text}),
                 bytes(range(256)) * (i + 1)),
            )
            uid = cur.lastrowid
            for j in range(conversations_per_user):
                cur.execute(
                    "INSERT INTO conversations (user_id, title, model_name, total_tokens) VALUES (%s, %s, %s, %s)",
                    (uid, f"{text} #{j}", "gpt-3.5-turbo", 10 * j),
                )
    conn.close()


def routines_and_views(cfg: DbConfig) -> dict[str, list[str]]:
    conn = connect(cfg)
    with conn.cursor() as cur:
        cur.execute("SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s", (cfg.database,))
        routines = sorted(r[0] for r in cur.fetchall())
        cur.execute("SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s", (cfg.database,))
        views = sorted(r[0] for r in cur.fetchall())
        cur.execute("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s", (cfg.database,))
        triggers = sorted(r[0] for r in cur.fetchall())
    conn.close()
    return {"routines": routines, "views": views, "triggers": triggers}




def recreate_database(cfg: DbConfig) -> None:
    conn = connect(cfg, with_database=False)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE `{cfg.database}`")
        cur.execute(f"CREATE DATABASE `{cfg.database}` CHARACTER SET utf8mb4")
    conn.close()


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every regular file, plus "dir/" entries for directories."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[rel + "/"] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def make_storage(root: Path) -> None:
    (root / "avatars").mkdir(parents=True)
    (root / "empty dir").mkdir()
    (root / "avatars" / "ü 1.png").write_bytes(bytes(range(256)) * 40)
    (root / "notes 'quoted' \"x\".txt").write_text("hello\n")
    (root / "big.bin").write_bytes(os.urandom(200_000))
    (root / "link-to-notes").symlink_to("notes 'quoted' \"x\".txt")


def populated_app(cfg: DbConfig, storage: Path) -> Path:
    """The app's schema with rows in `cfg`'s database, and a storage tree at `storage` (returned)."""
    create_schema(cfg)
    populate(cfg)
    make_storage(storage)
    return storage


@dataclass
class EngineRun:
    returncode: int
    result: dict[str, Any]
    stdout: str
    stderr: str


def run_engine(env: dict[str, str], *args: str, timeout: float = 180) -> EngineRun:
    """`python -m coai_operator.cli engine ...` as a subprocess; parses the final JSON line."""
    proc = subprocess.run(
        [sys.executable, "-m", "coai_operator.cli", "engine", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout,
    )
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    return EngineRun(proc.returncode, result, proc.stdout, proc.stderr)
