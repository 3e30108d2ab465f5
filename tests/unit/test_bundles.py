"""The bundled migration data and its loader: shape, idempotent DDL, user bundle directories."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coai_operator.bundles import BundleError, load_bundle
from coai_operator.bundles.steps import load_step
from coai_operator.domain.errors import PlanError
from coai_operator.domain.sqlsplit import SqlSplitError, split_statements
from coai_operator.domain.versions import Version
from coai_operator.engine.schema_state import detect_version

BUNDLE = load_bundle()
HOP_IDS = ["1.6.0-to-1.7.0", "1.7.0-to-1.8.0", "1.8.0-to-1.9.0", "1.9.0-to-2.0.0"]


def all_sql_statements() -> list[tuple[str, str]]:
    out = [("baseline", s) for s in BUNDLE.baseline.as_hop().steps[0].statements()]
    for hop in BUNDLE.hops.values():
        for step in hop.steps:
            out += [(f"{hop.hop.id}/{step.id}", s) for s in step.statements()]
    return out


def test_one_hop_per_pair_of_lines() -> None:
    assert sorted(BUNDLE.hops) == HOP_IDS
    assert BUNDLE.baseline.version == Version(1, 6, 0)
    assert [hb.hop.id for hb in BUNDLE.hops_to(Version(1, 9, 0))] == HOP_IDS[:3]
    assert BUNDLE.hops_to(Version(1, 6, 2)) == []


def test_checksums_are_stable_and_distinct() -> None:
    again = load_bundle()
    assert {k: h.checksum for k, h in BUNDLE.hops.items()} == {k: h.checksum for k, h in again.hops.items()}
    assert len({h.checksum for h in BUNDLE.hops.values()} | {BUNDLE.baseline.checksum}) == 5
    assert all(re.fullmatch(r"[0-9a-f]{64}", h.checksum) for h in BUNDLE.hops.values())


def test_baseline_has_the_seed_tables() -> None:
    sql = BUNDLE.baseline.sql
    for table in ("users", "conversations", "channels", "files"):
        assert f"CREATE TABLE IF NOT EXISTS {table} (" in sql
    for column in ("is_admin TINYINT(1)", "preferences JSON NULL", "metadata JSON NULL", "model_name",
                   "total_tokens", "file_path", "original_name", "mime_type"):
        assert column in sql


_NOT_RERUNNABLE = [
    (re.compile(r"^\s*CREATE\s+TABLE\s+(?!IF NOT EXISTS)", re.I), "CREATE TABLE without IF NOT EXISTS"),
    (re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(?!IF NOT EXISTS)", re.I), "CREATE INDEX without IF NOT EXISTS"),
    (re.compile(r"^\s*DROP\s+(TABLE|INDEX)\s+(?!IF EXISTS)", re.I), "DROP without IF EXISTS"),
    # ALTER clauses; `?+` is possessive so "ADD COLUMN IF NOT EXISTS" cannot backtrack into a match.
    (re.compile(r"\bADD\s+(?:COLUMN\s+)?+(?!IF NOT EXISTS|CONSTRAINT|FOREIGN|PRIMARY)", re.I),
     "ADD without IF NOT EXISTS"),
    (re.compile(r"\bADD\s+(?:INDEX|KEY|UNIQUE(?:\s+KEY|\s+INDEX)?)\s+(?!IF NOT EXISTS)", re.I),
     "ADD INDEX without IF NOT EXISTS"),
    (re.compile(r"\bDROP\s+(?:COLUMN\s+|INDEX\s+|KEY\s+)?+(?!IF EXISTS|FOREIGN|PRIMARY)", re.I),
     "DROP without IF EXISTS"),
    (re.compile(r"\b(RENAME|CHANGE)\s+COLUMN\b", re.I), "RENAME/CHANGE COLUMN cannot run twice"),
]


@pytest.mark.parametrize(("where", "statement"), all_sql_statements())
def test_every_ddl_statement_can_run_twice(where: str, statement: str) -> None:
    # MariaDB commits each DDL statement itself: a crash right after one re-runs it.
    is_alter = re.match(r"\s*ALTER\b", statement, re.I) is not None
    for pattern, problem in _NOT_RERUNNABLE:
        if is_alter or pattern.pattern.startswith("^"):
            assert not pattern.search(statement), f"{where}: {problem}: {statement[:80]}"


def test_the_ddl_lint_catches_mistakes() -> None:
    bad = ["CREATE TABLE t (id INT)", "ALTER TABLE t ADD COLUMN c INT", "ALTER TABLE t ADD c INT",
           "ALTER TABLE t DROP COLUMN c", "ALTER TABLE t ADD INDEX i (c)", "CREATE INDEX i ON t (c)",
           "ALTER TABLE t RENAME COLUMN a TO b", "ALTER TABLE t ADD COLUMN IF NOT EXISTS a INT, DROP b"]
    for statement in bad:
        assert any(p.search(statement) for p, _ in _NOT_RERUNNABLE), statement


def test_2_0_contracts_after_it_expands() -> None:
    steps = [s.id for s in BUNDLE.hops["1.9.0-to-2.0.0"].steps]
    assert steps.index("default-roles") < steps.index("user-roles") < steps.index("verify-user-roles")
    assert steps[-1] == "drop-is-admin"
    schema_code = [line for line in BUNDLE.hops["1.9.0-to-2.0.0"].steps[0].sql.splitlines()
                   if not line.lstrip().startswith("--")]
    assert not any("is_admin" in line for line in schema_code)  # dropped only after every user has a role


def test_the_shipped_bundle_is_read_once_and_cannot_be_changed() -> None:
    assert load_bundle() is load_bundle()  # every reconcile asks for it: parsing it each time was most of one
    with pytest.raises(TypeError):
        load_bundle().hops["x"] = load_bundle().hops["1.8.0-to-1.9.0"]  # type: ignore[index]


def test_batched_steps_bound_their_ranges() -> None:
    batched = [s for hb in BUNDLE.hops.values() for s in hb.steps if s.kind == "batched"]
    assert {s.id for s in batched} == {"user-roles", "preferences", "conversation-metadata"}
    for step in batched:
        assert "%(lo)s" in step.sql and "%(hi)s" in step.sql and step.table and step.key


def test_analytics_backfill_is_batched_by_day() -> None:
    step = next(s for s in BUNDLE.hops["1.8.0-to-1.9.0"].steps if s.id == "analytics-backfill")
    assert step.kind == "daily" and step.sql.lstrip().startswith("SELECT DATE(")
    assert "ON DUPLICATE KEY UPDATE" in step.write and "+" not in step.write  # sets, never adds
    assert step.content()["write"] == step.write.strip()  # the checksum covers the write


@pytest.mark.parametrize(("write", "words"), [
    ("", "one INSERT ... VALUES"),
    ("UPDATE t SET a = %s", "one INSERT ... VALUES"),
    ("INSERT INTO t (a) VALUES (%s)", "ON DUPLICATE KEY UPDATE"),
    ("INSERT INTO t (a) VALUES (%s) ON DUPLICATE KEY UPDATE a = VALUES(a); SELECT 1", "one INSERT"),
])
def test_daily_step_needs_an_idempotent_write(write: str, words: str) -> None:
    raw = {"id": "agg", "kind": "daily", "sql": "SELECT DATE(created_at), COUNT(*) FROM t GROUP BY 1",
           "write": write}
    with pytest.raises(BundleError, match=re.escape(words)):
        load_step(raw, "test", lambda name: "")


def test_only_a_daily_step_has_a_write() -> None:
    with pytest.raises(BundleError, match="only a daily step"):
        load_step({"id": "x", "kind": "sql", "sql": "SELECT 1", "write": "INSERT"}, "test", lambda name: "")


def test_config_rules_of_2_0() -> None:
    rules = BUNDLE.hops["1.9.0-to-2.0.0"].config
    assert rules.rename == {"JWT_SECRET": "SECRET", "OPENAI_KEY": "OPENAI_API_KEY"}
    assert rules.set == {"RBAC_ENABLED": "true", "MFA_ENABLED": "false", "API_VERSION": "v2",
                         "HEALTH_CHECK_ENABLED": "true", "METRICS_ENABLED": "true", "JWT_ALGORITHM": "RS256",
                         "JWT_PUBLIC_KEY_FILE": "/certs/public.pem", "JWT_PRIVATE_KEY_FILE": "/certs/private.pem"}
    assert set(rules.remove) == {"LEGACY_AUTH_ENABLED", "OLD_API_FORMAT"}
    assert BUNDLE.hops["1.8.0-to-1.9.0"].config.set["OCR_LANGUAGES"] == "eng,fra,deu,spa"


# --- sqlsplit ---

def test_split_handles_quotes_and_comments() -> None:
    script = """
    -- a comment; with a semicolon
    INSERT INTO t VALUES ('a;b', "c;d", `e;f`); # another; comment
    /* block; comment */ UPDATE t SET x = 'it''s; fine', y = 'back\\\\';
    /*!40101 SET NAMES utf8 */;
    -- only a comment;
    """
    assert split_statements(script) == [
        "-- a comment; with a semicolon\n    INSERT INTO t VALUES ('a;b', \"c;d\", `e;f`)",
        "# another; comment\n    /* block; comment */ UPDATE t SET x = 'it''s; fine', y = 'back\\\\'",
        "/*!40101 SET NAMES utf8 */",
    ]


def test_split_without_final_semicolon() -> None:
    assert split_statements("SELECT 1;SELECT 2") == ["SELECT 1", "SELECT 2"]
    assert split_statements("SELECT 1--2") == ["SELECT 1--2"]  # `--` needs a space to be a comment


@pytest.mark.parametrize("script", ["SELECT 'open", "SELECT 1 /* open", "DELIMITER //\nSELECT 1 //"])
def test_split_refuses(script: str) -> None:
    with pytest.raises(SqlSplitError):
        split_statements(script)


# --- detection of untracked schemas ---

MARKERS = BUNDLE.markers()
BASE = {"users", "conversations", "channels", "files"}


@pytest.mark.parametrize(("objects", "expected"), [
    (set(), None),
    ({"auth", "conversation", "apikey"}, None),  # the real CoAI app
    (BASE, Version(1, 6, 0)),
    (BASE | {"users.last_login_at", "conversations.archived"}, Version(1, 7, 0)),
    (BASE | {"users.last_login_at", "conversations.archived", "api_keys", "files.storage_backend"}, Version(1, 8, 0)),
])
def test_detect_version(objects: set[str], expected: Version | None) -> None:
    assert detect_version(objects, MARKERS) == expected


def test_detect_version_refuses_half_schemas() -> None:
    with pytest.raises(PlanError, match="part of a later version"):
        detect_version(BASE | {"api_keys"}, MARKERS)


# --- user bundle directories ---

def write(directory: Path, name: str, text: str = "CREATE TABLE IF NOT EXISTS x (id INT);") -> None:
    (directory / name).write_text(text)


def test_bundle_dir_override_and_extras(tmp_path: Path) -> None:
    write(tmp_path, "1.6-to-1.7.sql", "ALTER TABLE users ADD COLUMN IF NOT EXISTS nick VARCHAR(32);")
    write(tmp_path, "1.9.0-to-2.0.0.preferences.sql",
          "UPDATE users SET preferences = NULL WHERE id > %(lo)s AND id <= %(hi)s AND 1 = 0")
    write(tmp_path, "2.0.0-20-second.sql")
    write(tmp_path, "2.0.0-10-first.sql")
    write(tmp_path, "README.md", "not sql")
    (tmp_path / "..data").mkdir()
    write(tmp_path, ".hidden.sql", "garbage")

    bundle = load_bundle(tmp_path)
    assert bundle.overrides == ("1.6-to-1.7.sql", "1.9.0-to-2.0.0.preferences.sql", "2.0.0-10-first.sql",
                                "2.0.0-20-second.sql")
    first = bundle.hops["1.6.0-to-1.7.0"]
    assert [s.id for s in first.steps] == ["schema"] and "nick" in first.steps[0].sql
    assert first.checksum != BUNDLE.hops["1.6.0-to-1.7.0"].checksum
    last = bundle.hops["1.9.0-to-2.0.0"]
    assert [s.id for s in last.steps][-3:] == ["drop-is-admin", "10-first", "20-second"]
    prefs = next(s for s in last.steps if s.id == "preferences")
    assert prefs.kind == "batched" and prefs.table == "users" and "1 = 0" in prefs.sql
    assert bundle.hops["1.8.0-to-1.9.0"] == BUNDLE.hops["1.8.0-to-1.9.0"]


@pytest.mark.parametrize(("name", "text", "words"), [
    ("2.0.0-to-2.1.0.sql", "SELECT 1", "no hop"),
    ("1.6.0-to-1.8.0.sql", "SELECT 1", "no hop"),
    ("1.9.0-to-2.0.0.nope.sql", "SELECT 1", "no step 'nope'"),
    ("1.6.0-early.sql", "SELECT 1", "no hop ends at 1.6.0"),
    ("2.0.0-drop-is-admin.sql", "SELECT 1", "clash"),
    ("migrate.sql", "SELECT 1", "expected <from>-to-<to>.sql"),
    ("1.9.0-to-2.0.0.user-roles.sql", "INSERT INTO user_roles SELECT 1, 2", "%(lo)s"),
    ("2.0.0-bad.sql", "SELECT 'unterminated", "unterminated"),
    ("2.0.0-empty.sql", "-- nothing", "no SQL"),
])
def test_bundle_dir_errors(tmp_path: Path, name: str, text: str, words: str) -> None:
    write(tmp_path, name, text)
    with pytest.raises(BundleError, match=re.escape(words)):
        load_bundle(tmp_path)


def test_bundle_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "missing")
