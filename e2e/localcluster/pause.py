"""The sandbox ("pause") image, built locally because no registry is reachable.

`gcc -static` of build/pause/linux/pause.c from the k8s.io/kubernetes module (the same version as
the node), packaged as a one-layer OCI archive that `ctr images import` accepts. Cached by the
source's content hash, so a warm run only hashes one file.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

from e2e.localcluster import build_binaries, buildcache

# The name containerd's CRI config pins as its sandbox image (node.py writes it into the config).
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"


def _pause_source() -> Path:
    work = Path(tempfile.gettempdir()) / "coai-pause-src"
    info = buildcache.module_download("k8s.io/kubernetes", build_binaries.K8S_VERSION, work)
    return Path(info["Dir"]) / "build" / "pause" / "linux" / "pause.c"


def _blob(layout: dict[str, bytes], data: bytes, media_type: str) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    layout[f"blobs/sha256/{digest.removeprefix('sha256:')}"] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def oci_archive(binary: bytes, name: str) -> bytes:
    """A one-layer OCI image archive holding /pause as its entrypoint."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as tar:
        info = tarfile.TarInfo("pause")
        info.size, info.mode = len(binary), 0o755
        tar.addfile(info, io.BytesIO(binary))
    layer = layer_buf.getvalue()
    blobs: dict[str, bytes] = {}
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _blob(blobs, config, "application/vnd.oci.image.config.v1+json"),
        "layers": [_blob(blobs, layer, "application/vnd.oci.image.layer.v1.tar")],
    }).encode()
    descriptor = _blob(blobs, manifest, "application/vnd.oci.image.manifest.v1+json")
    descriptor["annotations"] = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}
    descriptor["platform"] = {"architecture": "amd64", "os": "linux"}
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
             "index.json": json.dumps({"schemaVersion": 2, "manifests": [descriptor]}).encode(), **blobs}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def ensure_pause_image() -> Path:
    """The archive of PAUSE_IMAGE, built when its source changed."""
    source = _pause_source()
    digest = hashlib.sha256(source.read_bytes() + PAUSE_IMAGE.encode()).hexdigest()[:16]
    archive = buildcache.CACHE_ROOT / "images" / f"pause-{digest}.tar"
    if archive.is_file():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="coai-pause-") as tmp:
        binary = Path(tmp) / "pause"
        version = f"-DVERSION=v{PAUSE_IMAGE.rsplit(':', 1)[1]}-coai"
        subprocess.run(["gcc", "-Os", "-Wall", "-Werror", "-static", version, "-o", str(binary), str(source)],
                       check=True, capture_output=True)
        partial = archive.with_suffix(".partial")
        partial.write_bytes(oci_archive(binary.read_bytes(), PAUSE_IMAGE))
        partial.rename(archive)
    return archive


if __name__ == "__main__":
    print(ensure_pause_image())
