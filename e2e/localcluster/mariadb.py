"""A private MariaDB server for the demo and the e2e layer (Debian's mariadbd on loopback).

The server runs as its own process with its own data directory and socket; the application user
gets a random password that only ever travels through the environment or a Secret.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from e2e.localcluster.cluster import free_port, wait_until
from e2e.localcluster.network import GATEWAY


def _server_binary() -> str:
    for name in ("mariadbd", "/usr/sbin/mariadbd", "mysqld", "/usr/sbin/mysqld"):
        found = shutil.which(name) or (name if Path(name).exists() else None)
        if found:
            return found
    raise FileNotFoundError("mariadbd not found: run e2e/setup.sh (installs mariadb-server)")


@dataclass
class LocalMariaDB:
    state_dir: Path
    user: str = "coai"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    port: int = field(default_factory=free_port)
    # Pods reach host processes at the node's bridge address (it must exist before start()).
    host: str = GATEWAY
    proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.state_dir / "mysqld.sock"

    def admin(self) -> pymysql.Connection:
        return pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True)

    def start(self) -> LocalMariaDB:
        data = self.state_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mariadb-install-db", "--user=root", f"--datadir={data}", "--skip-test-db",
                        "--auth-root-authentication-method=socket"], check=True, capture_output=True)
        log = (self.state_dir / "mariadbd.log").open("ab")
        self.proc = subprocess.Popen(
            [_server_binary(), "--no-defaults", "--user=root", f"--datadir={data}", f"--socket={self.socket}",
             f"--port={self.port}", f"--bind-address={','.join(dict.fromkeys(['127.0.0.1', self.host]))}",
             "--skip-name-resolve",
             f"--pid-file={self.state_dir / 'mysqld.pid'}", "--innodb-flush-log-at-trx-commit=2",
             "--max-connections=500"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(lambda: bool(self.admin()), 60, "mariadbd to accept connections")
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (self.user, self.password))
            cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@'%%'", (self.user,))
        return self

    def create_database(self, name: str) -> None:
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name.replace('`', '``')}` CHARACTER SET utf8mb4")

    def env(self, database: str) -> dict[str, str]:
        return {"MYSQL_HOST": self.host, "MYSQL_PORT": str(self.port), "MYSQL_USER": self.user,
                "MYSQL_PASSWORD": self.password, "MYSQL_DB": database}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
