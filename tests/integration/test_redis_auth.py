"""The managed Redis's config file, end to end with a real redis-server: the init container's
script writes it from REDIS_PASSWORD, redis-server starts from it, and only that password works.
The password is in no process's command line."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from e2e.helpers import wait_for

from coai_operator.instance import redis_auth

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (apt: redis-server)")]

PASSWORDS = ["plain-generated-Xy_1", 'p "q" \\ $HOME `id` \'z\' ; rm -rf /']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(sock: socket.socket, *args: str) -> bytes:
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    sock.sendall(payload.encode())
    return wait_for(lambda: sock.recv(512) or None, timeout=10, message="redis reply")


@pytest.mark.parametrize("password", PASSWORDS)
def test_redis_starts_from_the_written_config_and_requires_the_password(tmp_path: Path, password: str) -> None:
    conf = tmp_path / "redis.conf"
    script = redis_auth.WRITE_CONFIG.replace(redis_auth.CONFIG_FILE, str(conf))
    subprocess.run(["sh", "-c", script], env={"REDIS_PASSWORD": password, "PATH": "/usr/bin:/bin"}, check=True)
    port = free_port()
    server = subprocess.Popen(["redis-server", str(conf), "--port", str(port), "--bind", "127.0.0.1",
                               "--dir", str(tmp_path), "--appendonly", "yes"],
                              stdout=(tmp_path / "redis.log").open("w"), stderr=subprocess.STDOUT)
    try:
        sock = wait_for(lambda: _connect(port), timeout=30, message="redis-server listening")
        sock.settimeout(10)
        with sock:
            assert command(sock, "PING").startswith(b"-NOAUTH")
            assert command(sock, "AUTH", "wrong").startswith(b"-WRONGPASS")
            assert command(sock, "AUTH", password) == b"+OK\r\n"
            assert command(sock, "SET", "k", "v") == b"+OK\r\n"
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode(errors="replace")
        assert password not in cmdline
    finally:
        server.terminate()
        server.wait(timeout=30)


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=1)
    except OSError:
        return None
