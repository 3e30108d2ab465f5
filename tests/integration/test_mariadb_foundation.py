"""The integration layer's foundation: a real server, real client tools, no password on argv."""

from __future__ import annotations

import gzip
import subprocess

import pytest

from coai_operator.engine.dbconfig import DbConfig, connect, option_file

pytestmark = pytest.mark.integration


def test_connect_create_and_dump_with_mariadb_dump(db_config: DbConfig, tmp_path) -> None:
    conn = connect(db_config)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)")
        cur.executemany("INSERT INTO notes VALUES (%s, %s)", [(1, "hello"), (2, "wörld 'quoted'")])
    conn.close()

    out = tmp_path / "dump.sql.gz"
    with option_file(db_config) as opts, gzip.open(out, "wb") as sink:
        proc = subprocess.Popen(
            ["mariadb-dump", f"--defaults-extra-file={opts}", "--single-transaction", db_config.database],
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read(65536), b""):
            sink.write(chunk)
        assert proc.wait() == 0
        assert db_config.password not in " ".join(proc.args)

    text = gzip.decompress(out.read_bytes()).decode()
    assert "CREATE TABLE `notes`" in text
    assert "wörld \\'quoted\\'" in text


def test_option_file_is_private_and_removed(db_config: DbConfig) -> None:
    with option_file(db_config) as path:
        assert path.stat().st_mode & 0o777 == 0o600
        assert db_config.password.replace("\\", "\\\\").replace('"', '\\"') in path.read_text()
    assert not path.exists()
