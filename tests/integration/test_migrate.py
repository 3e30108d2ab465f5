"""`engine migrate` against a real MariaDB: the 1.6 -> 2.0 chain on seeded data, and refusals."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from coai_operator.bundles import load_bundle
from coai_operator.engine.dbconfig import DbConfig, connect
from coai_operator.engine.runner import lock_name

from .migrate_support import columns, engine, fingerprint, new_database, ok, query, seed, tables

pytestmark = pytest.mark.integration
__all__ = ["new_database"]  # fixture

DEFAULT_PREFERENCES = {"theme": "auto", "language": "en", "default_model": "gpt-3.5-turbo",
                       "temperature": 0.7, "max_tokens": 2048}


def _migrate(env: dict[str, str], *args: str) -> dict:
    return ok(engine(env, "migrate", "--target", "2.0.0", "--batch-size", "7", *args))


def test_1_6_to_2_0_on_seeded_data(db_config: DbConfig, db_env: dict[str, str]) -> None:
    seed(db_env, "--users", "30", "--conversations-per-user", "3", "--admin-ratio", "0.3")
    users_before = {uid: (admin, prefs) for uid, admin, prefs in
                    query(db_config, "SELECT id, is_admin, preferences FROM users")}
    conversations_before = {row[0]: row[1:] for row in query(
        db_config, "SELECT id, metadata, model_name, total_tokens, created_at, updated_at FROM conversations")}

    result = _migrate(db_env)

    assert result["from"] == "1.6.0" and result["to"] == "2.0.0"
    assert [hop["version"] for hop in result["applied"]] == ["1.7.0", "1.8.0", "1.9.0", "2.0.0"]
    assert any("end of life" in w for w in result["warnings"])
    bundle = load_bundle()
    recorded = query(db_config, "SELECT version, checksum FROM schema_migrations ORDER BY version")
    assert recorded == [("1.6.0", bundle.baseline.checksum)] + [
        (str(hb.version), hb.checksum) for hb in sorted(bundle.hops.values(), key=lambda hb: hb.version)]
    assert query(db_config, "SELECT COUNT(*) FROM schema_migrations_progress") == [(0,)]

    # Roles: admin iff the user was is_admin; one role per user; the column is gone.
    assert "is_admin" not in columns(db_config, "users")
    roles = dict(query(db_config, "SELECT ur.user_id, r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id"))
    assert len(query(db_config, "SELECT user_id FROM user_roles")) == 30
    assert roles == {uid: "admin" if admin else "user" for uid, (admin, _) in users_before.items()}
    assert {name: json.loads(perms) for name, perms in query(db_config, "SELECT name, permissions FROM roles")} == {
        "admin": ["*"], "user": ["chat:use", "files:upload"]}

    # Preferences: defaults added, existing values (and extra keys) kept, NULL stays NULL.
    after = dict(query(db_config, "SELECT id, preferences FROM users"))
    for uid, (_, before) in users_before.items():
        if before is None:
            assert after[uid] is None
            continue
        old, new = json.loads(before), json.loads(after[uid])
        assert new == {**DEFAULT_PREFERENCES, **old}

    # Conversation metadata: filled where NULL, untouched where set; updated_at not bumped.
    for cid, metadata, model, tokens, created, updated in query(
            db_config, "SELECT id, metadata, model_name, total_tokens, created_at, updated_at FROM conversations"):
        old_metadata, *rest = conversations_before[cid]
        assert (model, tokens, created, updated) == tuple(rest)
        if old_metadata is None:
            assert json.loads(metadata) == {"model": model, "token_count": tokens, "created_at": str(created),
                                            "updated_at": str(updated)}
        else:
            assert metadata == old_metadata

    # Analytics backfill of 1.9 ran exactly once per conversation.
    assert query(db_config, "SELECT SUM(conversation_count), SUM(token_count) FROM analytics_daily") == query(
        db_config, "SELECT COUNT(*), SUM(total_tokens) FROM conversations")
    assert query(db_config, "SELECT COUNT(*) FROM users") == [(30,)]
    assert query(db_config, "SELECT COUNT(*) FROM conversations") == [(90,)]


def test_already_at_target_changes_nothing(db_config: DbConfig, db_env: dict[str, str]) -> None:
    seed(db_env, "--version", "2.0.0", "--users", "5")
    before = fingerprint(db_config)
    result = _migrate(db_env)
    assert result["noop"] is True and result["applied"] == []
    assert fingerprint(db_config) == before


def test_patch_target_maps_to_its_line(db_config: DbConfig, db_env: dict[str, str]) -> None:
    seed(db_env, "--version", "1.8.0", "--users", "5")
    result = ok(engine(db_env, "migrate", "--target", "1.9.3"))
    assert result["to"] == "1.9.0" and result["path"] == ["1.8.0-to-1.9.0"]


def test_untracked_schema_is_detected_and_recorded(db_config: DbConfig, db_env: dict[str, str]) -> None:
    seed(db_env, "--version", "1.7.0", "--users", "5")
    query(db_config, "DROP TABLE schema_migrations")
    query(db_config, "DROP TABLE schema_migrations_progress")
    result = _migrate(db_env)
    assert result["source"] == "inspection" and result["from"] == "1.7.0"
    rows = query(db_config, "SELECT version, description, checksum FROM schema_migrations ORDER BY version")
    assert rows[0] == ("1.7.0", "existing schema, detected by inspection", None)
    assert [r[0] for r in rows] == ["1.7.0", "1.8.0", "1.9.0", "2.0.0"]


def test_empty_database_with_assume_version(db_config: DbConfig, db_env: dict[str, str]) -> None:
    result = _migrate(db_env, "--assume-version", "1.8.0")
    assert result["created_schema"] == "1.8.0"
    assert [r[0] for r in query(db_config, "SELECT version FROM schema_migrations ORDER BY version")] == [
        "1.6.0", "1.7.0", "1.8.0", "1.9.0", "2.0.0"]
    assert {"roles", "user_roles", "permissions"} <= set(tables(db_config))


def test_bundle_dir_overrides_and_extra_steps(db_config: DbConfig, db_env: dict[str, str], tmp_path: Path) -> None:
    seed(db_env, "--version", "1.9.0", "--users", "6")
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    (bundle_dir / "2.0.0-10-audit.sql").write_text(
        "CREATE TABLE IF NOT EXISTS audit_log (id INT PRIMARY KEY, note VARCHAR(64));\n"
        "INSERT INTO audit_log VALUES (1, 'upgraded; 100% done');\n")
    (bundle_dir / "1.9.0-to-2.0.0.default-roles.sql").write_text(
        "INSERT IGNORE INTO permissions (id, name) VALUES (1, '*'), (2, 'chat:use'), (3, 'files:upload');\n"
        "INSERT IGNORE INTO roles (id, name, permissions) VALUES (1, 'admin', '[\"*\"]'),"
        " (2, 'user', '[\"chat:use\"]');\n")
    (bundle_dir / "..data").mkdir()  # a ConfigMap mount's internals are ignored

    result = _migrate(db_env, "--bundle-dir", str(bundle_dir))
    [hop] = result["applied"]
    assert hop["checksum"] != load_bundle().hops["1.9.0-to-2.0.0"].checksum
    assert query(db_config, "SELECT note FROM audit_log") == [("upgraded; 100% done",)]
    assert query(db_config, "SELECT permissions FROM roles WHERE name = 'user'") == [('["chat:use"]',)]

    # The recorded checksum is the custom bundle's: planning with the stock bundle reports drift.
    plan = ok(engine(db_env, "plan", "--target", "2.0.0"))
    assert any("checksum" in w for w in plan["warnings"])


def test_a_failing_step_stops_and_the_rerun_resumes(db_config: DbConfig, db_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    seed(db_env, "--version", "1.9.0", "--users", "6")
    (tmp_path / "2.0.0-fix-up.sql").write_text("UPDATE users SET username = CONCAT(username, '!');\n"
                                               "UPDATE no_such_table SET x = 1;\n")
    failed = engine(db_env, "migrate", "--target", "2.0.0", "--bundle-dir", str(tmp_path))
    assert failed.returncode == 1
    assert failed.result["reason"] == "MigrationFailed"
    assert "step fix-up (bundle-dir:2.0.0-fix-up.sql) failed: database error 1146" in failed.result["error"]
    assert query(db_config, "SELECT MAX(version) FROM schema_migrations") == [("1.9.0",)]

    # Changing a statement that already ran is refused; fixing the one that failed is not.
    (tmp_path / "2.0.0-fix-up.sql").write_text("UPDATE users SET username = CONCAT(username, '?');\n"
                                               "CREATE TABLE IF NOT EXISTS no_such_table (x INT);\n")
    refused = engine(db_env, "migrate", "--target", "2.0.0", "--bundle-dir", str(tmp_path))
    assert refused.returncode == 1 and "partly applied with different SQL" in refused.result["error"]

    (tmp_path / "2.0.0-fix-up.sql").write_text("UPDATE users SET username = CONCAT(username, '!');\n"
                                               "CREATE TABLE IF NOT EXISTS no_such_table (x INT);\n")
    result = ok(engine(db_env, "migrate", "--target", "2.0.0", "--bundle-dir", str(tmp_path)))
    assert result["applied"][0]["resumed"] is True
    names = [name for (name,) in query(db_config, "SELECT username FROM users")]
    assert all(name.endswith("!") and not name.endswith("!!") for name in names)  # ran exactly once
    assert query(db_config, "SELECT MAX(version) FROM schema_migrations") == [("2.0.0",)]


def test_tracking_table_from_the_guide_gets_a_checksum_column(db_config: DbConfig, db_env: dict[str, str]) -> None:
    seed(db_env, "--version", "1.8.0", "--users", "3")
    query(db_config, "ALTER TABLE schema_migrations DROP COLUMN checksum")
    query(db_config, "DROP TABLE schema_migrations_progress")
    result = _migrate(db_env)
    assert result["from"] == "1.8.0"
    assert query(db_config, "SELECT checksum IS NOT NULL FROM schema_migrations WHERE version = '2.0.0'") == [(1,)]


def test_bad_bundle_dir_is_refused_before_connecting(db_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "2.0.0-to-3.0.0.sql").write_text("SELECT 1;")
    run = engine(db_env, "migrate", "--target", "2.0.0", "--bundle-dir", str(tmp_path))
    assert run.returncode == 1
    assert run.result["reason"] == "InvalidBundle"


def test_a_second_migration_waits_for_the_lock(db_config: DbConfig, db_env: dict[str, str]) -> None:
    seed(db_env, "--users", "3")
    holder = connect(db_config)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 0)", (lock_name(db_config.database),))
        before = fingerprint(db_config)
        run = engine(db_env, "migrate", "--target", "2.0.0", "--lock-timeout", "1")
        assert run.returncode == 1
        assert run.result["reason"] == "Locked"
        assert fingerprint(db_config) == before
    finally:
        holder.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _set_version(version: str) -> Callable[[DbConfig], None]:
    def apply(cfg: DbConfig) -> None:
        query(cfg, "DELETE FROM schema_migrations")
        query(cfg, "INSERT INTO schema_migrations (version, description) VALUES (%s, 'by hand')", (version,))
    return apply


@pytest.mark.parametrize(
    ("case", "prepare", "env_change", "reason", "words"),
    [
        ("unknown old version", _set_version("1.5.0"), {}, "UnsupportedPath", "not in the compatibility table"),
        ("unknown app version", _set_version("3.11.2"), {}, "UnsupportedPath", "not in the compatibility table"),
        ("downgrade", _set_version("2.0.0"), {"target": "1.9.0"}, "UnsupportedPath", "downgrade"),
        ("wrong password", None, {"MYSQL_PASSWORD": "wrong"}, "Error", "Access denied"),
        ("unreachable host", None, {"MYSQL_PORT": "free", "MYSQL_CONNECT_RETRY_SECONDS": "0"}, "Error",
         "Can't connect"),
    ],
)
def test_refusals_leave_the_database_unchanged(
    db_config: DbConfig, db_env: dict[str, str], case: str, prepare: Callable[[DbConfig], None] | None,
    env_change: dict[str, str], reason: str, words: str,
) -> None:
    seed(db_env, "--users", "4")
    if prepare is not None:
        prepare(db_config)
    before = fingerprint(db_config)
    env = {**db_env, **{k: v for k, v in env_change.items() if k != "target"}}
    if env.get("MYSQL_PORT") == "free":
        env["MYSQL_PORT"] = str(_free_port())
    run = engine(env, "migrate", "--target", env_change.get("target", "2.0.0"))

    assert run.returncode == 1, case
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1
    assert run.result == {"command": "migrate", "ok": False, "reason": reason, "error": run.result["error"]}
    assert words.lower() in run.result["error"].lower()
    assert "\n" not in run.result["error"]
    assert db_config.password not in run.stdout + run.stderr
    assert fingerprint(db_config) == before

