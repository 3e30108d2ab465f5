"""Copies of the instance's env ConfigMap and Secret in a backup's config (the `env` artifact).

The Job gets both as read-only volumes under --env-dir (`configmap.<name>/`, `secret.<name>/`,
one file per key, as Kubernetes mounts them): no API access, no value on argv or in the
environment. The copy is one JSON document, compressed and encrypted like every artifact, so an
encrypted backup reveals the Secret only with its key; the manifest records key NAMES only.

A restore never writes them back: the env ConfigMap is rendered by the operator from the
instance's spec (Git owns it) and the Secret is the user's. It compares the copy with what the
instance mounts now and reports the keys that differ (names only); `engine env-export` prints
the copies as manifests for a person who holds the key (docs/backups.md).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from pathlib import Path
from typing import Any

from coai_operator.engine import compress, crypto
from coai_operator.engine.artifacts import artifact_reader, artifact_writer
from coai_operator.engine.errors import EngineError
from coai_operator.engine.manifest import ENV, Artifact, Manifest, load_manifest
from coai_operator.engine.store import Store, open_store

KINDS = {"configmap": "configMap", "secret": "secret"}


def read_env_dir(root: Path) -> dict[str, Any]:
    """{"configMap": {"name", "data"}, "secret": {"name", "data" (base64)}} from the mounted volumes."""
    out: dict[str, Any] = {}
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        kind, _, name = entry.name.partition(".")
        if kind not in KINDS or not name or not entry.is_dir():
            continue
        # Kubernetes' atomic writer: KEY -> ..data/KEY; the ..-entries are its bookkeeping.
        files = {f.name: f.read_bytes() for f in sorted(entry.iterdir()) if not f.name.startswith("..") and f.is_file()}
        data = {k: base64.b64encode(v).decode() for k, v in files.items()} if kind == "secret" else \
            {k: v.decode("utf-8", errors="surrogateescape") for k, v in files.items()}
        out[KINDS[kind]] = {"name": name, "data": data}
    return out


def summary(copies: dict[str, Any]) -> dict[str, Any]:
    """What the manifest records: object and key names, never values."""
    return {kind: {"name": c["name"], "keys": sorted(c["data"])} for kind, c in copies.items()}


def write(store: Store, root: Path, compression: str, level: int | None, key: bytes | None) -> tuple[Artifact, dict]:
    copies = read_env_dir(root)
    name = f"config-env.json{compress.SUFFIX[compression]}"
    with artifact_writer(store, name, compression, level, key) as (sink, written):
        sink.write(json.dumps(copies, sort_keys=True).encode())
    return Artifact(name, ENV, compression, written.bytes, written.sha256), summary(copies)


def read(store: Store, manifest: Manifest, key: bytes | None) -> dict[str, Any] | None:
    art = manifest.artifact(ENV)
    if art is None:
        return None
    with artifact_reader(store, art, key, manifest.encryption is not None) as view:
        raw = b""
        while chunk := view.read(1 << 20):
            raw += chunk
    value = json.loads(raw.decode())
    if not isinstance(value, dict):
        raise EngineError(f"{art.name} is not a JSON object")
    return value


def differences(saved: dict[str, Any], root: Path | None) -> dict[str, Any]:
    """Per object: the keys whose value differs now, the keys gone and the keys added (names only)."""
    live = read_env_dir(root) if root is not None else {}
    out: dict[str, Any] = {}
    for kind, copy in saved.items():
        now = (live.get(kind) or {}).get("data")
        if now is None:
            out[kind] = {"name": copy["name"], "mounted": False}
            continue
        old = copy["data"]
        out[kind] = {"name": copy["name"], "differ": sorted(k for k in old if k in now and now[k] != old[k]),
                     "missing": sorted(set(old) - set(now)), "added": sorted(set(now) - set(old))}
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True, help="the backup (directory or s3://bucket/prefix/name)")
    parser.add_argument("--namespace", default="", help="namespace to put in the manifests")
    parser.add_argument("--out", type=Path, required=True, help="file to write the List to (mode 0600)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Print the copies as a Kubernetes List (a person applies what they want back; needs the key)."""
    store = open_store(args.dir)
    saved = read(store, load_manifest(store), crypto.load_key()) or {}
    items = []
    for kind, copy in saved.items():
        meta = {"name": copy["name"], **({"namespace": args.namespace} if args.namespace else {})}
        body = {"data": copy["data"], **({"type": "Opaque"} if kind == "secret" else {})}
        items.append({"apiVersion": "v1", "kind": "Secret" if kind == "secret" else "ConfigMap",
                      "metadata": meta, **body})
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # Secret values: owner only
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, out, indent=1)
    return {"objects": [f"{i['kind']}/{i['metadata']['name']}" for i in items], "out": str(args.out)}
