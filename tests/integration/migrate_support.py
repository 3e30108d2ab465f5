"""Helpers for the part-A engine tests (plan, migrate, seed-data): run the CLI, compare databases."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from coai_operator.engine.dbconfig import DbConfig, connect
from tests.mariadb import engine_env, query

ENGINE_TABLES = ("schema_migrations", "schema_migrations_progress")


@dataclass
class CliRun:
    returncode: int
    result: dict[str, Any]
    stdout: str
    stderr: str


env_for = engine_env


def engine(env: dict[str, str], *args: str, extra_env: dict[str, str] | None = None, timeout: float = 120) -> CliRun:
    """`coai-operator engine ARGS` with `env`, as a process; the final stdout line parsed as JSON."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL_", "COAI_ENGINE_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "coai_operator.cli", "engine", *args],
        env={**base, **env, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    return CliRun(proc.returncode, result, proc.stdout, proc.stderr)


def ok(run: CliRun) -> dict[str, Any]:
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.result["ok"] is True
    return run.result


def seed(env: dict[str, str], *args: str) -> dict[str, Any]:
    return ok(engine(env, "seed-data", "--seed", "t1", *args))




def tables(cfg: DbConfig) -> list[str]:
    return [r[0] for r in query(
        cfg, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (cfg.database,))]


def columns(cfg: DbConfig, table: str) -> list[str]:
    return [r[0] for r in query(
        cfg, "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
        " ORDER BY ordinal_position", (cfg.database, table))]


_AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=\d+")


def fingerprint(cfg: DbConfig) -> dict[str, Any]:
    """Everything that must match between two runs: CHECKSUM TABLE and DDL of every table, and
    schema_migrations without its time-of-run column (applied_at)."""
    conn = connect(cfg)
    try:
        with conn.cursor() as cur:
            result: dict[str, Any] = {"checksum": {}, "ddl": {}}
            for table in tables(cfg):
                cur.execute(f"SHOW CREATE TABLE `{table}`")
                result["ddl"][table] = _AUTO_INCREMENT.sub("", cur.fetchone()[1])
                if table != "schema_migrations":
                    cur.execute(f"CHECKSUM TABLE `{table}`")
                    result["checksum"][table] = cur.fetchone()[1]
            if "schema_migrations" in result["ddl"]:
                cur.execute("SELECT version, description, checksum FROM schema_migrations ORDER BY version")
                result["schema_migrations"] = cur.fetchall()
            return result
    finally:
        conn.close()


@pytest.fixture
def new_database(db_config: DbConfig) -> Iterator[Callable[[], DbConfig]]:
    """Make more fresh databases on the same server (dropped after the test)."""
    made: list[DbConfig] = []

    def make() -> DbConfig:
        cfg = replace(db_config, database=f"coai_{uuid.uuid4().hex[:10]}")
        conn = connect(cfg, with_database=False)
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{cfg.database}` CHARACTER SET utf8mb4")
        conn.close()
        made.append(cfg)
        return cfg

    yield make
    for cfg in made:
        conn = connect(cfg, with_database=False)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{cfg.database}`")
        conn.close()
