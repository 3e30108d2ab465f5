"""The storage archive: a streamed tar of the app's /storage tree, and its safe, exact restore.

Entries are written by us (not `tar.add`), so the archive only ever holds directories, regular
files and symlinks that stay inside the tree; names are relative (`a/b.txt`), PAX format (any
Unicode name). Restore first scans every member with tarfile's `data` filter (no absolute paths,
no `..`, no links leaving the root, no devices) before it touches anything, then empties the
root and extracts with the same filter.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from coai_operator.engine.compress import Sink, decompressed_reader, verified_reader

MAX_LISTED = 200  # skipped entries named in the manifest/status (the count is always exact)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISSOCK, "socket"), (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "char-device"),
                       (stat.S_ISBLK, "block-device")):
        if test(mode):
            return name
    return "other"

log = logging.getLogger(__name__)


@dataclass
class TreeStats:
    file_count: int = 0
    dir_count: int = 0
    symlink_count: int = 0
    bytes: int = 0
    skipped: int = 0
    skipped_entries: list[dict[str, str]] = field(default_factory=list)  # what could not be archived, and why

    def to_dict(self) -> dict[str, Any]:
        return {
            "fileCount": self.file_count, "dirCount": self.dir_count, "symlinkCount": self.symlink_count,
            "bytes": self.bytes, "skipped": self.skipped,
        }

    def same_content(self, other: dict[str, Any]) -> bool:
        mine = self.to_dict()
        return all(mine[k] == other.get(k) for k in ("fileCount", "dirCount", "symlinkCount", "bytes"))


def _link_stays_inside(rel_parent: str, target: str) -> bool:
    if os.path.isabs(target):
        return False
    joined = os.path.normpath(os.path.join(rel_parent, target))
    return joined != ".." and not joined.startswith("../")


def walk_tree(root: Path) -> list[tuple[str, os.stat_result]]:
    """Every entry under `root` (relative POSIX name, lstat), parents before children, sorted."""
    out: list[tuple[str, os.stat_result]] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as it:
            entries = sorted(it, key=lambda e: e.name, reverse=True)
        for entry in entries:
            name = f"{rel}/{entry.name}" if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            out.append((name, st))
            if stat.S_ISDIR(st.st_mode):
                stack.append(name)
    return out


def tree_stats(root: Path) -> TreeStats:
    stats = TreeStats()
    for _, st in walk_tree(root):
        if stat.S_ISREG(st.st_mode):
            stats.file_count += 1
            stats.bytes += st.st_size
        elif stat.S_ISDIR(st.st_mode):
            stats.dir_count += 1
        elif stat.S_ISLNK(st.st_mode):
            stats.symlink_count += 1
    return stats


def write_tree_tar(root: Path, sink: Sink) -> TreeStats:
    """Stream `root`'s tree as a tar into `sink`; returns what went in."""
    stats = TreeStats()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[arg-type]
                      encoding="utf-8", errors="surrogateescape") as tar:
        for name, st in walk_tree(root):
            path = root / name
            info = tarfile.TarInfo(name)
            info.mode = stat.S_IMODE(st.st_mode)
            info.mtime = int(st.st_mtime)
            info.uid, info.gid = st.st_uid, st.st_gid
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                stats.dir_count += 1
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                if not _link_stays_inside(os.path.dirname(name), target):
                    log.warning("skipping symlink %s: its target leaves the storage tree", name)
                    _skip(stats, name, "symlink-outside")
                    continue
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
                stats.symlink_count += 1
            elif stat.S_ISREG(st.st_mode):
                try:
                    src = path.open("rb")
                except FileNotFoundError:  # deleted by the running app since the listing
                    stats.skipped += 1
                    continue
                with src:
                    info.size = os.fstat(src.fileno()).st_size
                    tar.addfile(info, src)
                stats.file_count += 1
                stats.bytes += info.size
            else:
                log.warning("skipping %s: not a regular file, directory or symlink", name)
                _skip(stats, name, _kind(st.st_mode))
    return stats


def _skip(stats: TreeStats, name: str, why: str) -> None:
    stats.skipped += 1
    if len(stats.skipped_entries) < MAX_LISTED:
        stats.skipped_entries.append({"path": name, "type": why})


