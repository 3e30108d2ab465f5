"""Client-side encryption of artifacts: round trip, and every kind of damage refused."""

from __future__ import annotations

import io
import os

import pytest

from coai_operator.engine import crypto


def _encrypt(data: bytes, key: bytes) -> bytes:
    out = io.BytesIO()
    enc = crypto.EncryptingWriter(out, key)
    for i in range(0, len(data), 7000):
        enc.write(data[i:i + 7000])
    enc.close()
    return out.getvalue()


def _decrypt(blob: bytes, key: bytes) -> bytes:
    reader = crypto.DecryptingReader(io.BytesIO(blob), key, "x")
    out = bytearray()
    while chunk := reader.read(50_000):
        out += chunk
    reader.finish()
    return bytes(out)


KEY = b"k" * 32


@pytest.mark.parametrize("size", [0, 1, crypto.FRAME - 1, crypto.FRAME, crypto.FRAME + 1, 3 * crypto.FRAME + 5])
def test_round_trip_any_size(size: int) -> None:
    data = os.urandom(size)
    blob = _encrypt(data, KEY)
    assert _decrypt(blob, KEY) == data
    # A short plaintext can occur in random ciphertext by chance; 16+ random bytes practically never.
    assert size < 16 or data[:32] not in blob[24:]


def test_wrong_key_refused() -> None:
    blob = _encrypt(b"secret config", KEY)
    with pytest.raises(crypto.DecryptionError, match="wrong key"):
        _decrypt(blob, b"other key material!")


def test_same_plaintext_encrypts_differently() -> None:
    assert _encrypt(b"same", KEY) != _encrypt(b"same", KEY)


def test_flipped_bit_refused() -> None:
    blob = bytearray(_encrypt(os.urandom(100_000), KEY))
    blob[len(blob) // 2] ^= 1
    with pytest.raises(crypto.DecryptionError):
        _decrypt(bytes(blob), KEY)


def test_truncation_at_a_frame_boundary_refused() -> None:
    data = os.urandom(2 * crypto.FRAME + 10)
    blob = _encrypt(data, KEY)
    first_frame_end = 24 + 4 + crypto.FRAME + crypto.TAG
    with pytest.raises(crypto.DecryptionError, match="truncated"):
        _decrypt(blob[:first_frame_end], KEY)


def test_trailing_garbage_refused() -> None:
    with pytest.raises(crypto.DecryptionError, match="after its last"):
        _decrypt(_encrypt(b"abc", KEY) + b"x", KEY)


def test_not_encrypted_named() -> None:
    with pytest.raises(crypto.DecryptionError, match="not an encrypted"):
        _decrypt(b"\x1f\x8b plain gzip" + b"\0" * 30, KEY)


def test_short_key_refused() -> None:
    with pytest.raises(crypto.EngineError, match="at least 16"):
        crypto.load_key({crypto.KEY_ENV: "short"})
    assert crypto.load_key({}) is None
    assert crypto.key_id(KEY) == crypto.key_id(KEY) != crypto.key_id(b"x" * 32)
