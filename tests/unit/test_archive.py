"""The storage archive: exact round trip, and restore refusing archives that would escape the root.

Every test runs twice: with tarfile's extraction filters, and without them, as on Python < 3.11.4
(Debian bookworm's 3.11.2, the operator image's Python), where the engine checks by itself."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from coai_operator.domain.errors import RestoreError
from coai_operator.engine import archive
from coai_operator.engine.archive import clear_tree, extract_tar, scan_tar, tree_stats, write_tree_tar
from coai_operator.engine.compress import GZIP, compressed_writer
from coai_operator.engine.manifest import Artifact, Manifest
from coai_operator.engine.restore import restore_backup

FILTER_API = ("data_filter", "AbsolutePathError", "OutsideDestinationError", "SpecialFileError",
              "AbsoluteLinkError", "LinkOutsideDestinationError")


@pytest.fixture(autouse=True, params=["tarfile filters", "no tarfile filters"])
def python_tarfile(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param == "no tarfile filters":
        monkeypatch.setattr(archive, "DATA_FILTER", None)
        for name in FILTER_API:
            monkeypatch.delattr(tarfile, name, raising=False)


def _digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = ("-> " + str(p.readlink())) if p.is_symlink() else "dir" if p.is_dir() else \
            hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _archive(root: Path, target: Path) -> tuple[str, dict]:
    with target.open("wb") as out, compressed_writer(out, GZIP) as (sink, hashed):
        stats = write_tree_tar(root, sink)
    return hashed.sha256, stats.to_dict()


def test_round_trip_is_exact(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a b" / "ü").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a b" / "ü" / "'q' \"x\".bin").write_bytes(bytes(range(256)) * 10)
    (src / "top.txt").write_text("top")
    (src / "rel-link").symlink_to("top.txt")
    (src / "escape-link").symlink_to("/etc/passwd")  # skipped: would leave the tree
    sha, stats = _archive(src, tmp_path / "s.tar.gz")
    assert stats == {"fileCount": 2, "dirCount": 3, "symlinkCount": 1, "bytes": 2563, "skipped": 1}

    digest, scanned = scan_tar(tmp_path / "s.tar.gz", GZIP, tmp_path / "dst")
    assert digest == sha
    assert scanned.same_content(stats)

    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "stale.txt").write_text("removed by clear_tree")
    clear_tree(dst)
    extract_tar(tmp_path / "s.tar.gz", GZIP, dst)
    expected = _digest(src)
    expected.pop("escape-link")
    assert _digest(dst) == expected
    assert tree_stats(dst).same_content(stats)


def _evil_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if member.isreg() else None)


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("member", [
    _member("../escape.txt"),
    _member("/etc/cron.d/evil"),
    _member("dir/../../escape.txt"),
    _member("abs-link", tarfile.SYMTYPE, "/etc/passwd"),
    _member("up-link", tarfile.SYMTYPE, "../../outside"),
    _member("hard", tarfile.LNKTYPE, "/etc/passwd"),
    _member("dev", tarfile.CHRTYPE),
], ids=lambda m: m.name)
def test_restore_refuses_unsafe_members_and_touches_nothing(tmp_path: Path, member: tarfile.TarInfo) -> None:
    backup = tmp_path / "bk"
    backup.mkdir()
    _evil_tar(backup / "storage.tar.gz", member, b"evil")
    data = (backup / "storage.tar.gz").read_bytes()
    manifest = Manifest(created_at="x", include=["storage"], artifacts=[
        Artifact("storage.tar.gz", "storage", GZIP, len(data), hashlib.sha256(data).hexdigest())])
    root = tmp_path / "storage"
    root.mkdir()
    (root / "keep.txt").write_text("untouched")

    with pytest.raises(RestoreError, match=r"storage.tar.gz has an unsafe member .*nothing was changed"):
        restore_backup(backup, manifest, ["storage"], None, root)
    assert _digest(root) == {"keep.txt": hashlib.sha256(b"untouched").hexdigest()}
    assert not (tmp_path / "escape.txt").exists()
