"""migrate-storage against a real MariaDB and real files: hostile names, crash + resume, undo."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from coai_operator.engine.dbconfig import DbConfig

from .engine_support import create_schema, query, run_engine, tree_digest

pytestmark = pytest.mark.integration

# (stored file_path, content); every name is hostile to shells or SQL somehow.
FILES = [
    ("my file.txt", b"spaces"),
    ("it's.pdf", b"%PDF single quote"),
    ('say "hi".md', b"double quotes"),
    ("ünïcødé 文件.PNG", b"\x89PNG unicode"),
    ("; DROP TABLE files; --.txt", b"sql injection"),
    ("100%_done.csv", b"percent,underscore"),
    ("back\\slash.txt", b"backslash"),
    ("dir with space/inner.TXT", b"nested"),
    ("copy of my file.txt", b"spaces"),  # identical content: one shared copy
    ("README", b"no extension"),
    ("archive.tar.gz", b"\x1f\x8b not really"),
]
MISSING = "gone.txt"
INVALID = ["../outside.txt", "/etc/passwd"]


@pytest.fixture
def storage(db_config: DbConfig, tmp_path: Path) -> Path:
    create_schema(db_config)
    root = tmp_path / "storage"
    root.mkdir()
    for rel, content in FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    (root / "orphan.bin").write_bytes(b"not referenced by any row")
    rows = [(1, rel, Path(rel).name) for rel, _ in FILES] + [(1, MISSING, MISSING)]
    rows += [(1, p, "bad") for p in INVALID]
    for row in rows:
        query(db_config, "INSERT INTO files (user_id, file_path, original_name) VALUES (%s, %s, %s)", row)
    return root


def _rows(cfg: DbConfig) -> dict[int, str]:
    return dict(query(cfg, "SELECT id, file_path FROM files ORDER BY id"))


def _assert_migrated(cfg: DbConfig, root: Path) -> None:
    rows = _rows(cfg)
    for file_id, (rel, content) in enumerate(FILES, start=1):
        new = rows[file_id]
        digest = hashlib.sha256(content).hexdigest()
        assert new.startswith(f"uploads/{digest}"), (rel, new)
        assert (root / new).read_bytes() == content
        assert (root / rel).read_bytes() == content  # originals are kept
    assert rows[len(FILES) + 1] == MISSING
    assert [rows[len(FILES) + 2], rows[len(FILES) + 3]] == INVALID
    assert query(cfg, "SELECT COUNT(*) FROM storage_migration_map")[0][0] == len(FILES)


def test_migrate_then_undo_with_hostile_names(db_config: DbConfig, db_env: dict[str, str], storage: Path) -> None:
    before_rows, before_tree = _rows(db_config), tree_digest(storage)

    run = run_engine(db_env, "migrate-storage", "--storage", str(storage), "--batch-size", "4")
    assert run.returncode == 0, run.stderr
    result = run.result
    assert result["migrated"] == len(FILES)
    assert result["copied"] == len(FILES) - 1
    assert result["deduplicated"] == 1
    assert result["missing"] == {"count": 1, "ids": [len(FILES) + 1]}
    assert result["invalid"]["count"] == 2
    assert result["unreferencedFiles"] == 1
    _assert_migrated(db_config, storage)
    assert {p.name for p in storage.iterdir()} >= {"uploads", "processed", "cache", "temp"}
    assert _rows(db_config)[4].endswith(".png")
    assert _rows(db_config)[10].count(".") == 0  # README: no extension
    assert _rows(db_config)[11].endswith(".gz")

    again = run_engine(db_env, "migrate-storage", "--storage", str(storage))
    assert again.returncode == 0, again.stderr
    assert again.result["migrated"] == 0
    assert again.result["alreadyMigrated"] == len(FILES)

    undo = run_engine(db_env, "migrate-storage", "--storage", str(storage), "--undo", "--batch-size", "3")
    assert undo.returncode == 0, undo.stderr
    assert undo.result["reverted"] == len(FILES)
    assert undo.result["removedCopies"] == len(FILES) - 1
    assert _rows(db_config) == before_rows
    assert list((storage / "uploads").iterdir()) == []
    after = {k: v for k, v in tree_digest(storage).items() if k.split("/")[0] not in
             ("uploads", "processed", "cache", "temp")}
    assert after == before_tree
    assert query(db_config, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
                              " AND TABLE_NAME = 'storage_migration_map'", (db_config.database,))[0][0] == 0

    # Undo is idempotent too.
    assert run_engine(db_env, "migrate-storage", "--storage", str(storage), "--undo").returncode == 0


@pytest.mark.parametrize("crash_after", [1, 3, 4, len(FILES)])
def test_crash_and_rerun_completes(db_config: DbConfig, db_env: dict[str, str], storage: Path,
                                   crash_after: int) -> None:
    crashed = run_engine({**db_env, "COAI_ENGINE_CRASH_AFTER": str(crash_after)},
                         "migrate-storage", "--storage", str(storage), "--batch-size", "2")
    assert crashed.returncode == -9, crashed.stderr
    done_before_crash = sum(1 for p in _rows(db_config).values() if p.startswith("uploads/"))
    # The crash hits right after the n-th copy, before its batch commits: only earlier batches count.
    assert done_before_crash == ((crash_after - 1) // 2) * 2

    rerun = run_engine(db_env, "migrate-storage", "--storage", str(storage), "--batch-size", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.result["alreadyMigrated"] == done_before_crash
    _assert_migrated(db_config, storage)
    assert not list((storage / "temp").iterdir())

    undo = run_engine(db_env, "migrate-storage", "--storage", str(storage), "--undo")
    assert undo.returncode == 0, undo.stderr
    assert all(not p.startswith("uploads/") for p in _rows(db_config).values())


def test_strict_refuses_missing_files_and_changes_nothing(db_config: DbConfig, db_env: dict[str, str],
                                                          storage: Path) -> None:
    before_rows, before_tree = _rows(db_config), tree_digest(storage)
    run = run_engine(db_env, "migrate-storage", "--storage", str(storage), "--strict")
    assert run.returncode == 1
    assert run.result["ok"] is False
    assert "missing" in run.result["error"]
    assert _rows(db_config) == before_rows
    assert tree_digest(storage) == before_tree


def test_rows_already_in_the_new_layout_are_left_alone(db_config: DbConfig, db_env: dict[str, str],
                                                       storage: Path) -> None:
    digest = hashlib.sha256(b"uploaded by 2.0").hexdigest()
    (storage / "uploads").mkdir()
    (storage / "uploads" / f"{digest}.txt").write_bytes(b"uploaded by 2.0")
    query(db_config, "INSERT INTO files (user_id, file_path, original_name) VALUES (1, %s, 'new.txt')",
            (f"uploads/{digest}.txt",))
    run = run_engine(db_env, "migrate-storage", "--storage", str(storage))
    assert run.returncode == 0, run.stderr
    assert run.result["alreadyInLayout"] == 1
    undo = run_engine(db_env, "migrate-storage", "--storage", str(storage), "--undo")
    assert undo.returncode == 0, undo.stderr
    assert (storage / "uploads" / f"{digest}.txt").exists()  # still referenced by its 2.0 row


def test_a_row_changed_during_its_batch_keeps_the_new_value(db_config: DbConfig, storage: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The app may write a row while its batch copies: the batch's update must not overwrite it."""
    from coai_operator.domain.errors import MigrationError
    from coai_operator.engine import storage as storage_engine
    from coai_operator.engine.dbtools import open_connection

    commit_files = storage_engine.Staged.commit_files

    def app_writes_then_commit(staged: storage_engine.Staged) -> None:
        query(db_config, "UPDATE files SET file_path = 'renamed by the app.txt' WHERE id = 2")
        commit_files(staged)

    monkeypatch.setattr(storage_engine.Staged, "commit_files", app_writes_then_commit)
    conn = open_connection(db_config, MigrationError)
    try:
        result = storage_engine.migrate_storage(conn, db_config.database, storage,
                                                storage_engine.files_id_type(conn, db_config.database), 200)
    finally:
        conn.close()
    rows = _rows(db_config)
    assert rows[2] == "renamed by the app.txt"
    assert rows[1].startswith("uploads/") and rows[3].startswith("uploads/")
    assert result["migrated"] == len(FILES) - 1
