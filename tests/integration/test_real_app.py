"""The engine against the REAL CoAI server (built from source), a real MariaDB, a real redis-server
and a stand-in LLM upstream: root's password, the validation checks through the app's API, the
version fingerprint, upstream's 3.6/3.8 fixes, and an in-place 3.10.5 -> 4.25.0 binary swap.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coai_operator.engine.coaiapi import DEFAULT_ROOT_PASSWORD, ROOT_USER, CoaiClient
from coai_operator.engine.dbconfig import DbConfig
from tests.mariadb import engine_env, query, table_checksums
from tests.realapp import MODEL, STAND_IN_ANSWER, STAND_IN_KEY, RealApp, StandInUpstream, real_app

from .engine_support import run_engine

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "s3cret-Admin pw"
OLD, NEW = "3.10.5", "4.25.0"


def client(app: RealApp) -> CoaiClient:
    return CoaiClient(app.base_url, app.api_prefix, timeout=30)


def set_admin_password(app: RealApp, db: DbConfig) -> dict:
    run = run_engine({**engine_env(db), "COAI_ADMIN_PASSWORD": ADMIN_PASSWORD}, "admin-password",
                     "--base-url", app.base_url, "--api-prefix", app.api_prefix, "--timeout", "30")
    assert run.returncode == 0, run.stderr
    assert ADMIN_PASSWORD not in run.stdout + run.stderr
    return run.result


def add_channel(app: RealApp, upstream: StandInUpstream) -> str:
    """A channel to the stand-in upstream through the admin API; returns root's API key."""
    api = client(app)
    token = api.login(ROOT_USER, ADMIN_PASSWORD)
    api.create_channel(token, name="stand-in", endpoint=upstream.url, models=[MODEL], secret=STAND_IN_KEY)
    return api.api_key(token)


def validate(app: RealApp, db: DbConfig, *extra: str, api_key: str = "", password: str = ADMIN_PASSWORD,
             checks: str = "database,health,login,quota,fingerprint,chat", expect: str | None = None):
    env = {**engine_env(db), "COAI_ADMIN_PASSWORD": password, "TEST_API_KEY": api_key}
    return run_engine(env, "validate", "--checks", checks, "--base-url", app.base_url,
                      "--health-path", "/api/" if app.serve_static else "/", "--api-prefix", app.api_prefix,
                      "--chat-path", f"{app.api_prefix}/v1/chat/completions", "--chat-model", MODEL,
                      "--expect-version", expect or app.version or "", "--timeout", "30", *extra)


def by_name(run) -> dict[str, dict]:
    return {c["name"]: c for c in run.result["checks"]}


def columns(db: DbConfig, table: str) -> set[str]:
    rows = query(db, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
                     "AND TABLE_NAME = %s", (db.database, table))
    return {r[0] for r in rows}


# --- root's password -------------------------------------------------------------------------------

def test_admin_password_replaces_the_public_default_once(tmp_path: Path, db_config: DbConfig,
                                                        redis_server: int) -> None:
    with real_app(tmp_path, db_config, redis_server, OLD, serve_static=True) as app:
        api = client(app)
        assert api.try_login(ROOT_USER, DEFAULT_ROOT_PASSWORD), "the app creates root with its default"
        assert set_admin_password(app, db_config)["adminPassword"] == "set"
        assert api.try_login(ROOT_USER, DEFAULT_ROOT_PASSWORD) is None
        assert api.try_login(ROOT_USER, ADMIN_PASSWORD)
        assert set_admin_password(app, db_config)["adminPassword"] == "unchanged"


def test_admin_password_refuses_when_root_was_changed_by_hand(tmp_path: Path, db_config: DbConfig,
                                                             redis_server: int) -> None:
    with real_app(tmp_path, db_config, redis_server, OLD) as app:
        api = client(app)
        api.set_root_password(api.login(ROOT_USER, DEFAULT_ROOT_PASSWORD), "changed-by-hand")
        run = run_engine({**engine_env(db_config), "COAI_ADMIN_PASSWORD": ADMIN_PASSWORD}, "admin-password",
                         "--base-url", app.base_url, "--timeout", "30")
        assert run.returncode == 1
        assert run.result["reason"] == "AdminPasswordFailed"
        assert "neither the Secret's password nor the default" in run.result["error"]
        assert ADMIN_PASSWORD not in run.stdout + run.stderr


# --- validation through the real API ---------------------------------------------------------------

