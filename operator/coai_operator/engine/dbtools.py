"""Connections with one-line, actionable errors; locating and running the MariaDB client tools.

Client tools get credentials only through the 0600 option file (`--defaults-extra-file`, always
the first argument) and run with an environment scrubbed of MYSQL_* and anything secret-looking,
so neither argv nor /proc/<pid>/environ of a child ever holds the password.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import BinaryIO

import pymysql

from coai_operator.domain.errors import EngineError
from coai_operator.engine.dbconfig import DbConfig, connect

_SECRET_MARKERS = ("PASSWORD", "SECRET", "API_KEY", "TOKEN")


def describe_db_error(cfg: DbConfig, exc: pymysql.err.MySQLError) -> str:
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    text = text.splitlines()[0] if text else type(exc).__name__
    where = f"{cfg.host}:{cfg.port}"
    if code in (1045, 1698):
        return f"cannot log in to MariaDB at {where} as {cfg.user!r}: access denied (check the password)"
    if code in (2002, 2003, 2005, 2006, 2013):
        return f"cannot reach MariaDB at {where}: {text}"
    if code == 1049:
        return f"database {cfg.database!r} does not exist on {where}"
    if code == 1044:
        return f"user {cfg.user!r} may not use database {cfg.database!r} on {where}"
    return f"database error {code}: {text}" if code else f"database error: {text}"


def open_connection(
    cfg: DbConfig, error: type[EngineError], *, with_database: bool = True, autocommit: bool = True
) -> pymysql.Connection:
    """`connect()`, turning driver errors into `error` with a one-line message."""
    try:
        return connect(cfg, with_database=with_database, autocommit=autocommit)
    except pymysql.err.MySQLError as exc:
        raise error(describe_db_error(cfg, exc)) from exc


def find_tool(names: tuple[str, ...], error: type[EngineError]) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise error(f"{' or '.join(names)} not found on PATH: install the MariaDB client tools")


def child_env() -> dict[str, str]:
    """The environment for client tools: no MYSQL_*/MARIADB_* and nothing that looks secret."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MYSQL", "MARIADB")) and not any(m in key.upper() for m in _SECRET_MARKERS)
    }


def finish_tool(proc: subprocess.Popen, stderr: BinaryIO, tool: str, error: type[EngineError]) -> None:
    """Wait for a client tool; raise `error` with its last stderr line when it failed."""
    rc = proc.wait()
    if rc != 0:
        stderr.seek(0)
        raise error(tool_error(tool, stderr.read(), rc))


def tool_error(tool: str, stderr: bytes, returncode: int) -> str:
    """The last meaningful stderr line of a failed client tool, one line, bounded."""
    lines = [line.strip() for line in stderr.decode("utf-8", errors="replace").splitlines() if line.strip()]
    detail = lines[-1] if lines else f"exit code {returncode}"
    return f"{os.path.basename(tool)} failed: {detail[:300]}"
