"""Database credentials and connections for the engine.

Credentials come only from the environment (the CoAI app's own MYSQL_* names, so a Job can
reuse the app's env) or from a mounted file (`MYSQL_PASSWORD_FILE`). They reach client tools
(mariadb-dump, mariadb) through an option file of mode 0600, never through argv.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

log = logging.getLogger(__name__)

# The driver's "no socket", "can't connect" and "lost connection during the handshake": the
# network or the server is not there yet. Anything else (a wrong password, an unknown database)
# is an answer, and retrying it would only hide it.
UNREACHABLE_ERRORS = frozenset({2002, 2003, 2013})
CONNECT_RETRY_SECONDS = 30.0  # how long an unreachable server is retried before the error stands


class ConfigError(ValueError):
    """The engine was started without what it needs to reach the database."""


@dataclass(frozen=True)
class DbConfig:
    host: str
    port: int
    user: str
    database: str
    password: str = field(default="", repr=False)
    connect_timeout: int = 10
    connect_retry_seconds: float = CONNECT_RETRY_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DbConfig:
        env = os.environ if env is None else env
        password = env.get("MYSQL_PASSWORD", "")
        password_file = env.get("MYSQL_PASSWORD_FILE")
        if password_file:
            try:
                password = Path(password_file).read_text().rstrip("\n")
            except OSError as exc:
                raise ConfigError(f"cannot read MYSQL_PASSWORD_FILE {password_file}: {exc.strerror}") from exc
        host = env.get("MYSQL_HOST")
        if not host:
            raise ConfigError("MYSQL_HOST is not set")
        try:
            port = int(env.get("MYSQL_PORT", "3306"))
        except ValueError as exc:
            raise ConfigError(f"MYSQL_PORT is not a number: {env.get('MYSQL_PORT')!r}") from exc
        return cls(
            host=host,
            port=port,
            user=env.get("MYSQL_USER", "root"),
            database=env.get("MYSQL_DB") or env.get("MYSQL_DATABASE") or "chatnio",
            password=password,
            connect_timeout=int(env.get("MYSQL_CONNECT_TIMEOUT", "10")),
            connect_retry_seconds=_seconds(env, "MYSQL_CONNECT_RETRY_SECONDS", CONNECT_RETRY_SECONDS),
        )

    def describe(self) -> str:
        """Where we connect, for messages; never includes the password."""
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return max(0.0, float(env.get(name, default)))
    except ValueError as exc:
        raise ConfigError(f"{name} is not a number of seconds: {env.get(name)!r}") from exc


def connect(cfg: DbConfig, *, with_database: bool = True, autocommit: bool = True,
            sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> pymysql.Connection:
    """Connect, retrying an unreachable server for cfg.connect_retry_seconds.

    A Job's pod can start before its network is fully there: the Kubernetes NetworkPolicy docs
    ask pods to tolerate a plugin that programs a new pod late, and one e2e backup pod's first
    connection to the host timed out where the step before it had connected fine. A database
    being restarted refuses connections for a few seconds too."""
    deadline, delay = clock() + cfg.connect_retry_seconds, 0.5
    while True:
        try:
            return pymysql.connect(
                host=cfg.host,
                port=cfg.port,
                user=cfg.user,
                password=cfg.password,
                database=cfg.database if with_database else None,
                connect_timeout=cfg.connect_timeout,
                autocommit=autocommit,
                charset="utf8mb4",
            )
        except pymysql.err.OperationalError as exc:
            code = exc.args[0] if exc.args else None
            if code not in UNREACHABLE_ERRORS or clock() + delay > deadline:
                raise
            log.warning("cannot reach the database at %s:%s yet (error %s); retrying in %.1fs",
                        cfg.host, cfg.port, code, delay)
            sleep(delay)
            delay = min(delay * 2, 5.0)


def _option_value(value: str) -> str:
    # Option files treat quotes and backslashes specially; quote and escape so any password works.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextlib.contextmanager
def option_file(cfg: DbConfig) -> Iterator[Path]:
    """A `[client]` option file (mode 0600) for mariadb/mariadb-dump; removed on exit.

    Pass it as the FIRST argument: `--defaults-extra-file=PATH`.
    """
    fd, name = tempfile.mkstemp(prefix="coai-client-", suffix=".cnf")
    path = Path(name)
    try:
        os.fchmod(fd, 0o600)
        body = (
            "[client]\n"
            f"host={_option_value(cfg.host)}\n"
            f"port={cfg.port}\n"
            f"user={_option_value(cfg.user)}\n"
            f"password={_option_value(cfg.password)}\n"
        )
        if cfg.host not in ("localhost",):
            body += "protocol=TCP\n"
        os.write(fd, body.encode())
        os.close(fd)
        fd = -1
        yield path
    finally:
        if fd >= 0:
            os.close(fd)
        path.unlink(missing_ok=True)