@pytest.mark.parametrize("serve_static", [False, True], ids=["api-at-root", "api-under-/api"])
def test_validation_checks_pass_through_the_real_api(tmp_path: Path, db_config: DbConfig, redis_server: int,
                                                     stand_in_upstream: StandInUpstream, serve_static: bool) -> None:
    with real_app(tmp_path / "app", db_config, redis_server, OLD, serve_static=serve_static) as app:
        set_admin_password(app, db_config)
        key = add_channel(app, stand_in_upstream)
        backup = run_engine(engine_env(db_config), "backup", "--dir", str(tmp_path / "backup"))
        assert backup.returncode == 0, backup.stderr
        run = validate(app, db_config, "--manifest", str(tmp_path / "backup"), api_key=key,
                       checks="database,health,login,quota,fingerprint,chat,dataIntegrity")
        assert run.returncode == 0, run.result
        checks = by_name(run)
        for name in ("database", "health", "login", "quota", "fingerprint", "chat", "dataIntegrity"):
            assert checks[name]["status"] == "passed", checks[name]
        assert stand_in_upstream.requests[-1]["body"]["stream"] is True, "the app streams from its upstream"
        assert key not in run.stdout + run.stderr and ADMIN_PASSWORD not in run.stdout + run.stderr


def test_each_failed_check_names_what_failed(tmp_path: Path, db_config: DbConfig, redis_server: int,
                                             stand_in_upstream: StandInUpstream) -> None:
    with real_app(tmp_path, db_config, redis_server, OLD) as app:
        set_admin_password(app, db_config)
        key = add_channel(app, stand_in_upstream)

        wrong = validate(app, db_config, password="not-the-password", checks="login,quota")
        assert wrong.returncode == 1
        assert by_name(wrong)["login"]["status"] == "failed"
        assert "login as root failed" in by_name(wrong)["login"]["message"]

        stand_in_upstream.fail = True
        try:
            chat = validate(app, db_config, api_key=key, checks="chat")
        finally:
            stand_in_upstream.fail = False
        assert chat.returncode == 1 and by_name(chat)["chat"]["status"] == "failed"
        assert "/v1/chat/completions" in by_name(chat)["chat"]["message"]

        missing = validate(app, db_config, password="", checks="login")
        assert missing.returncode == 0 and by_name(missing)["login"]["status"] == "skipped"


def test_fingerprint_catches_an_image_that_is_not_its_tag(tmp_path: Path, db_config: DbConfig,
                                                          redis_server: int) -> None:
    with real_app(tmp_path, db_config, redis_server, OLD) as app:
        set_admin_password(app, db_config)
        assert validate(app, db_config, checks="fingerprint", expect=OLD).returncode == 0
        lying = validate(app, db_config, checks="fingerprint", expect=NEW)
        assert lying.returncode == 1
        message = by_name(lying)["fingerprint"]["message"]
        assert f"the app is not {NEW}" in message and "HTTP 404" in message


# --- upstream's 3.6 / 3.8 fixes --------------------------------------------------------------------

PRE_36_SCHEMA = (
    # The upstream layout before 3.6 (no subscription.level) and 3.8 (no auth.email / auth.is_banned).
    """CREATE TABLE auth (id INT PRIMARY KEY AUTO_INCREMENT, bind_id INT UNIQUE, username VARCHAR(24) UNIQUE,
       token VARCHAR(255) NOT NULL, password VARCHAR(64) NOT NULL, is_admin BOOLEAN DEFAULT FALSE)""",
    """CREATE TABLE subscription (id INT PRIMARY KEY AUTO_INCREMENT, user_id INT UNIQUE, expired_at DATETIME,
       created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
       total_month INT DEFAULT 0, enterprise BOOLEAN DEFAULT FALSE, FOREIGN KEY (user_id) REFERENCES auth(id))""",
    "INSERT INTO auth (username, token, password, is_admin) VALUES ('alice', 't1', 'x', FALSE),"
    " ('bob', 't2', 'y', TRUE)",
    "INSERT INTO subscription (user_id, expired_at, total_month) VALUES (1, '2030-01-01', 12), (2, '2030-01-01', 1)",
)


def test_upstream_fixes_repair_a_database_from_before_3_6(tmp_path: Path, db_config: DbConfig,
                                                         redis_server: int) -> None:
    for statement in PRE_36_SCHEMA:
        query(db_config, statement)
    env = engine_env(db_config)
    plan = run_engine(env, "migrate-real", "--from", OLD, "--target", NEW, "--plan-only")
    assert plan.returncode == 0, plan.stderr
    assert plan.result["pending"] == ["upstream-3.6-subscription-level", "upstream-3.8-auth-email",
                                      "upstream-3.8-auth-is-banned"]
    assert "level" not in columns(db_config, "subscription"), "--plan-only writes nothing"

    run = run_engine(env, "migrate-real", "--from", OLD, "--target", NEW)
    assert run.returncode == 0, run.stderr
    assert [a["id"] for a in run.result["applied"]] == [
        "upstream-3.6-subscription-level", "upstream-3.6-subscription-level-default",
        "upstream-3.8-auth-email", "upstream-3.8-auth-is-banned"]
    assert run.result["path"] == ["3.10.5-to-3.11.1", "3.11.1-to-4.24.2", "4.24.2-to-4.25.0"]
    assert query(db_config, "SELECT user_id, level FROM subscription ORDER BY user_id") == [(1, 3), (2, 3)]
    query(db_config, "INSERT INTO auth (username, token, password) VALUES ('carol', 't3', 'z')")
    query(db_config, "INSERT INTO subscription (user_id) VALUES (3)")
    assert query(db_config, "SELECT level FROM subscription WHERE user_id = 3") == [(1,)], "new rows get 1"
    assert {"email", "is_banned"} <= columns(db_config, "auth")

    again = run_engine(env, "migrate-real", "--from", OLD, "--target", NEW)
    assert again.returncode == 0 and again.result["applied"] == [], "idempotent: nothing runs twice"

    with real_app(tmp_path, db_config, redis_server, NEW) as app:  # the app takes the repaired database
        assert "task_id" in columns(db_config, "conversation")
        assert app.proc is not None and app.proc.poll() is None
    assert query(db_config, "SELECT COUNT(*) FROM subscription WHERE level = 3") == [(2,)]


