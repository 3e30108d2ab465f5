#!/usr/bin/env python3
"""Build the real CoAI server (`chat`) of one release into a cache outside the repository.

Source: the release archives in ${COAI_SOURCE_DIR:-<repo>/../shared/coai-src}, each verified
against SOURCES below, or, for people with network, a git clone: COAI_SOURCE_GIT is a URL or a
local repository of github.com/coaidev/coai; the listed commit is checked out and verified.

Output: ~/.cache/coai-operator/coai/<version>/<source key>/ holding what the upstream image puts at
its root: `chat`, `config.example.yaml`, `utils/templates/`, `addition/article/template.docx`.
The source key is the archive's sha256 (or the commit), so a changed source never reuses a binary.

tiktoken_dir() lays out the tiktoken BPE files (Go module github.com/pkoukk/tiktoken-go-loader)
under the names tiktoken-go looks for in TIKTOKEN_CACHE_DIR, so the app can chat offline.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

try:
    from e2e.localcluster import buildcache
except ModuleNotFoundError:  # run as a script, or imported with e2e/localcluster on sys.path
    import buildcache

REPO = Path(__file__).resolve().parents[2]
CACHE_ROOT = buildcache.CACHE_ROOT


@dataclass(frozen=True)
class Source:
    upstream_tag: str
    commit: str
    sha256: str  # of coai-<version>.tar.gz


# image tag (programzmh/chatnio:<version>) -> upstream source; from ../shared/coai-src/README.md
SOURCES: dict[str, Source] = {
    "3.10.5": Source("v3.10", "f5b31d3283c902aa843f49f5120e788091ef0b36",
                     "34d759e80b4ba43ea417660505e9e19289a3e6026b322f4a2f5fe10ce397a94e"),
    "3.11.1": Source("v3.11.1", "6b603c780064e04e07fe813153548046fa5a9638",
                     "2e5574118fa5ad5e4ebe69cf391387b355ce7399f1f1356b66935acd853159d1"),
    "4.24.2": Source("v4.0.0", "e7df3f687b0a466eb396cd4f04686a3246b898c2",
                     "8f72df05bfbfbd5bf6647bd1d4cb529b44d515a7576e4231bd6b992f4351a19f"),
    "4.25.0": Source("main (2026-03-12)", "3048a493eedcfe75de4d59afd5139847ad3195ed",
                     "49ebfb7e5c57b2e069a4f1c5bf9007a1999a8f76f805472f1076118749eb302e"),
}

# Files of the source root the upstream image copies next to the binary.
RUNTIME_FILES = ("config.example.yaml", "utils/templates", "addition/article/template.docx")

TIKTOKEN_MODULE = "github.com/pkoukk/tiktoken-go-loader"
TIKTOKEN_VERSION = os.environ.get("COAI_TIKTOKEN_LOADER_VERSION", "v0.0.2")
# encoding -> the file name tiktoken-go uses in TIKTOKEN_CACHE_DIR (sha1 of the download URL)
TIKTOKEN_FILES = {
    "cl100k_base": "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
    "p50k_base": "ec7223a39ce59f226a68acc30dc1af2788490e15",
    "r50k_base": "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4",
}


class SourceError(RuntimeError):
    pass


def source_dir() -> Path:
    return Path(os.environ.get("COAI_SOURCE_DIR", REPO.parent / "shared" / "coai-src"))


def _source(version: str) -> Source:
    if version not in SOURCES:
        raise SourceError(f"unknown CoAI version {version!r}; known: {', '.join(SOURCES)}")
    return SOURCES[version]


def source_key(version: str) -> str:
    """What the cache is keyed by: the git commit when building from git, else the archive sha256."""
    src = _source(version)
    return src.commit if os.environ.get("COAI_SOURCE_GIT") else src.sha256


def build_dir(version: str) -> Path:
    return CACHE_ROOT / "coai" / version / source_key(version)[:16]


def _unpack_archive(version: str, into: Path) -> Path:
    archive = source_dir() / f"coai-{version}.tar.gz"
    if not archive.is_file():
        raise SourceError(f"{archive} not found: set COAI_SOURCE_DIR to the archives' directory "
                          "or COAI_SOURCE_GIT to a clone URL of github.com/coaidev/coai")
    actual = buildcache.file_sha256(archive)
    if actual != _source(version).sha256:
        raise SourceError(f"{archive}: sha256 {actual} differs from the expected {_source(version).sha256}")
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    root = into / f"coai-{version}"
    if not (root / "go.mod").is_file():
        raise SourceError(f"{archive} does not unpack to coai-{version}/ with a go.mod")
    return root


def _checkout_git(version: str, into: Path) -> Path:
    src = _source(version)
    root = into / f"coai-{version}"
    buildcache.run(["git", "clone", "--quiet", "--no-checkout", os.environ["COAI_SOURCE_GIT"], str(root)], into)
    buildcache.run(["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", src.commit], root)
    head = buildcache.run(["git", "rev-parse", "HEAD"], root).strip()
    if head != src.commit:
        raise SourceError(f"git checkout of {version} is at {head}, expected {src.commit}")
    return root


def _build(version: str, out: Path, work: Path) -> None:
    root = _checkout_git(version, work) if os.environ.get("COAI_SOURCE_GIT") else _unpack_archive(version, work)
    buildcache.go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "chat"), "."], root, cgo=True)
    for rel in RUNTIME_FILES:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (root / rel).is_dir() else shutil.copy2)(root / rel, target)
    (out / "SOURCE").write_text(f"{version} {source_key(version)}\n")


def ensure_built(version: str) -> Path:
    """Directory with `chat` and the runtime files of `version`, built once per source."""
    return buildcache.ensure(build_dir(version), (*RUNTIME_FILES, "chat"), partial(_build, version), f"coai {version}")


def _lay_out_tiktoken(out: Path, work: Path) -> None:
    assets = Path(buildcache.module_download(TIKTOKEN_MODULE, TIKTOKEN_VERSION, work / "tiktoken")["Dir"]) / "assets"
    for encoding, name in TIKTOKEN_FILES.items():
        shutil.copyfile(assets / f"{encoding}.tiktoken", out / name)


def tiktoken_dir() -> Path:
    """Directory to point TIKTOKEN_CACHE_DIR at: the BPE files under tiktoken-go's cache names."""
    return buildcache.ensure(CACHE_ROOT / "tiktoken" / TIKTOKEN_VERSION, tuple(TIKTOKEN_FILES.values()),
                             _lay_out_tiktoken, f"tiktoken {TIKTOKEN_VERSION}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="*", help=f"default: all of {', '.join(SOURCES)}")
    parser.add_argument("--print-dir", action="store_true", help="only print the build directories")
    parser.add_argument("--tiktoken", action="store_true", help="also lay out the tiktoken files")
    parser.add_argument("--tiktoken-only", action="store_true",
                        help="only lay out the tiktoken files and print their directory (the Dockerfile's "
                             "`tiktoken` build context)")
    args = parser.parse_args()
    try:
        if args.tiktoken_only:
            print(tiktoken_dir(), flush=True)
            return 0
        for version in args.versions or list(SOURCES):
            print(build_dir(version) if args.print_dir else ensure_built(version), flush=True)
        if args.tiktoken:
            print(tiktoken_dir(), flush=True)
    except (SourceError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
