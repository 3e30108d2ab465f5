"""A real MariaDB server for the integration and e2e layers (pytest-mysql starts it)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from pytest_mysql import factories

from coai_operator.engine.dbconfig import DbConfig, connect
from coai_operator.engine.rowcounts import checksum_tables, list_tables

# A password with every character an option file or a shell would mangle.
TEST_USER = "coai_engine"
TEST_PASSWORD = "pa ss'w\"o\\rd$`#;=x"

mariadb_proc = factories.mysql_proc(port=None, user="root")


def _admin_connect(server: dict) -> pymysql.Connection:
    # Debian's MariaDB authenticates root by unix_socket: connect as the OS user over the socket.
    return pymysql.connect(unix_socket=server["socket"], user="root", autocommit=True)


@pytest.fixture(scope="session")
def mariadb_host() -> str:
    """The address clients use (the e2e layer overrides it with the one pods can reach)."""
    return "127.0.0.1"


@pytest.fixture(scope="session")
def mariadb_server(mariadb_proc, mariadb_host: str) -> Iterator[dict]:
    """The running server plus a password-protected application user."""
    server = {"host": mariadb_host, "port": mariadb_proc.port, "socket": mariadb_proc.unixsocket}
    conn = _admin_connect(server)
    with conn.cursor() as cur:
        # mariadb-install-db adds anonymous ''@localhost users; they would shadow ours over TCP.
        cur.execute("SELECT Host FROM mysql.user WHERE User = ''")
        for (host,) in cur.fetchall():
            cur.execute("DROP USER ''@%s", (host,))
        cur.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (TEST_USER, TEST_PASSWORD))
        cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@'%%'", (TEST_USER,))
    conn.close()
    yield server


@contextlib.contextmanager
def fresh_database(mariadb_server: dict) -> Iterator[DbConfig]:
    """A new, empty database reached with the password-protected user; dropped afterwards."""
    name = f"coai_{uuid.uuid4().hex[:10]}"
    admin = _admin_connect(mariadb_server)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield DbConfig(host=mariadb_server["host"], port=mariadb_server["port"], user=TEST_USER,
                       database=name, password=TEST_PASSWORD)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture
def db_config(mariadb_server: dict) -> Iterator[DbConfig]:
    """A fresh, empty database for one test."""
    with fresh_database(mariadb_server) as cfg:
        yield cfg


def engine_env(cfg: DbConfig) -> dict[str, str]:
    """The environment a Job gives the engine to reach `cfg`."""
    return {"MYSQL_HOST": cfg.host, "MYSQL_PORT": str(cfg.port), "MYSQL_USER": cfg.user,
            "MYSQL_PASSWORD": cfg.password, "MYSQL_DB": cfg.database}


@pytest.fixture
def db_env(db_config: DbConfig) -> dict[str, str]:
    """The environment a Job would give the engine for `db_config`."""
    return engine_env(db_config)


def query(cfg: DbConfig, sql: str, args: Any = None) -> list[tuple]:
    """Run one statement as the test user; the rows it returns."""
    conn = connect(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def table_checksums(cfg: DbConfig) -> dict[str, int | None]:
    """CHECKSUM TABLE of every table (the engine's own listing): equal checksums, equal data."""
    conn = connect(cfg)
    try:
        return checksum_tables(conn, list_tables(conn, cfg.database))
    finally:
        conn.close()