def test_upstream_fixes_leave_a_current_database_alone(tmp_path: Path, db_config: DbConfig,
                                                      redis_server: int) -> None:
    with real_app(tmp_path, db_config, redis_server, OLD):
        pass  # the app creates its full schema
    run = run_engine(engine_env(db_config), "migrate-real", "--from", OLD, "--target", NEW)
    assert run.returncode == 0 and run.result["applied"] == []


# --- in-place upgrade of the binary --------------------------------------------------------------------

def test_in_place_swap_from_3_10_5_to_4_25_0_keeps_users_keys_channels(
        tmp_path: Path, db_config: DbConfig, redis_server: int, stand_in_upstream: StandInUpstream) -> None:
    workdir = tmp_path / "app"
    app = RealApp(workdir, db_config, redis_server)
    app.start(OLD)
    try:
        set_admin_password(app, db_config)
        key = add_channel(app, stand_in_upstream)
        assert client(app).chat(key, MODEL) == STAND_IN_ANSWER
        backup = run_engine(engine_env(db_config), "backup", "--dir", str(tmp_path / "backup"))
        assert backup.returncode == 0, backup.stderr
    finally:
        app.stop()
    channels = yaml.safe_load(app.config_yaml.read_text())["channel"]
    assert [c["endpoint"] for c in channels] == [stand_in_upstream.url]

    app.start(NEW)  # same database, same config/ directory: the app migrates its own schema
    try:
        assert "task_id" in columns(db_config, "conversation")
        api = client(app)
        assert api.try_login(ROOT_USER, ADMIN_PASSWORD), "root's password survives the upgrade"
        assert api.chat(key, MODEL) == STAND_IN_ANSWER, "the API key and the channel work on 4.25.0"
        run = validate(app, db_config, "--manifest", str(tmp_path / "backup"), api_key=key,
                       checks="database,health,login,quota,fingerprint,chat,dataIntegrity", expect=NEW)
        assert run.returncode == 0, run.result
    finally:
        app.stop()
    after = yaml.safe_load(app.config_yaml.read_text())["channel"]
    assert [c["endpoint"] for c in after] == [stand_in_upstream.url]


def test_rollback_after_an_upgrade_restores_database_and_config_yaml(
        tmp_path: Path, db_config: DbConfig, redis_server: int, stand_in_upstream: StandInUpstream) -> None:
    """What a CoaiMigration rollback does on the host: restore the pre-upgrade backup (database and
    config.yaml) and start the old version again."""
    app = RealApp(tmp_path / "app", db_config, redis_server)
    app.start(OLD)
    try:
        set_admin_password(app, db_config)
        key = add_channel(app, stand_in_upstream)
    finally:
        app.stop()
    config_dir = tmp_path / "app" / "config"
    env = engine_env(db_config)
    backup = run_engine(env, "backup", "--dir", str(tmp_path / "backup"), "--config", str(config_dir))
    assert backup.returncode == 0, backup.stderr
    checksums, config_before = table_checksums(db_config), app.config_yaml.read_bytes()

    app.start(NEW)  # the upgrade: 4.25.0 alters the schema (conversation.task_id)
    try:
        api = client(app)
        api.create_channel(api.login(ROOT_USER, ADMIN_PASSWORD), name="added-on-4", endpoint=stand_in_upstream.url,
                           models=[MODEL], secret=STAND_IN_KEY)
    finally:
        app.stop()
    assert "task_id" in columns(db_config, "conversation")
    assert app.config_yaml.read_bytes() != config_before

    restore = run_engine(env, "restore", "--dir", str(tmp_path / "backup"), "--config", str(config_dir))
    assert restore.returncode == 0, restore.stderr
    assert table_checksums(db_config) == checksums, "CHECKSUM TABLE equals the backup's"
    assert app.config_yaml.read_bytes() == config_before, "config.yaml byte-identical"
    app.start(OLD)
    try:
        assert client(app).try_login(ROOT_USER, ADMIN_PASSWORD)
        assert client(app).chat(key, MODEL) == STAND_IN_ANSWER
        assert table_checksums(db_config) == checksums, "starting 3.10.5 again changes no row"
    finally:
        app.stop()
