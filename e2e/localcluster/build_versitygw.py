#!/usr/bin/env python3
"""Build versitygw (a real S3 gateway over a local directory, Apache-2.0) into the versioned cache.

The backup tests and benchmarks start it on loopback with its posix backend; no S3 mock is used.
`go install` works for it directly (no local-path replaces). Already built: a stat() and done.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

try:
    from e2e.localcluster import buildcache
except ModuleNotFoundError:  # run as a script, or imported with e2e/localcluster on sys.path
    import buildcache

VERSION = os.environ.get("COAI_VERSITYGW_VERSION", "v1.8.0")
MODULE = "github.com/versity/versitygw/cmd/versitygw"
CACHE_ROOT = buildcache.CACHE_ROOT


def bin_dir() -> Path:
    return CACHE_ROOT / "bin" / f"versitygw-{VERSION}"


def binary() -> Path:
    return bin_dir() / "versitygw"


def _build(out: Path, work: Path) -> None:
    buildcache.go(["install", f"{MODULE}@{VERSION}"], work, nice=10, GOBIN=str(out))


def ensure_built() -> Path:
    return buildcache.ensure(bin_dir(), ("versitygw",), _build, f"versitygw {VERSION}") / "versitygw"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print-path", action="store_true", help="print where the binary is (or would be)")
    args = parser.parse_args()
    if args.print_path:
        print(binary())
        return 0
    print(ensure_built())
    return 0


if __name__ == "__main__":
    sys.exit(main())
