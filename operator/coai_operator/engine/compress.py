"""Streaming compression for backup artifacts: gzip (default, in-process zlib) or zstd.

zstd is used only when asked for and the `zstd` binary is on PATH; gzip needs nothing beyond
the standard library. Data is always streamed in chunks, never held in memory whole.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from coai_operator.domain.errors import EngineError
from coai_operator.engine.fsutil import CHUNK, HashingReader, HashingWriter, sha256_file

GZIP = "gzip"
ZSTD = "zstd"
NONE = "none"  # only for imported files (a plain mysqldump or tar); backups are always compressed
SUFFIX = {GZIP: ".gz", ZSTD: ".zst"}
# Measured on a 90 MB dump (2 shared cores): gzip -1 68 MB/s → 17.6 MB, gzip -6 47 MB/s → 15.9 MB,
# zstd -3 85 MB/s → 14.9 MB; the dump tool alone makes 130 MB/s. gzip -1 keeps the upgrade window
# short for ~10% more bytes; --level changes it.
DEFAULT_LEVEL = {GZIP: 1, ZSTD: 3}


class CompressionError(EngineError):
    reason = "CorruptArtifact"


class Sink(Protocol):
    def write(self, data: bytes) -> int: ...


def zstd_binary() -> str | None:
    return shutil.which("zstd")


def resolve(requested: str) -> str:
    """`gzip`, `zstd`, or `auto` (zstd when the binary exists, else gzip)."""
    if requested == "auto":
        return ZSTD if zstd_binary() else GZIP
    if requested == ZSTD and not zstd_binary():
        raise EngineError("compression zstd requested but the zstd binary is not on PATH (use gzip)")
    if requested not in SUFFIX:
        raise EngineError(f"unknown compression {requested!r} (gzip, zstd or auto)")
    return requested


class _GzipWriter:
    def __init__(self, out: HashingWriter, level: int) -> None:
        self._out = out
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: gzip container

    def write(self, data: bytes) -> int:
        packed = self._z.compress(data)
        if packed:
            self._out.write(packed)
        return len(data)

    def close(self) -> None:
        self._out.write(self._z.flush())


class _ZstdWriter:
    """Pipe through the zstd binary; a thread copies its output into the hashing writer."""

    def __init__(self, out: HashingWriter, level: int) -> None:
        binary = zstd_binary()
        if binary is None:
            raise EngineError("zstd binary not found")
        self._out = out
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()/abort()
        self._proc = subprocess.Popen(
            [binary, "-q", "-c", f"-{level}", "-T0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        )
        self._error: BaseException | None = None
        self._pump = threading.Thread(target=self._copy, daemon=True)
        self._pump.start()

    def _copy(self) -> None:
        assert self._proc.stdout is not None
        try:
            while chunk := self._proc.stdout.read(CHUNK):
                self._out.write(chunk)
        except BaseException as exc:  # surfaced by close()
            self._error = exc

    def write(self, data: bytes) -> int:
        assert self._proc.stdin is not None
        self._proc.stdin.write(data)
        return len(data)

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        rc = self._proc.wait()
        self._pump.join()
        with self._stderr:
            if self._error is not None:
                raise self._error
            if rc != 0:
                self._stderr.seek(0)
                raise EngineError(f"zstd failed: {self._stderr.read().decode(errors='replace').strip()[:200]}")

    def abort(self) -> None:
        self._proc.kill()
        self._proc.wait()
        self._pump.join()
        self._stderr.close()


@contextlib.contextmanager
def compressed_writer(out: BinaryIO, kind: str, level: int | None = None) -> Iterator[tuple[Sink, HashingWriter]]:
    """Yield (sink for plain bytes, hashing writer of the compressed output)."""
    hashed = HashingWriter(out)
    level = DEFAULT_LEVEL[kind] if level is None else level
    if kind == GZIP:
        gz = _GzipWriter(hashed, level)
        yield gz, hashed
        gz.close()
        return
    zs = _ZstdWriter(hashed, level)
    try:
        yield zs, hashed
    except BaseException:
        zs.abort()
        raise
    zs.close()


@contextlib.contextmanager
def decompressed_reader(path: Path, kind: str) -> Iterator[BinaryIO]:
    """Yield a reader of the decoded file; raises CompressionError if it is corrupt or truncated."""
    with path.open("rb") as raw, decoded_stream(raw, kind, path.name) as decoded:
        yield decoded


@contextlib.contextmanager
def decoded_stream(src: BinaryIO, kind: str, name: str) -> Iterator[BinaryIO]:
    """Decode a compressed stream read from `src` (a file, a download, a decrypting reader)."""
    if kind == NONE:
        yield src
        return
    if kind == GZIP:
        try:
            with gzip.GzipFile(fileobj=src, mode="rb") as decoded:
                yield decoded  # type: ignore[misc]
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise CompressionError(f"{name} is corrupt: {exc}") from exc
        return
    binary = zstd_binary()
    if binary is None:
        raise EngineError(f"{name} is zstd-compressed but the zstd binary is not on PATH")
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([binary, "-d", "-q", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None and proc.stdin is not None
        feed_error: list[BaseException] = []

        def feed() -> None:
            assert proc.stdin is not None
            try:
                while chunk := src.read(CHUNK):
                    proc.stdin.write(chunk)
            except BrokenPipeError:
                pass
            except BaseException as exc:  # surfaced below (e.g. a decryption error)
                feed_error.append(exc)
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            yield proc.stdout  # type: ignore[misc]
        except BaseException:
            proc.kill()
            proc.wait()
            feeder.join()
            raise
        proc.stdout.read()
        rc = proc.wait()
        feeder.join()
        if feed_error:
            raise feed_error[0]
        if rc != 0:
            err.seek(0)
            detail = err.read().decode(errors="replace").strip().splitlines()
            raise CompressionError(f"{name} is corrupt: {detail[-1] if detail else 'zstd failed'}")


class VerifiedRead:
    """A decoded stream whose file sha256 is known once the `verified_reader` block ends."""

    def __init__(self, decoded: BinaryIO) -> None:
        self.decoded = decoded
        self.sha256 = ""
        self.decoded_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self.decoded.read(size)
        self.decoded_bytes += len(data)
        return data


@contextlib.contextmanager
def verified_reader(path: Path, kind: str) -> Iterator[VerifiedRead]:
    """Decode `path` while hashing it (one read for gzip). On exit the rest of the stream is read,
    so a truncated or altered stream raises CompressionError, and `.sha256` covers the whole file."""
    if kind == GZIP:
        try:
            with path.open("rb") as raw:
                hashed = HashingReader(raw)
                with gzip.GzipFile(fileobj=hashed, mode="rb") as decoded:  # type: ignore[arg-type]
                    view = VerifiedRead(decoded)  # type: ignore[arg-type]
                    yield view
                    while view.read(CHUNK):
                        pass
                hashed.drain()
                view.sha256 = hashed.sha256
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise CompressionError(f"{path.name} is corrupt: {exc}") from exc
        return
    digest = sha256_file(path)
    with decompressed_reader(path, kind) as decoded:
        view = VerifiedRead(decoded)
        yield view
        while view.read(CHUNK):
            pass
    view.sha256 = digest


def hash_and_decode(path: Path, kind: str) -> tuple[str, int]:
    """Read `path` once: return (sha256 of the file, decoded size); raise if the stream does not decode."""
    with verified_reader(path, kind) as view:
        pass
    return view.sha256, view.decoded_bytes
