"""Root filesystems from Debian packages (mmdebstrap), the base layers of every local image.

No image registry is reachable here, but Debian's archive is: each base is `mmdebstrap
--variant=minbase` of bookworm plus a few packages and a customize hook, written as one layer
tar and cached by the hash of that recipe (suite, packages, hook). Its apt sources are
mmdebstrap's defaults (the main, updates and security suites), so `apt-get update && apt-get
install ...` works inside the image as in Debian's own images. Set COAI_DEBIAN_MIRROR to use
another mirror (its URL, or a whole `deb ...` line).

A base with `host_cas` also trusts the host's local certificate authorities
(/usr/local/share/ca-certificates, e.g. a TLS-inspecting egress proxy's): a build step that
reaches PyPI must trust what the host trusts. They are part of the cache key.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from e2e.localcluster.imagetar import Layer

SUITE = "bookworm"
# Documentation, manuals and translations are most of a minbase's size and nothing a pod reads.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
HOST_CA_HOOK = (f'for crt in {HOST_CA_DIR}/*.crt; do if [ -f "$crt" ]; then cp "$crt" "$1{HOST_CA_DIR}/"; fi; done;'
                ' chroot "$1" update-ca-certificates >/dev/null')
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*", "path-include=/usr/share/locale/locale.alias",
)


@dataclass(frozen=True)
class Rootfs:
    """A Debian root filesystem: `hook` is a shell snippet run after install, with the root as $1."""

    name: str
    packages: tuple[str, ...]
    hook: str = ""
    host_cas: bool = False

    def key(self) -> str:
        recipe = {"suite": SUITE, "packages": sorted(self.packages), "hook": self.hook,
                  "dpkg": DPKG_OPTIONS, "mirror": os.environ.get("COAI_DEBIAN_MIRROR", "")}
        if self.host_cas:
            recipe["host_cas"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                  for p in sorted(HOST_CA_DIR.glob("*.crt"))}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def mmdebstrap_command(rootfs: Rootfs, out: Path) -> list[str]:
    cmd = ["nice", "-n", "10", "mmdebstrap", "--quiet", "--variant=minbase", "--format=tar",
           # Device nodes are the runtime's business (it mounts /dev); a layer with them needs mknod.
           "--skip=output/dev", f"--include={','.join(rootfs.packages)}"]
    cmd += [f"--dpkgopt={opt}" for opt in DPKG_OPTIONS]
    if rootfs.host_cas:
        cmd.append(f"--customize-hook={HOST_CA_HOOK}")
    if rootfs.hook:
        cmd.append(f"--customize-hook={rootfs.hook}")
    cmd += [SUITE, str(out)]
    mirror = os.environ.get("COAI_DEBIAN_MIRROR")
    if mirror:
        cmd.append(mirror)
    return cmd


def ensure_rootfs(rootfs: Rootfs, cache: Path) -> Layer:
    """The root filesystem's layer tar, built once per recipe."""
    out = cache / "rootfs" / f"{rootfs.name}-{rootfs.key()}.tar"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            part = Path(tmp) / out.name
            done = subprocess.run(mmdebstrap_command(rootfs, part), capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"mmdebstrap of {rootfs.name} failed ({done.returncode}):\n{done.stderr[-4000:]}")
            os.replace(part, out)
        for old in out.parent.glob(f"{rootfs.name}-*.tar*"):
            if not old.name.startswith(out.name):
                old.unlink(missing_ok=True)
        print(f"images: rootfs {rootfs.name} built in {time.monotonic() - started:.0f}s "
              f"({out.stat().st_size >> 20} MiB)", flush=True)
    return layer_of(out)


def layer_of(tar: Path) -> Layer:
    """A Layer for a cached tar; its digest is kept beside it so a warm run reads no layer bytes."""
    sidecar = tar.with_name(tar.name + ".sha256")
    if sidecar.exists() and sidecar.stat().st_mtime >= tar.stat().st_mtime:
        return Layer(tar, "sha256:" + sidecar.read_text().strip())
    layer = Layer.of(tar)
    sidecar.write_text(layer.diff_id.removeprefix("sha256:") + "\n")
    return layer