# Extraction filters (tarfile.data_filter, FilterError, extractall(filter=)) arrived in Python
# 3.11.4; Debian bookworm's python3 is 3.11.2. There the same checks are made here.
DATA_FILTER = getattr(tarfile, "data_filter", None)
FilterError: type[tarfile.TarError] = getattr(tarfile, "FilterError", None) or type(
    "FilterError", (tarfile.TarError,), {"__doc__": "An archive member that is not safe to extract."})


def _refused(kind: str, member: tarfile.TarInfo, *args: Any) -> tarfile.TarError:
    error = getattr(tarfile, kind, None)
    return error(member, *args) if error else FilterError(f"{kind}: {member.name!r}")


def _inside(path: str, dest: str) -> bool:
    return os.path.commonpath([path, dest]) == dest


def _data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """What the `data` filter checks, for Pythons without it (names are already relative)."""
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise _refused("SpecialFileError", member)
    target = os.path.realpath(os.path.join(dest, member.name))
    if not _inside(target, dest):
        raise _refused("OutsideDestinationError", member, target)
    if member.issym() or member.islnk():
        if os.path.isabs(member.linkname):
            raise _refused("AbsoluteLinkError", member)
        base = os.path.dirname(target) if member.issym() else dest
        link = os.path.realpath(os.path.join(base, member.linkname))
        if not _inside(link, dest):
            raise _refused("LinkOutsideDestinationError", member, link)
    return member


def safe_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's `data` filter, plus: absolute names and `..` components are refused outright
    (the `data` filter would quietly strip a leading `/`; we never write either)."""
    if member.name.startswith("/") or os.path.isabs(member.name):
        raise _refused("AbsolutePathError", member)
    if ".." in member.name.split("/"):
        raise _refused("OutsideDestinationError", member, os.path.join(dest, member.name))
    # The `data` filter also rewrites modes (adds u+rw, drops group/other write); a restore must
    # reproduce modes exactly, so keep ours, without setuid/setgid (never wanted in app storage).
    if not DATA_FILTER:
        checked = _data_filter(member, dest)
        if member.isdir() or member.isreg():
            checked.mode = member.mode & 0o1777
        return checked
    checked = DATA_FILTER(member, dest)
    if member.isdir() or member.isreg():
        return checked.replace(mode=member.mode & 0o1777, deep=False)
    return checked


def scan_tar(path: Path, kind: str, dest: Path) -> tuple[str, TreeStats]:
    """One pass over an archive: sha256 of the file, full decode, every member checked as safe
    to extract under `dest`. Raises tarfile.FilterError / CompressionError / tarfile.TarError."""
    with verified_reader(path, kind) as view:
        stats = scan_tar_stream(view, dest)  # type: ignore[arg-type]
    return view.sha256, stats


def scan_tar_stream(decoded: BinaryIO, dest: Path) -> TreeStats:
    """Check every member of a decoded tar stream as safe to extract under `dest`; count them."""
    stats = TreeStats()
    dest_real = os.path.realpath(dest)
    with tarfile.open(fileobj=decoded, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
        for member in tar:
            safe_member(member, dest_real)
            if os.path.normpath(member.name) == ".":
                continue  # `tar -C dir .` (a Docker volume export) names the root itself
            if member.isreg():
                stats.file_count += 1
                stats.bytes += member.size
            elif member.isdir():
                stats.dir_count += 1
            elif member.issym():
                stats.symlink_count += 1
    return stats


def clear_tree(root: Path) -> None:
    """Remove everything inside `root` (never following symlinks); `root` itself stays."""
    with os.scandir(root) as it:
        entries = list(it)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def extract_tar(path: Path, kind: str, root: Path) -> None:
    with decompressed_reader(path, kind) as decoded:
        extract_tar_stream(decoded, root)


def extract_tar_stream(decoded: BinaryIO, root: Path) -> None:
    with tarfile.open(fileobj=decoded, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
        if DATA_FILTER:
            tar.extractall(root, filter=safe_member)  # noqa: S202 - every member passes safe_member
        else:
            real = os.path.realpath(root)
            for member in tar:
                tar.extract(safe_member(member, real), root, set_attrs=True)
