"""Reading and writing one backup artifact at a store: compress → (encrypt) → hash → store.

The recorded size and sha256 are of the STORED bytes (after encryption), so a corrupt object is
found by re-reading it, with or without the key. Everything streams in 1 MiB chunks.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from coai_operator.engine import compress, crypto
from coai_operator.engine.compress import CompressionError, Sink, VerifiedRead
from coai_operator.engine.fsutil import CHUNK, HashingReader, HashingWriter
from coai_operator.engine.manifest import Artifact
from coai_operator.engine.store import Store


@dataclass
class Written:
    bytes: int = 0
    sha256: str = ""


@contextlib.contextmanager
def artifact_writer(store: Store, name: str, compression: str, level: int | None,
                    key: bytes | None) -> Iterator[tuple[Sink, Written]]:
    """Yield (sink for plain bytes, result); the artifact exists at `store` only if the block succeeds."""
    result = Written()
    with store.writer(name) as raw:
        stored = HashingWriter(raw)
        enc = crypto.EncryptingWriter(stored, key) if key else None  # type: ignore[arg-type]
        with compress.compressed_writer(enc or stored, compression, level) as (sink, _):  # type: ignore[arg-type]
            yield sink, result
        if enc is not None:
            enc.close()
        stored.flush()
        result.bytes, result.sha256 = stored.bytes, stored.sha256


@contextlib.contextmanager
def artifact_reader(store: Store, art: Artifact, key: bytes | None, encrypted: bool) -> Iterator[VerifiedRead]:
    """Yield the decoded stream; on exit the rest is read and size + sha256 must match the manifest."""
    if encrypted and key is None:
        raise crypto.DecryptionError(f"{art.name} is encrypted: the backup's key is needed (COAI_BACKUP_KEY)")
    with store.reader(art.name) as raw:
        hashed = HashingReader(raw)
        src: BinaryIO = crypto.DecryptingReader(hashed, key, art.name) if encrypted else hashed  # type: ignore[arg-type, assignment]
        with compress.decoded_stream(src, art.compression, art.name) as decoded:
            view = VerifiedRead(decoded)
            yield view
            while view.read(CHUNK):
                pass
        if isinstance(src, crypto.DecryptingReader):
            src.finish()
        hashed.drain()
    if hashed.bytes != art.bytes or hashed.sha256 != art.sha256:
        raise CompressionError(f"{art.name} does not match its size/sha256 in the manifest: corrupt")
    view.sha256 = hashed.sha256


def stored_digest(store: Store, name: str) -> tuple[str, int]:
    """sha256 and size of the stored bytes (no decoding, no key needed)."""
    digest, size = hashlib.sha256(), 0
    with store.reader(name) as raw:
        while chunk := raw.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
