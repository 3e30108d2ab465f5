"""The backup manifest: round trip, validation of what restore would trust, atomic write."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from coai_operator.domain.errors import EngineError
from coai_operator.engine.manifest import (
    Artifact,
    Manifest,
    ManifestError,
    parse_include,
    read_manifest,
    verify_checksums,
    write_manifest,
)

SHA = "a" * 64


def _manifest() -> Manifest:
    return Manifest(
        created_at="2026-01-01T00:00:00Z", completed_at="2026-01-01T00:00:05Z", label="pre-2.0",
        include=["database", "storage"], database={"name": "chatnio", "schemaVersion": "1.9.0"},
        storage={"fileCount": 1, "dirCount": 0, "symlinkCount": 0, "bytes": 3, "skipped": 0},
        artifacts=[Artifact("database.sql.gz", "database", "gzip", 10, SHA),
                   Artifact("storage.tar.gz", "storage", "gzip", 20, SHA)],
        row_counts={"users": 3, "conversations": 7},
    )


def test_round_trip_and_status_shape(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, _manifest())
    data = json.loads(path.read_text())
    assert data["formatVersion"] == 1
    assert data["rowCounts"] == {"users": 3, "conversations": 7}
    assert data["artifacts"][0] == {"name": "database.sql.gz", "kind": "database", "compression": "gzip",
                                    "bytes": 10, "sha256": SHA}
    back = read_manifest(tmp_path)
    assert back == _manifest()
    assert read_manifest(path) == back  # the file itself works too
    assert back.artifact("storage").summary() == {"name": "storage.tar.gz", "bytes": 20, "sha256": SHA}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs", "sub/dir.gz", ".hidden", ""])
def test_artifact_names_must_be_plain_file_names(tmp_path: Path, name: str) -> None:
    data = _manifest().to_dict()
    data["artifacts"][0]["name"] = name
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="invalid artifact"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(formatVersion=2), "unsupported manifest formatVersion 2"),
    (lambda d: d["artifacts"][0].update(sha256="zz"), "invalid sha256"),
    (lambda d: d["artifacts"][0].pop("bytes"), "malformed"),
    (lambda d: d.update(rowCounts={"users": "many"}), "malformed"),
])
def test_malformed_manifests_are_refused(tmp_path: Path, mutate, message: str) -> None:
    data = _manifest().to_dict()
    mutate(data)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path)


def test_missing_and_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifest\.json is missing"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(tmp_path)


def test_verify_checksums_names_the_bad_artifact(tmp_path: Path) -> None:
    (tmp_path / "database.sql.gz").write_bytes(b"0123456789")
    manifest = Manifest(created_at="x", include=["database"], artifacts=[
        Artifact("database.sql.gz", "database", "gzip", 10, hashlib.sha256(b"0123456789").hexdigest())])
    verify_checksums(tmp_path, manifest)
    (tmp_path / "database.sql.gz").write_bytes(b"0123456788")
    with pytest.raises(ManifestError, match=r"database.sql.gz does not match its sha256"):
        verify_checksums(tmp_path, manifest)
    (tmp_path / "database.sql.gz").unlink()
    with pytest.raises(ManifestError, match="missing"):
        verify_checksums(tmp_path, manifest)


def test_parse_include() -> None:
    assert parse_include(None) is None
    assert parse_include("storage, database") == ["database", "storage"]
    assert parse_include("database") == ["database"]
    assert parse_include("config,database") == ["database", "config"]  # /config/config.yaml
    with pytest.raises(EngineError, match="--include"):
        parse_include("database,logs")
    with pytest.raises(EngineError):
        parse_include(" , ")
