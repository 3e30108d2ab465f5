"""migrate-storage's pure helpers: which paths are safe, which extension a copy keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from coai_operator.engine.storage import HASHED_PATH, extension
from coai_operator.engine.storage_files import Sources, copy_into_layout, resolve_inside


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
    assert (Sources(tmp_path).locate(rel) is not None) is ok


def test_sources_agree_with_resolve_inside_through_symlinks(tmp_path: Path) -> None:
    """The per-directory cache must decide exactly as a full resolution of each path does."""
    root = tmp_path / "root"
    (root / "uploads" / "7").mkdir(parents=True)
    (root / "uploads" / "7" / "a.png").write_bytes(b"a")
    (root / "uploads" / "7" / "sub").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "s.txt").write_text("secret")
    (root / "in-link").symlink_to(root / "uploads" / "7")  # a directory link that stays inside
    (root / "out-link").symlink_to(tmp_path / "outside")  # one that leaves the root
    (root / "uploads" / "7" / "f-in").symlink_to(root / "uploads" / "7" / "a.png")
    (root / "uploads" / "7" / "f-out").symlink_to(tmp_path / "outside" / "s.txt")
    sources = Sources(root)
    for rel in ("uploads/7/a.png", "in-link/a.png", "out-link/s.txt", "uploads/7/f-in", "uploads/7/f-out",
                "uploads/7/missing.png", "uploads/7/sub", "uploads/8/x.png", "uploads/7/../../../outside/s.txt",
                "uploads/7/a.png/..", "in-link/../7/a.png", "in-link/../uploads/7/a.png", "./uploads/7/a.png",
                "uploads/7/", "uploads/7/."):
        real = resolve_inside(root, rel)
        expected = None if real is None else (str(real), real.is_file())
        assert sources.locate(rel) == expected, rel
        assert sources.locate(rel) == expected, f"{rel} (cached)"


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
    from coai_operator.engine.storage_files import Staged

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
