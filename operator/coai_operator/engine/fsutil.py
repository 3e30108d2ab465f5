"""Small file helpers: atomic writes, hashing while streaming, fsync of files and directories.

A backup is only trusted once its manifest exists, so every artifact is written to a temporary
name in the same directory and renamed into place when complete (rename is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 1 << 20


def widen_pipe(stream: BinaryIO) -> None:
    """Give a pipe to or from a client tool room for a whole CHUNK (Linux: 64 KiB by default).

    With the default, mariadb-dump stops as soon as we start compressing a chunk and waits until
    we read again, so dumping and compressing take turns instead of overlapping: at 1M users that
    was 13 s of a 33 s dump spent waiting on the pipe. 1 MiB is the most an unprivileged process
    may ask for (/proc/sys/fs/pipe-max-size); anywhere the call is refused the default stays."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)


def start_writeback(fd: int) -> None:
    """Start writing a file's dirty pages to disk now, without waiting (Linux sync_file_range(2)
    with SYNC_FILE_RANGE_WRITE; a no-op elsewhere). The fsync that makes the file durable later
    then finds its pages written or in flight, so a batch of files costs about one journal commit
    instead of one each, and, unlike syncfs(2), nobody else's dirty data is waited for."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def fsync_path(path: Path) -> None:
    """Make a file's content, or a rename inside a directory, durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2
try:
    _SYNC_FILE_RANGE: Any = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).sync_file_range
    _SYNC_FILE_RANGE.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
except (OSError, AttributeError):
    _SYNC_FILE_RANGE = None


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Write `path` through a temporary sibling; renamed into place only if the block succeeds."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o640)
        tmp.replace(path)
        fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as out:
        out.write(data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashingWriter:
    """Pass-through writer that counts and hashes every byte written."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._digest = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._digest.update(data)
        self.bytes += len(data)
        self._out.write(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


class HashingReader:
    """Pass-through reader that hashes every byte read; `drain()` hashes the rest of the file."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._digest = hashlib.sha256()
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self._src.read(size)
        self._digest.update(data)
        self.bytes += len(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()
