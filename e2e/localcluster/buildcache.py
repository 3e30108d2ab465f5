"""The one cached build every builder of e2e/localcluster uses, and the Go module helpers they share.

Whatever is built (Go binaries, the CoAI server, the tiktoken files) lands in a directory under
CACHE_ROOT whose name carries the version or content hash it was built from, and is reused while
the files the builder names are there: a warm run costs a few stat() calls.

A build writes into a staging directory inside a temporary directory; only when it succeeded are
its files moved into the cache, each under a hidden temporary name in its final directory first and
then renamed. The named files go last, so their presence means the whole build landed, and an
interrupted build never leaves a half-written file at a final name. A lock beside the cache
directory makes processes that ask at the same time build it once.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CACHE_ROOT = Path(os.environ.get("COAI_E2E_CACHE", Path.home() / ".cache" / "coai-operator"))

# build(staging, work): write the outputs into the empty directory `staging`; `work` is scratch space.
Build = Callable[[Path, Path], None]

REPLACE = re.compile(r"^(\S+)(?:\s+\S+)?\s+=>\s+(\S+)(?:\s+(\S+))?$")


def log(message: str) -> None:
    """Progress goes to stderr: a builder's stdout is the path(s) it prints."""
    print(message, file=sys.stderr, flush=True)


def complete(out: Path, names: Sequence[str]) -> bool:
    return all((out / name).exists() for name in names)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure(out: Path, names: Sequence[str], build: Build, what: str) -> Path:
    """`out`, holding every path of `names` (relative to it): reused when all are there, else built."""
    if complete(out, names):
        return out
    with locked(out.parent / ".lock"):
        if complete(out, names):  # another process built it while this one waited
            return out
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="coai-build-") as tmp:
            staging = Path(tmp) / "out"
            staging.mkdir()
            build(staging, Path(tmp))
            missing = [name for name in names if not (staging / name).exists()]
            if missing:
                raise RuntimeError(f"building {what} produced no {', '.join(missing)}")
            install(staging, out, names)
        log(f"built {what} in {time.monotonic() - started:.0f}s -> {out}")
    return out


def install(staging: Path, out: Path, names: Sequence[str]) -> None:
    """Move what `staging` holds to the same places under `out`: first every file outside `names`
    (merged with what `out` has), then each of `names` (a file or a whole directory), in order."""
    named = [staging / name for name in names]
    others = [p for p in sorted(staging.rglob("*"))
              if not (p.is_dir() and not p.is_symlink()) and not any(p == n or n in p.parents for n in named)]
    for src in [*others, *named]:
        _place(src, out / src.relative_to(staging))


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    _remove(partial)
    shutil.move(src, partial)  # a copy when the cache is on another file system than the staging
    if dest.is_dir() and not dest.is_symlink():  # a directory left by an interrupted build
        shutil.rmtree(dest)
    os.replace(partial, dest)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run(cmd: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None, nice: int = 0) -> str:
    """Run `cmd` (logged; `nice` > 0 lowers its priority), fail on a non-zero exit; its stdout."""
    argv = [*(["nice", "-n", str(nice)] if nice else []), *cmd]
    log("+ " + " ".join(argv))
    return subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout


def go_env(cgo: bool = False, **extra: str) -> dict[str, str]:
    """No workspace, go.mod completed as needed, static binaries unless `cgo`."""
    return {**os.environ, "CGO_ENABLED": "1" if cgo else "0", "GOFLAGS": "-mod=mod", "GOWORK": "off", **extra}


def go(args: Sequence[str], cwd: Path, *, cgo: bool = False, nice: int = 0, **env: str) -> str:
    return run(["go", *args], cwd, go_env(cgo, **env), nice)


def gomod(name: str, require: str = "", replace: Sequence[str] = ()) -> str:
    """A wrapper module's go.mod: `require` is "module version", each `replace` "old => new version"."""
    text = f"module coai-e2e/{name}\n\ngo 1.24\n"
    if require:
        text += f"\nrequire {require}\n"
    if replace:
        text += "\nreplace (\n" + "".join(f"\t{line}\n" for line in replace) + ")\n"
    return text


def wrapper_module(wd: Path, require: str = "", replace: Sequence[str] = ()) -> Path:
    """`wd` holding the go.mod of a wrapper module named after it."""
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "go.mod").write_text(gomod(wd.name, require, replace))
    return wd


def module_download(module: str, version: str, wd: Path) -> dict[str, Any]:
    """`go mod download -json module@version` from a scratch module in `wd` (Dir, GoMod, ...)."""
    return json.loads(go(["mod", "download", "-json", f"{module}@{version}"], wrapper_module(wd)))


def replaces(gomod_text: str) -> list[tuple[str, str, str | None]]:
    """(module, target, target version or None for a local path) for every replace of a go.mod."""
    found = []
    in_block = False
    for line in gomod_text.splitlines():
        stripped = line.split("//")[0].strip()
        if stripped.startswith("replace ("):
            in_block = True
            continue
        if in_block and stripped == ")":
            in_block = False
            continue
        if in_block or stripped.startswith("replace "):
            match = REPLACE.match(stripped.removeprefix("replace ").strip())
            if match:
                found.append((match.group(1), match.group(2), match.group(3)))
    return found
