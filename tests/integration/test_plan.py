"""`engine plan` against a real database: where the current version comes from, refusals."""

from __future__ import annotations

import pytest

from coai_operator.engine.dbconfig import DbConfig

from .migrate_support import engine, fingerprint, ok, query, seed, tables

pytestmark = pytest.mark.integration


def test_plan_from_schema_migrations(db_config: DbConfig, db_env: dict[str, str]) -> None:
    seed(db_env, "--users", "3")
    before = fingerprint(db_config)
    plan = ok(engine(db_env, "plan", "--target", "2.0.0"))
    assert (plan["source"], plan["current"], plan["target"]) == ("schema_migrations", "1.6.0", "2.0.0")
    assert plan["path"] == ["1.6.0-to-1.7.0", "1.7.0-to-1.8.0", "1.8.0-to-1.9.0", "1.9.0-to-2.0.0"]
    assert plan["steps"][-1] == "2.0.0/drop-is-admin"
    assert plan["warnings"] == ["source 1.6.x is end of life (released 2023-Q2): upgrade off it"]
    assert plan["config"][-1]["rename"] == {"JWT_SECRET": "SECRET", "OPENAI_KEY": "OPENAI_API_KEY"}
    assert fingerprint(db_config) == before  # planning writes nothing


def test_plan_same_version_is_a_noop(db_env: dict[str, str]) -> None:
    seed(db_env, "--version", "1.9.0", "--users", "2")
    plan = ok(engine(db_env, "plan", "--target", "1.9.0"))
    assert plan["noop"] is True and plan["path"] == [] and plan["warnings"] == []


@pytest.mark.parametrize("version", ["1.6.0", "1.8.0", "2.0.0"])
def test_untracked_schema_is_detected(db_config: DbConfig, db_env: dict[str, str], version: str) -> None:
    seed(db_env, "--version", version, "--users", "2")
    query(db_config, "DROP TABLE schema_migrations, schema_migrations_progress")
    plan = ok(engine(db_env, "plan", "--target", "2.0.0"))
    assert (plan["source"], plan["current"]) == ("inspection", version)
    assert "schema_migrations" not in tables(db_config)  # plan did not create it


def test_empty_database_needs_assume_version(db_config: DbConfig, db_env: dict[str, str]) -> None:
    run = engine(db_env, "plan", "--target", "2.0.0")
    assert run.returncode == 1
    assert run.result["reason"] == "UnsupportedPath"
    assert "empty" in run.result["error"] and "--assume-version" in run.result["error"]

    plan = ok(engine(db_env, "plan", "--target", "2.0.0", "--assume-version", "1.8.0"))
    assert (plan["source"], plan["current"], plan["create_schema"]) == ("--assume-version", "1.8.0", "1.8.0")
    assert tables(db_config) == []


def test_foreign_tables_are_not_guessed(db_config: DbConfig, db_env: dict[str, str]) -> None:
    query(db_config, "CREATE TABLE auth (id INT PRIMARY KEY)")  # the real CoAI app's schema
    run = engine(db_env, "plan", "--target", "2.0.0")
    assert run.returncode == 1
    assert run.result["reason"] == "UnknownVersion"
    assert "auth" in run.result["error"]


def test_from_needs_no_database() -> None:
    plan = ok(engine({}, "plan", "--target", "2.0.0", "--from", "1.8.2"))
    assert (plan["source"], plan["path"]) == ("--from", ["1.8.0-to-1.9.0", "1.9.0-to-2.0.0"])


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--from", "2.0.0", "--target", "1.9.0"), "Downgrade"),
        (("--from", "1.5.0", "--target", "2.0.0"), "UnknownVersion"),
        (("--from", "1.6.0", "--target", "3.0.0"), "UnknownVersion"),
        (("--from", "1.6.0", "--target", "2.0.0", "--direct"), "UnsupportedPath"),
        (("--from", "one", "--target", "2.0.0"), "UnknownVersion"),
    ],
)
def test_refusals(args: tuple[str, ...], reason: str) -> None:
    run = engine({}, "plan", *args)
    assert run.returncode == 1
    assert run.result["ok"] is False and run.result["reason"] == reason
    assert len(run.stdout.strip().splitlines()) == 1
