"""The backup manifest: what a backup directory holds, written last, so its presence means "complete".

`DIR/manifest.json` (formatVersion 1)::

    {
      "formatVersion": 1,
      "createdAt": "2026-01-01T00:00:00Z",      # backup started
      "completedAt": "2026-01-01T00:00:09Z",    # artifacts verified, manifest written
      "label": "pre-2.0.0",
      "include": ["database", "storage"],
      "database": {"name": "chatnio", "schemaVersion": "1.9.0" | null, "serverVersion": "...",
                   "dumpTool": "mariadb-dump", "rowCountSource": "dump", "concurrentChanges": {}},
      "storage": {"fileCount": 12, "dirCount": 3, "bytes": 34567, "skipped": 0} | null,
      "artifacts": [{"name": "database.sql.gz", "kind": "database", "compression": "gzip",
                     "bytes": 1234, "sha256": "..."}, ...],
      "rowCounts": {"users": 3, "conversations": 10}
    }

Artifact names are plain file names inside DIR (never paths), checked on read so a hand-edited
manifest cannot point restore at another file.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coai_operator.domain.errors import EngineError
from coai_operator.engine.fsutil import atomic_write_bytes, sha256_file

if TYPE_CHECKING:
    from coai_operator.engine.store import Store

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DATABASE = "database"
STORAGE = "storage"
CONFIG = "config"  # the /config volume (config.yaml)
ENV = "env"  # with config: copies of the env ConfigMap and Secret (engine/envcopy.py)
KINDS = (DATABASE, STORAGE, CONFIG, ENV)
TREES = (STORAGE, CONFIG)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class ManifestError(EngineError):
    reason = "InvalidBackup"


@dataclass(frozen=True)
class Artifact:
    name: str
    kind: str
    compression: str
    bytes: int
    sha256: str

    def summary(self) -> dict[str, Any]:
        """The shape recorded in CoaiMigration status: {name, bytes, sha256}."""
        return {"name": self.name, "bytes": self.bytes, "sha256": self.sha256}


@dataclass
class Manifest:
    created_at: str
    completed_at: str = ""
    label: str = ""
    app_version: str = ""  # the CoAI version that wrote the data (a restore refuses a newer one)
    include: list[str] = field(default_factory=list)
    database: dict[str, Any] | None = None
    storage: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    encryption: dict[str, Any] | None = None  # {"algorithm", "keyId"} when the artifacts are encrypted
    verify: dict[str, Any] | None = None  # scratch-database restore: {"verified", "tableChecksums", ...}
    skipped_entries: list[dict[str, str]] = field(default_factory=list)  # sockets, FIFOs, devices, outside links

    def tree(self, kind: str) -> dict[str, Any] | None:
        return self.storage if kind == STORAGE else self.config

    def artifact(self, kind: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "formatVersion": self.format_version,
            "createdAt": self.created_at,
            "completedAt": self.completed_at,
            "label": self.label,
            "appVersion": self.app_version,
            "include": list(self.include),
            "database": self.database,
            "storage": self.storage,
            "config": self.config,
            "artifacts": [asdict(a) for a in self.artifacts],
            "rowCounts": dict(self.row_counts),
            "encryption": self.encryption,
            "verify": self.verify,
            "skippedEntries": list(self.skipped_entries),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError("manifest is not a JSON object")
        version = data.get("formatVersion")
        if version != FORMAT_VERSION:
            raise ManifestError(f"unsupported manifest formatVersion {version!r} (this engine reads {FORMAT_VERSION})")
        try:
            artifacts = [
                Artifact(name=str(a["name"]), kind=str(a["kind"]), compression=str(a["compression"]),
                         bytes=int(a["bytes"]), sha256=str(a["sha256"]))
                for a in data.get("artifacts", [])
            ]
            row_counts = {str(k): int(v) for k, v in (data.get("rowCounts") or {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"manifest has a malformed artifact or row count: {exc}") from exc
        for a in artifacts:
            if not _SAFE_NAME.match(a.name) or a.kind not in KINDS:
                raise ManifestError(f"manifest names an invalid artifact {a.name!r} ({a.kind})")
            if not re.fullmatch(r"[0-9a-f]{64}", a.sha256):
                raise ManifestError(f"manifest has an invalid sha256 for {a.name}")
        return cls(
            format_version=version,
            created_at=str(data.get("createdAt", "")),
            completed_at=str(data.get("completedAt", "")),
            label=str(data.get("label", "")),
            app_version=str(data.get("appVersion") or ""),
            include=[str(i) for i in data.get("include", [])],
            database=data.get("database"),
            storage=data.get("storage"),
            config=data.get("config"),
            artifacts=artifacts,
            row_counts=row_counts,
            encryption=data.get("encryption"),
            verify=data.get("verify"),
            skipped_entries=list(data.get("skippedEntries") or []),
        )


def manifest_path(location: Path) -> Path:
    """Accept either the backup directory or the manifest file itself."""
    return location if location.name == MANIFEST_NAME or location.is_file() else location / MANIFEST_NAME


def read_manifest(location: Path) -> Manifest:
    path = manifest_path(location)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ManifestError(f"no complete backup at {path.parent}: {MANIFEST_NAME} is missing") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    return Manifest.from_dict(data)


def load_manifest(store: Store) -> Manifest:
    """The manifest of the backup at `store` (a LocalStore or S3Store child)."""
    try:
        raw = store.get_bytes(MANIFEST_NAME)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{store.where}/{MANIFEST_NAME} is not text") from exc
    if raw is None:
        raise ManifestError(f"no complete backup at {store.where}: {MANIFEST_NAME} is missing")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{store.where}/{MANIFEST_NAME} is not valid JSON: {exc}") from exc
    return Manifest.from_dict(data)


def save_manifest(store: Store, manifest: Manifest) -> None:
    body = json.dumps(manifest.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    store.put_bytes(MANIFEST_NAME, body.encode("utf-8"))


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Atomically (tmp + rename + dir fsync) write DIR/manifest.json."""
    path = directory / MANIFEST_NAME
    body = json.dumps(manifest.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, body.encode("utf-8"))
    return path


def verify_checksums(directory: Path, manifest: Manifest, kinds: tuple[str, ...] | list[str] = KINDS) -> None:
    """Raise ManifestError naming the first artifact that is missing, resized or altered."""
    for art in manifest.artifacts:
        if art.kind not in kinds:
            continue
        path = directory / art.name
        if not path.is_file():
            raise ManifestError(f"backup artifact {art.name} is missing from {directory}")
        size = path.stat().st_size
        if size != art.bytes:
            raise ManifestError(f"backup artifact {art.name} is {size} bytes, manifest says {art.bytes}: corrupt")
        if sha256_file(path) != art.sha256:
            raise ManifestError(f"backup artifact {art.name} does not match its sha256 in the manifest: corrupt")


def parse_include(value: str | None) -> list[str] | None:
    """`database,storage` → ["database", "storage"]; None when not given (caller picks the default)."""
    if value is None:
        return None
    kinds = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise EngineError(f"--include takes a comma list of {', '.join(KINDS)}; got {value!r}")
    return [k for k in KINDS if k in kinds]
