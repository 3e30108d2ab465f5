"""make_durable: one syncfs of the batch's filesystem, an fsync of each file where there is none,
and a failure that says so instead of a batch taken for durable."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from coai_operator.engine import fsutil


def _files(tmp_path: Path, n: int) -> list[Path]:
    paths = [tmp_path / f"f{i}" for i in range(n)]
    for path in paths:
        path.write_bytes(b"x")
    return paths


def test_syncfs_once_for_the_whole_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(fsutil, "_SYNCFS", lambda fd: calls.append(os.fstat(fd).st_dev) or 0)
    paths = _files(tmp_path, 5)
    fsutil.make_durable(paths)
    assert calls == [tmp_path.stat().st_dev]


def test_without_syncfs_every_file_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(fsutil, "_SYNCFS", None)
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino))
    paths = _files(tmp_path, 3)
    fsutil.make_durable(paths)
    assert sorted(synced) == sorted(p.stat().st_ino for p in paths)


def test_a_failed_syncfs_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(_fd: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(fsutil, "_SYNCFS", failing)
    with pytest.raises(OSError, match="syncfs"):
        fsutil.make_durable(_files(tmp_path, 2))


def test_the_real_syncfs_is_found_on_linux() -> None:
    if os.uname().sysname == "Linux":
        assert fsutil._SYNCFS is not None
