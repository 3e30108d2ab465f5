"""Backups to and from a real S3 server (versitygw on loopback) and a real MariaDB, through the CLI."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from coai_operator.engine.dbconfig import DbConfig
from tests.s3 import S3Server, require_versitygw

from .engine_support import populated_app, query, run_engine, table_checksums, tree_digest
from .test_backup_security import _children

pytestmark = pytest.mark.integration
KEY = "correct horse battery staple 42"


def _bulk(cfg: DbConfig, mib: int) -> None:
    """Incompressible rows, so the dump artifact is larger than one multipart part (8 MiB)."""
    query(cfg, "CREATE TABLE bulk (id INT PRIMARY KEY, payload LONGBLOB)")
    for i in range(mib):
        query(cfg, "INSERT INTO bulk VALUES (%s, %s)", (i, os.urandom(1 << 20)))


@pytest.fixture
def app(db_config: DbConfig, tmp_path: Path) -> Path:
    """A populated database and storage tree; returns the storage root."""
    return populated_app(db_config, tmp_path / "storage")


def _env(db_env: dict[str, str], s3: S3Server, **extra: str) -> dict[str, str]:
    return {**db_env, **s3.env(), **extra}


def test_round_trip_through_s3_multipart(db_config: DbConfig, db_env: dict[str, str], app: Path,
                                         s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    _bulk(db_config, 10)
    env = _env(db_env, s3_server)
    url = f"s3://{s3_bucket}/team/a/nightly-1"
    run = run_engine(env, "backup", "--dir", url, "--storage", str(app), "--verify")
    assert run.returncode == 0, run.stderr
    assert run.result["location"] == url
    assert run.result["verify"]["verified"] is True and run.result["verify"]["checksumsCompared"] is True
    keys = s3_server.keys(s3_bucket)
    assert keys == [f"team/a/nightly-1/{n}" for n in ("database.sql.gz", "manifest.json", "storage.tar.gz")]
    db_art = next(a for a in run.result["artifacts"] if a["name"] == "database.sql.gz")
    assert db_art["bytes"] > 9 << 20  # more than one part went up

    before, files = table_checksums(db_config), tree_digest(app)
    query(db_config, "DELETE FROM conversations")
    query(db_config, "CREATE TABLE later (id INT)")
    (app / "big.bin").write_bytes(b"changed")
    restored = run_engine(env, "restore", "--dir", url, "--storage", str(app))
    assert restored.returncode == 0, restored.stderr
    assert table_checksums(db_config) == before
    assert tree_digest(app) == files


def test_corrupted_object_refused_and_nothing_changed(db_config: DbConfig, db_env: dict[str, str], app: Path,
                                                      s3_server: S3Server, s3_bucket: str) -> None:
    env = _env(db_env, s3_server)
    url = f"s3://{s3_bucket}/bk"
    assert run_engine(env, "backup", "--dir", url, "--storage", str(app)).returncode == 0
    client = s3_server.client()
    body = bytearray(client.get_object(s3_bucket, "bk/database.sql.gz").read())
    body[len(body) // 2] ^= 0xFF  # same size, one byte altered
    import io

    client.put_object(s3_bucket, "bk/database.sql.gz", io.BytesIO(bytes(body)), len(body))
    query(db_config, "DELETE FROM conversations")
    after_damage = table_checksums(db_config)
    run = run_engine(env, "restore", "--dir", url, "--storage", str(app))
    assert run.returncode == 1
    assert "does not match its sha256" in run.result["error"] and "nothing was changed" in run.result["error"]
    assert table_checksums(db_config) == after_damage


def test_encrypted_backup_needs_its_key(db_config: DbConfig, db_env: dict[str, str], app: Path,
                                        s3_server: S3Server, s3_bucket: str) -> None:
    marker = "visible-only-with-the-key-7f3a"
    (app / "config.yaml").write_text(f"secret: {marker}\n")
    query(db_config, "INSERT INTO audit (note) VALUES (%s)", (marker,))
    url = f"s3://{s3_bucket}/enc"
    run = run_engine(_env(db_env, s3_server, COAI_BACKUP_KEY=KEY), "backup", "--dir", url, "--storage", str(app),
                     "--compression", "zstd")
    assert run.returncode == 0, run.stderr
    assert run.result["encrypted"] is True
    client = s3_server.client()
    for name in ("database.sql.zst", "storage.tar.zst"):
        stored = client.get_object(s3_bucket, f"enc/{name}").read()
        assert stored.startswith(b"COAIENC1") and marker.encode() not in stored
    manifest = json.loads(client.get_object(s3_bucket, "enc/manifest.json").read())
    assert manifest["encryption"]["algorithm"].startswith("AES-256-GCM")

    before = table_checksums(db_config)
    query(db_config, "DELETE FROM audit")
    damaged = table_checksums(db_config)
    no_key = run_engine(_env(db_env, s3_server), "restore", "--dir", url, "--storage", str(app))
    assert no_key.returncode == 1 and "key is needed" in no_key.result["error"]
    wrong = run_engine(_env(db_env, s3_server, COAI_BACKUP_KEY="another key, long enough"), "restore",
                       "--dir", url, "--storage", str(app))
    assert wrong.returncode == 1 and "not the key" in wrong.result["error"]
    assert table_checksums(db_config) == damaged
    ok = run_engine(_env(db_env, s3_server, COAI_BACKUP_KEY=KEY), "restore", "--dir", url, "--storage", str(app))
    assert ok.returncode == 0, ok.stderr
    assert table_checksums(db_config) == before
    assert (app / "config.yaml").read_text() == f"secret: {marker}\n"


def test_store_down_during_backup_fails_and_leaves_no_manifest(db_config: DbConfig, db_env: dict[str, str],
                                                              app: Path, tmp_path: Path) -> None:
    require_versitygw()
    server = S3Server(tmp_path / "gw").start()
    try:
        bucket = server.make_bucket()
        _bulk(db_config, 3)  # the dump is still running while the test hook holds it
        proc = subprocess.Popen([sys.executable, "-m", "coai_operator.cli", "engine", "backup", "--dir",
                                 f"s3://{bucket}/down", "--storage", str(app)],
                                env={**os.environ, **_env(db_env, server), "COAI_ENGINE_PAUSE_CLIENT_SECONDS": "3"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        from e2e.helpers import wait_for

        wait_for(lambda: proc.poll() is None and _children(proc.pid), timeout=60, interval=0.05,
                 message="mariadb-dump started")
        server.stop()  # the object store goes away in the middle of the dump
        out, err = proc.communicate(timeout=300)
        result = json.loads(out.strip().splitlines()[-1])
        assert proc.returncode == 1, err
        assert result["reason"] == "BackupFailed"
        assert "S3 upload" in result["error"] or "S3" in result["error"], result["error"]
        server.start()
        assert not any(k.endswith("manifest.json") for k in server.keys(bucket))
        restore = run_engine(_env(db_env, server), "restore", "--dir", f"s3://{bucket}/down")
        assert restore.returncode == 1 and "manifest.json is missing" in restore.result["error"]
    finally:
        server.stop()


def test_tree_fidelity_modes_empties_links_and_special_files(db_env: dict[str, str], s3_server: S3Server,
                                                             s3_bucket: str, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "empty-dir" / "nested-empty").mkdir(parents=True)
    (root / "private").mkdir(mode=0o700)
    (root / "private").chmod(0o700)
    (root / "empty-file").write_bytes(b"")
    (root / "ro.txt").write_text("read only\n")
    (root / "ro.txt").chmod(0o444)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o750)
    (root / "group-w").write_text("x")
    (root / "group-w").chmod(0o664)
    (root / "inside").symlink_to("private")
    (root / "dangling").symlink_to("does-not-exist")
    (root / "escape").symlink_to("../../etc/passwd")
    os.mkfifo(root / "a-fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "a-socket"))
    try:
        url = f"s3://{s3_bucket}/tree"
        run = run_engine({**s3_server.env()}, "backup", "--dir", url, "--storage", str(root), "--include", "storage")
        assert run.returncode == 0, run.stderr
    finally:
        sock.close()
    assert sorted(run.result["skippedEntries"], key=lambda e: e["path"]) == [
        {"path": "a-fifo", "type": "fifo"}, {"path": "a-socket", "type": "socket"},
        {"path": "escape", "type": "symlink-outside"}]

    def listing(base: Path) -> dict[str, tuple[str, int, str]]:
        out = {}
        for path in sorted(base.rglob("*")):
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[path.relative_to(base).as_posix()] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
                kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
                body = "" if kind == "dir" else path.read_bytes().hex()
                out[path.relative_to(base).as_posix()] = (kind, stat.S_IMODE(st.st_mode), body)
        return out

    expected = {k: v for k, v in listing(root).items() if k != "escape"}
    target = tmp_path / "restored"
    restored = run_engine({**s3_server.env()}, "restore", "--dir", url, "--storage", str(target))
    assert restored.returncode == 0, restored.stderr
    assert listing(target) == expected
    assert (target / "empty-file").stat().st_size == 0 and (target / "empty-dir" / "nested-empty").is_dir()


def test_preflight_refuses_a_volume_too_small_with_both_numbers(db_config: DbConfig, db_env: dict[str, str],
                                                                app: Path, tmp_path: Path) -> None:
    """A 1 MiB tmpfs cannot hold a 10 MiB database: refused before anything is written."""
    _bulk(db_config, 10)
    query(db_config, "ANALYZE TABLE bulk")  # the estimate is InnoDB's statistics; make them current
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        run = run_engine(db_env, "backup", "--dir", str(small / "bk"), "--storage", str(app))
        assert run.returncode == 1
        assert run.result["reason"] == "InsufficientSpace", run.result
        assert "the database is" in run.result["error"] and "only" in run.result["error"]
        assert run.result["needBytes"] > run.result["freeBytes"]
        assert not (small / "bk" / "manifest.json").exists()
        # the statistics can lag; a volume that fills up mid-write is refused the same way
        query(db_config, "CREATE TABLE bulk2 SELECT * FROM bulk")
        run = run_engine({**db_env, "COAI_SKIP_CAPACITY_CHECK": "1"}, "backup", "--dir", str(small / "bk"))
        assert run.returncode == 1 and run.result["reason"] == "InsufficientSpace", run.result
        assert not (small / "bk" / "manifest.json").exists()
        assert not [p.name for p in (small / "bk").iterdir()]  # no temporary file left behind
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_catalog_lists_backups_and_retention_delete_removes_every_object(
        db_config: DbConfig, db_env: dict[str, str], app: Path, s3_server: S3Server, s3_bucket: str) -> None:
    from coai_operator.backup.retention import Candidate, Policy, plan

    env = _env(db_env, s3_server)
    for name in ("b1", "b2", "b3"):
        run = run_engine(env, "backup", "--dir", f"s3://{s3_bucket}/loc/ns/{name}", "--storage", str(app))
        assert run.returncode == 0, run.stderr
    client = s3_server.client()
    import io

    client.put_object(s3_bucket, "loc/ns/half/database.sql.gz", io.BytesIO(b"partial"), 7)  # no manifest
    listing = run_engine(env, "catalog", "--dir", f"s3://{s3_bucket}/loc/ns")
    assert listing.returncode == 0, listing.stderr
    found = {b["name"]: b for b in listing.result["backups"]}
    assert {n for n, b in found.items() if b["complete"]} == {"b1", "b2", "b3"} and found["half"]["complete"] is False

    items = [Candidate(n, datetime.fromisoformat(found[n]["completedAt"].replace("Z", "+00:00")), True) for n in
             ("b1", "b2", "b3")]
    _, prune = plan(items, Policy(keep_last=1))
    assert len(prune) == 2
    for name in prune:
        deleted = run_engine(env, "catalog", "--dir", f"s3://{s3_bucket}/loc/ns/{name}", "--delete")
        assert deleted.returncode == 0 and deleted.result["deleted"] == 3
        assert s3_server.keys(s3_bucket, f"loc/ns/{name}/") == []
    kept = {k.split("/")[2] for k in s3_server.keys(s3_bucket, "loc/ns/")}
    assert kept == {"half"} | ({"b1", "b2", "b3"} - set(prune))


def test_import_plain_mysqldump_and_volume_tar_from_s3(db_config: DbConfig, db_env: dict[str, str], app: Path,
                                                       s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    """The guide's Docker route: `mysqldump > dump.sql` and a tar of the volume, uploaded, imported."""
    import io

    from tests.mariadb import TEST_PASSWORD

    before, files = table_checksums(db_config), tree_digest(app)
    counts = {t: query(db_config, f"SELECT COUNT(*) FROM `{t.replace('`', '``')}`")[0][0]
              for t in ("users", "conversations", "audit")}
    opts = tmp_path / "client.cnf"
    opts.write_text(f'[client]\nhost={db_config.host}\nport={db_config.port}\nuser={db_config.user}\n'
                    f'password="{TEST_PASSWORD.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"\n'
                    'protocol=TCP\n')
    dump = subprocess.run(["mariadb-dump", f"--defaults-extra-file={opts}", "--single-transaction", "--routines",
                           "--triggers", db_config.database], capture_output=True, check=True).stdout
    tar = subprocess.run(["tar", "czf", "-", "-C", str(app), "."], capture_output=True, check=True).stdout
    client = s3_server.client()
    client.put_object(s3_bucket, "docker/dump.sql", io.BytesIO(dump), len(dump))
    client.put_object(s3_bucket, "docker/volume.tar.gz", io.BytesIO(tar), len(tar))

    query(db_config, "DROP TABLE `odd `` name; --`")
    query(db_config, "DELETE FROM conversations")
    target = tmp_path / "new-storage"
    (target / "stale").mkdir(parents=True)
    run = run_engine(_env(db_env, s3_server), "import", "--dump", f"s3://{s3_bucket}/docker/dump.sql",
                     "--tar", f"s3://{s3_bucket}/docker/volume.tar.gz", "--storage", str(target))
    assert run.returncode == 0, run.stderr
    assert table_checksums(db_config) == before
    assert tree_digest(target) == files
    assert {t: run.result["rowCounts"][t] for t in counts} == counts
    import hashlib

    shas = {a["name"]: a["sha256"] for a in run.result["artifacts"]}
    assert shas == {"dump.sql": hashlib.sha256(dump).hexdigest(), "volume.tar.gz": hashlib.sha256(tar).hexdigest()}


def test_import_refuses_an_unsafe_tar_and_changes_nothing(db_env: dict[str, str], tmp_path: Path) -> None:
    import io
    import tarfile

    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    target = tmp_path / "storage"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    run = run_engine(db_env, "import", "--tar", str(evil), "--storage", str(target))
    assert run.returncode == 1
    assert "unsafe member" in run.result["error"] and "nothing was changed" in run.result["error"]
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
