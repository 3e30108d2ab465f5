"""migrate-storage's pure helpers: which paths are safe, which extension a copy keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from coai_operator.engine.storage import HASHED_PATH, copy_into_layout, extension, resolve_inside


@pytest.mark.parametrize(("rel", "ok"), [
    ("a.txt", True),
    ("dir with space/b.PDF", True),
    ("; DROP TABLE files; --.txt", True),
    ("./a.txt", True),
    ("../outside.txt", False),
    ("dir/../../outside.txt", False),
    ("/etc/passwd", False),
    ("", False),
    (None, False),
    ("nul\x00byte", False),
    (".", False),
])
def test_resolve_inside(tmp_path: Path, rel: str | None, ok: bool) -> None:
    (tmp_path / "dir with space").mkdir()
    assert (resolve_inside(tmp_path, rel) is not None) is ok


def test_symlink_out_of_the_root_is_not_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_text("x")
    (root / "link").symlink_to(tmp_path / "secret")
    assert resolve_inside(root, "link") is None


@pytest.mark.parametrize(("rel", "ext"), [
    ("a.TXT", ".txt"), ("archive.tar.gz", ".gz"), ("README", ""), (".hidden", ""),
    ("weird.ext with space", ""), ("x.0123456789abcdefg", ""), ("dir.d/file", ""), ("ü.png", ".png"),
])
def test_extension(rel: str, ext: str) -> None:
    assert extension(rel) == ext


def test_copy_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    for d in ("uploads", "temp"):
        (tmp_path / d).mkdir()
    (tmp_path / "a.txt").write_bytes(b"same")
    (tmp_path / "b.txt").write_bytes(b"same")
    digest, rel, copied = copy_into_layout(tmp_path, tmp_path / "a.txt", ".txt")
    assert copied and HASHED_PATH.match(rel) and rel == f"uploads/{digest}.txt"
    assert copy_into_layout(tmp_path, tmp_path / "b.txt", ".txt") == (digest, rel, False)
    assert (tmp_path / rel).read_bytes() == b"same"
    assert list((tmp_path / "temp").iterdir()) == []


def test_a_batch_gets_no_final_name_before_its_durability_pass(tmp_path: Path) -> None:
    from coai_operator.engine.storage import Staged

    for d in ("uploads", "temp"):
        (tmp_path / d).mkdir()
    for name, data in (("a", b"one"), ("b", b"two"), ("c", b"one")):
        (tmp_path / name).write_bytes(data)
    staged = Staged(tmp_path)
    results = [staged.copy(tmp_path / n, "") for n in ("a", "b", "c")]
    assert [copied for _, _, copied in results] == [True, True, False]  # c has a's content: one copy
    assert list((tmp_path / "uploads").iterdir()) == []  # a crash now leaves only temp files
    assert len(list((tmp_path / "temp").iterdir())) == 2
    staged.commit_files()
    assert sorted(p.read_bytes() for p in (tmp_path / "uploads").iterdir()) == [b"one", b"two"]
    assert list((tmp_path / "temp").iterdir()) == []

    (tmp_path / "d").write_bytes(b"three")
    staged.copy(tmp_path / "d", "")
    staged.discard()
    assert list((tmp_path / "temp").iterdir()) == [] and len(list((tmp_path / "uploads").iterdir())) == 2
