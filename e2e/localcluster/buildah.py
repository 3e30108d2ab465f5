"""Build an image from a Dockerfile without a daemon: buildah, chroot isolation, private storage.

The storage root is private to the image cache (never the host's /var/lib/containers), the base
image comes from a local archive under the Dockerfile's FROM name and `--pull=never` keeps buildah
off every registry. The storage driver is the kernel's overlay (COAI_BUILDAH_DRIVER=vfs where
overlay cannot mount: vfs copies the whole root filesystem per step, ~10x slower here and GBs of
disk). The storage is emptied after each build. Only Debian's buildah is needed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REGISTRIES_CONF = 'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n'


def _instructions(dockerfile: str) -> Iterator[tuple[str, list[str]]]:
    """(INSTRUCTION, words) of each instruction, continuation lines joined, comments dropped."""
    lines = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    for line in text.splitlines():
        words = shlex.split(line, posix=True) if line.strip() else []
        if words:
            yield words[0].upper(), words[1:]


def copy_sources(dockerfile: str) -> list[str]:
    """The build-context paths the Dockerfile COPYs or ADDs (not those copied from another stage)."""
    sources: list[str] = []
    for instruction, words in _instructions(dockerfile):
        if instruction in ("COPY", "ADD") and not any(w.startswith("--from") for w in words):
            sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def excluded(dockerignore: str) -> Callable[[str], bool]:
    """A predicate over context-relative paths: excluded by a plain (not `!`) .dockerignore pattern
    other than the leading `*`. Enough for this repository's file; the hash below skips what the
    build does not see, so a test run's __pycache__ does not rebuild the image."""
    patterns = [line.strip().rstrip("/") for line in dockerignore.splitlines()
                if line.strip() and not line.lstrip().startswith(("#", "!")) and line.strip() != "*"]
    variants = [v for p in patterns for v in {p, p.replace("**/", "")}]

    def is_excluded(rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatchcase(prefix, v) for prefix in prefixes for v in variants)

    return is_excluded


def stage_names(dockerfile: str) -> list[str]:
    """The `AS name` of every FROM (named contexts replace the stage of the same name)."""
    return [words[-1] for instruction, words in _instructions(dockerfile)
            if instruction == "FROM" and len(words) >= 3 and words[-2].upper() == "AS"]


def context_digest(context: Path, dockerfile: Path) -> str:
    """sha256 over the Dockerfile, the .dockerignore and every file the Dockerfile copies."""
    ignore_file = context / ".dockerignore"
    ignore = ignore_file.read_text() if ignore_file.exists() else ""
    is_excluded = excluded(ignore)
    digest = hashlib.sha256()
    text = dockerfile.read_text()
    for name, data in (("Dockerfile", text.encode()), (".dockerignore", ignore.encode())):
        digest.update(f"{name}\0{len(data)}\0".encode() + data)
    for source in sorted(set(copy_sources(text))):
        root = context / source
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            rel = path.relative_to(context)
            if is_excluded(rel.as_posix()):
                continue
            data = path.read_bytes()
            digest.update(f"{rel}\0{path.stat().st_mode & 0o111}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


class Buildah:
    def __init__(self, storage: Path) -> None:
        self.driver = os.environ.get("COAI_BUILDAH_DRIVER", "overlay")
        storage = storage / self.driver  # one root per driver: they cannot share one
        self.storage = storage
        storage.mkdir(parents=True, exist_ok=True)
        (storage / "registries.conf").write_text(REGISTRIES_CONF)
        self.env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(storage / "registries.conf"),
                    "BUILDAH_ISOLATION": "chroot", "TMPDIR": str(storage / "tmp")}
        (storage / "tmp").mkdir(exist_ok=True)

    def run(self, *args: str, cwd: Path | None = None) -> str:
        cmd = ["nice", "-n", "10", "buildah", "--root", str(self.storage / "root"),
               "--runroot", str(self.storage / "run"), "--storage-driver", self.driver, *args]
        done = subprocess.run(cmd, cwd=cwd, env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            out = (done.stdout[-6000:] + "\n" + done.stderr[-4000:]).strip()
            raise RuntimeError(f"{shlex.join(cmd[3:])} failed ({done.returncode}):\n{out}")
        return done.stdout

    def clean(self) -> None:
        self.run("rm", "--all")
        self.run("rmi", "--all", "--force")

    def build(self, context: Path, dockerfile: Path, tag: str, bases: dict[str, Path], out: Path,
              named_contexts: dict[str, Path] | None = None) -> Path:
        """Build `dockerfile` in `context` as `tag` and write it to `out` as a docker archive.

        `bases`: FROM name -> archive holding it; `named_contexts`: stage name -> directory
        (`--build-context`, as `docker buildx build --build-context NAME=DIR`).
        """
        started = time.monotonic()
        self.clean()  # whatever an interrupted build left
        for name, archive in bases.items():
            image_id = self.run("pull", "--quiet", f"docker-archive:{archive}").strip()
            self.run("tag", image_id.splitlines()[-1], name)
        extra = [f"--build-context={n}={d}" for n, d in sorted((named_contexts or {}).items())]
        self.run("bud", "--isolation", "chroot", "--pull=never", "--network", "host", *extra,
                 "-f", str(dockerfile), "-t", tag, str(context))
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            part = Path(tmp) / out.name
            self.run("push", tag, f"docker-archive:{part}:{tag}")
            os.replace(part, out)
        self.clean()
        print(f"images: {tag} built by buildah in {time.monotonic() - started:.0f}s "
              f"({out.stat().st_size >> 20} MiB)", flush=True)
        return out
