"""migrate-storage's file side: which file a row's path names, and a batch's copies made durable.

Per file this is the whole cost of the step on a tree of small files, so it works on `str` paths
and `os` calls (pathlib's parsing was a fifth of the step's time) and resolves each directory once.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from coai_operator.engine.fsutil import CHUNK, fsync_path, make_durable

TMP_PREFIX = ".coai-migrate-"
SMALL_READ = 1 << 16  # below malloc's mmap threshold: a 1 MiB read buffer per small file costs an mmap
DIR_CACHE = 10_000


def _relative(rel: str) -> bool:
    return "\x00" not in rel and not os.path.isabs(rel)


def resolve_inside(root: Path, rel: str | None) -> Path | None:
    """`root/rel` if `rel` is a relative path that stays inside `root` (symlinks resolved), else None."""
    if not rel or not _relative(rel):
        return None
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, rel))
    if os.path.commonpath([real_root, real]) != real_root or real == real_root:
        return None
    return Path(real)


class Sources:
    """Resolves rows' paths inside the storage root, as `resolve_inside` does, but a directory's
    real path is looked up once (rows share directories) and only a symlinked file needs a full
    resolution."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self._dirs: dict[str, str | None] = {}

    def locate(self, rel: str | None) -> tuple[str, bool] | None:
        """None if `rel` is not a path inside the root, else (real path, is it a regular file)."""
        if not rel or not _relative(rel):
            return None
        parent, name = os.path.split(rel)  # not normpath: `link/..` is the link target's parent
        if name in ("", ".", ".."):
            return self._resolved(rel)
        real_parent = self._real_dir(parent)
        if real_parent is None:
            return None
        path = os.path.join(real_parent, name)
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return path, False
        if stat.S_ISLNK(mode):
            return self._resolved(rel)
        return path, stat.S_ISREG(mode)

    def _resolved(self, rel: str) -> tuple[str, bool] | None:
        real = resolve_inside(self.root, rel)
        return None if real is None else (str(real), real.is_file())

    def _real_dir(self, parent: str) -> str | None:
        if parent not in self._dirs:
            if len(self._dirs) >= DIR_CACHE:
                self._dirs.clear()
            real = os.path.realpath(os.path.join(self.real_root, parent))
            inside = os.path.commonpath([self.real_root, real]) == self.real_root
            self._dirs[parent] = real if inside else None
        return self._dirs[parent]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@dataclass
class Staged:
    """One batch's copies: written to temp/, made durable together, then renamed into uploads/."""

    root: Path
    files: dict[str, str] = field(default_factory=dict)  # final path -> temp file

    def copy(self, source: str | Path, ext: str) -> tuple[str, str, bool]:
        """Copy `source` to a temp file; returns (sha256, final relative path, new content?)."""
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".tmp", dir=os.path.join(self.root, "temp"))
        try:
            # O_NOFOLLOW: a file swapped for a symlink after it was located is refused, not followed.
            src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                info = os.fstat(src)
                os.fchmod(fd, stat.S_IMODE(info.st_mode))
                size = min(CHUNK, max(info.st_size + 1, SMALL_READ))
                while chunk := os.read(src, size):
                    digest.update(chunk)
                    _write_all(fd, chunk)
            finally:
                os.close(src)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        sha256 = digest.hexdigest()
        rel = f"uploads/{sha256}{ext}"
        target = os.path.join(self.root, rel)
        if target in self.files or os.path.isfile(target):
            os.unlink(tmp)
            return sha256, rel, False
        self.files[target] = tmp
        return sha256, rel, True

    def commit_files(self) -> None:
        """Durable content first, then the renames, then the directory: a final name only ever
        holds complete content, and the renames are durable before the database commit."""
        if not self.files:
            return
        make_durable(list(self.files.values()))
        for target, tmp in self.files.items():
            os.replace(tmp, target)
        fsync_path(self.root / "uploads")
        self.files.clear()

    def discard(self) -> None:
        for tmp in self.files.values():
            Path(tmp).unlink(missing_ok=True)
        self.files.clear()


def copy_into_layout(root: Path, source: Path, ext: str) -> tuple[str, str, bool]:
    """Copy `source` to uploads/<sha256><ext> atomically and durably (one file: a batch of one)."""
    staged = Staged(root)
    try:
        result = staged.copy(source, ext)
        staged.commit_files()
        return result
    except BaseException:
        staged.discard()
        raise
