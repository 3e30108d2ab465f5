"""Client-side encryption of backup artifacts: streamed AES-256-GCM, constant memory.

Library: pyca `cryptography` (the Python Cryptographic Authority's package, OpenSSL underneath,
audited, released every few weeks). We use only its AEAD and HKDF primitives, never our own cipher.

Format of an encrypted artifact (the "STREAM" construction of Hoang, Reyhanitabar, Rogaway and
Vizár, as in age and Tink)::

    b"COAIENC1" | salt (16 bytes) | frame* ;  frame = len (u32 BE) | AES-GCM(ciphertext + 16-byte tag)

The artifact key is HKDF-SHA256(key material, salt), so every artifact has its own key; frame i
uses the 12-byte nonce (i as 11 bytes BE | 1 if last frame else 0). Reordered, dropped or
truncated frames fail authentication, and a stream that ends without its last frame is refused.
`key_id` (a digest of the key material) goes into the manifest so a wrong key is named as such
before anything is restored. The sha256 in the manifest covers the stored (encrypted) bytes, so
corruption is found without the key.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from coai_operator.engine.errors import EngineError

MAGIC = b"COAIENC1"
ALGORITHM = "AES-256-GCM-STREAM/HKDF-SHA256"
FRAME = 1 << 16
SALT = 16
TAG = 16
KEY_ENV = "COAI_BACKUP_KEY"
KEY_FILE_ENV = "COAI_BACKUP_KEY_FILE"


class DecryptionError(EngineError):
    reason = "DecryptionFailed"


def load_key(env: dict[str, str] | None = None) -> bytes | None:
    """The key material from $COAI_BACKUP_KEY_FILE (a mounted Secret key) or $COAI_BACKUP_KEY."""
    env = dict(os.environ) if env is None else env
    if env.get(KEY_FILE_ENV):
        try:
            raw = Path(env[KEY_FILE_ENV]).read_bytes().strip()
        except OSError as exc:
            raise EngineError(f"cannot read the encryption key file {env[KEY_FILE_ENV]}: {exc.strerror}") from exc
    else:
        raw = env.get(KEY_ENV, "").encode()
    if not raw:
        return None
    if len(raw) < 16:
        raise EngineError("the encryption key must be at least 16 bytes (use e.g. `openssl rand -base64 32`)")
    return raw


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"coai-backup key id\0" + key).hexdigest()[:16]


def _derive(key: bytes, salt: bytes) -> AESGCM:
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"coai-backup artifact v1").derive(key)
    return AESGCM(material)


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class EncryptingWriter:
    """Write plaintext; encrypted frames go to `out`. `close()` writes the last frame (required)."""

    def __init__(self, out: BinaryIO, key: bytes) -> None:
        salt = os.urandom(SALT)
        self._aead = _derive(key, salt)
        self._out = out
        self._buf = bytearray()
        self._counter = 0
        out.write(MAGIC + salt)

    def _frame(self, data: bytes, last: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._counter, last), data, None)
        self._out.write(struct.pack(">I", len(sealed)) + sealed)
        self._counter += 1

    def write(self, data: bytes) -> int:
        self._buf += data
        while len(self._buf) > FRAME:  # keep at least one byte back: the last frame is never empty-by-accident
            self._frame(bytes(self._buf[:FRAME]), last=False)
            del self._buf[:FRAME]
        return len(data)

    def close(self) -> None:
        self._frame(bytes(self._buf), last=True)
        self._buf.clear()


class DecryptingReader:
    """Read plaintext from an encrypted stream; raises DecryptionError on a wrong key or tampering."""

    def __init__(self, src: BinaryIO, key: bytes, name: str) -> None:
        self._src, self._name = src, name
        head = _read_exact(src, len(MAGIC) + SALT)
        if head[: len(MAGIC)] != MAGIC:
            raise DecryptionError(f"{name} is not an encrypted backup artifact (or is corrupt)")
        self._aead = _derive(key, head[len(MAGIC):])
        self._counter = 0
        self._buf = b""
        self._done = False

    def _next_frame(self) -> None:
        header = _read_exact(self._src, 4)
        if len(header) < 4:
            raise DecryptionError(f"{self._name} ends before its last encrypted frame: truncated")
        (size,) = struct.unpack(">I", header)
        if size < TAG or size > FRAME + TAG:
            raise DecryptionError(f"{self._name} has a malformed encrypted frame: corrupt")
        sealed = _read_exact(self._src, size)
        for last in (False, True):
            try:
                self._buf = self._aead.decrypt(_nonce(self._counter, last), sealed, None)
            except InvalidTag:
                continue
            self._counter += 1
            self._done = last
            return
        raise DecryptionError(f"{self._name} cannot be decrypted: wrong key, or the data was altered")

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            if not self._buf:
                if self._done:
                    break
                self._next_frame()
                continue
            take = len(self._buf) if size < 0 else size - len(out)
            out += self._buf[:take]
            self._buf = self._buf[take:]
        return bytes(out)

    def readable(self) -> bool:
        return True

    def finish(self) -> None:
        """The stream must end right after the last frame."""
        while not self._done:
            self._next_frame()
        if self._src.read(1):
            raise DecryptionError(f"{self._name} has data after its last encrypted frame: corrupt")


def _read_exact(src: BinaryIO, size: int) -> bytes:
    parts, left = [], size
    while left > 0:
        chunk = src.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)
