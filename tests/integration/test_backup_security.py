"""Credentials never reach argv, environ of children or output; failures are one clear line, exit 1."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coai_operator.engine.dbconfig import DbConfig

from .engine_support import create_schema, populate, query, run_engine, table_checksums, tree_digest

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    """All live descendants of `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def _watch_child(env: dict[str, str], args: list[str], tool: str) -> tuple[list[tuple[bytes, bytes, int]], str, str]:
    """Run the CLI, and while `tool` runs as its child capture (cmdline, environ, option file mode)."""
    proc = subprocess.Popen([sys.executable, "-m", "coai_operator.cli", "engine", *args],
                            env={**os.environ, **env, "COAI_ENGINE_PAUSE_CLIENT_SECONDS": "2"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[tuple[bytes, bytes, int]] = []
    deadline = time.monotonic() + 60
    while not seen and time.monotonic() < deadline and proc.poll() is None:
        for child in _children(proc.pid):
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                environ = Path(f"/proc/{child}/environ").read_bytes()
            except OSError:
                continue
            if tool.encode() in cmdline.split(b"\0")[0]:
                option = next(a for a in cmdline.split(b"\0") if a.startswith(b"--defaults-extra-file="))
                mode = stat.S_IMODE(os.stat(option.split(b"=", 1)[1]).st_mode)
                seen.append((cmdline, environ, mode))
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return seen, out, err


def test_password_never_on_child_argv_environ_or_output(db_config: DbConfig, db_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    create_schema(db_config)
    populate(db_config)
    # ~2.4 MB of dump: more than one 1 MiB read plus the pipe buffer, so the dump is still running while it is held.
    query(db_config, "CREATE TABLE bulk (id INT PRIMARY KEY, payload BLOB)")
    for start in range(0, 1200, 100):
        rows = ", ".join(f"({i}, RANDOM_BYTES(1024))" for i in range(start, start + 100))
        query(db_config, f"INSERT INTO bulk VALUES {rows}")
    password = db_config.password.encode()

    for args, tool in (
        (["backup", "--dir", str(tmp_path / "bk")], "mariadb-dump"),
        (["restore", "--dir", str(tmp_path / "bk")], "mariadb"),
    ):
        seen, out, err = _watch_child(db_env, args, tool)
        assert seen, f"never saw {tool} running"
        cmdline, environ, mode = seen[0]
        assert cmdline.split(b"\0")[1].startswith(b"--defaults-extra-file=")  # first argument
        assert password not in cmdline
        assert password not in environ
        assert b"MYSQL_PASSWORD" not in environ
        assert mode == 0o600
        assert db_config.password not in out + err
        option_file = next(a for a in cmdline.split(b"\0") if a.startswith(b"--defaults-extra-file="))
        assert not os.path.exists(option_file.split(b"=", 1)[1])  # removed once the tool is done


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


BAD_SETTINGS = {
    "wrong password": ({"MYSQL_PASSWORD": "not-the-password"}, "access denied"),
    # No retry window: test_db_connect.py covers the retries; here only the message counts.
    "unreachable host": ({"MYSQL_PORT": str(_free_port()), "MYSQL_CONNECT_RETRY_SECONDS": "0"},
                         "cannot reach MariaDB at 127.0.0.1"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
@pytest.mark.parametrize("command", ["backup", "restore", "migrate-storage", "validate"])
def test_bad_credentials_or_host_one_line_error_nothing_changed(db_config: DbConfig, db_env: dict[str, str],
                                                                tmp_path: Path, case: str, command: str) -> None:
    create_schema(db_config)
    populate(db_config)
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "a.txt").write_text("a")
    good = run_engine(db_env, "backup", "--dir", str(tmp_path / "good"), "--storage", str(storage))
    assert good.returncode == 0, good.stderr
    query(db_config, "INSERT INTO files (user_id, file_path, original_name) VALUES (1, 'a.txt', 'a.txt')")
    checksums, files = table_checksums(db_config), tree_digest(storage)

    override, expected = BAD_SETTINGS[case]
    env = {**db_env, **override}
    args = {
        "backup": ["--dir", str(tmp_path / "new"), "--storage", str(storage)],
        "restore": ["--dir", str(tmp_path / "good"), "--storage", str(storage)],
        "migrate-storage": ["--storage", str(storage)],
        "validate": ["--checks", "database"],
    }[command]
    run = run_engine(env, command, *args)

    assert run.returncode == 1
    assert run.result["ok"] is False
    assert expected in run.result["error"]
    assert "\n" not in run.result["error"]
    assert len(run.stdout.strip().splitlines()) == 1
    for secret in (db_config.password, override.get("MYSQL_PASSWORD", db_config.password)):
        assert secret not in run.stdout + run.stderr
    assert table_checksums(db_config) == checksums
    assert tree_digest(storage) == files
    assert not (tmp_path / "new").exists()


def test_missing_dump_tool_is_a_clear_error(db_config: DbConfig, db_env: dict[str, str], tmp_path: Path) -> None:
    run = run_engine({**db_env, "PATH": str(tmp_path)}, "backup", "--dir", str(tmp_path / "bk"))
    assert run.returncode == 1
    assert run.result["error"] == "mariadb-dump or mysqldump not found on PATH: install the MariaDB client tools"
    assert not (tmp_path / "bk").exists()


def test_dump_tool_failure_is_reported(db_config: DbConfig, db_env: dict[str, str], tmp_path: Path) -> None:
    """A dump tool that dies mid-way: its stderr's last line, exit 1, no manifest, no temp files."""
    fake = tmp_path / "bin" / "mariadb-dump"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho '-- partial dump'\necho 'mariadb-dump: Error 2013: Lost connection' >&2\nexit 2\n")
    fake.chmod(0o755)
    run = run_engine({**db_env, "PATH": f"{fake.parent}:{os.environ['PATH']}"}, "backup", "--dir", str(tmp_path / "bk"))
    assert run.returncode == 1
    assert run.result["error"] == "mariadb-dump failed: mariadb-dump: Error 2013: Lost connection"
    assert list((tmp_path / "bk").iterdir()) == []
