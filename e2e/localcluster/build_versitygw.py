#!/usr/bin/env python3
"""Build versitygw (a real S3 gateway over a local directory, Apache-2.0) into the versioned cache.

The backup tests and benchmarks start it on loopback with its posix backend; no S3 mock is used.
`go install` works for it directly (no local-path replaces). Already built: a stat() and done.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VERSION = os.environ.get("COAI_VERSITYGW_VERSION", "v1.8.0")
MODULE = "github.com/versity/versitygw/cmd/versitygw"
CACHE_ROOT = Path(os.environ.get("COAI_E2E_CACHE", Path.home() / ".cache" / "coai-operator"))


def bin_dir() -> Path:
    return CACHE_ROOT / "bin" / f"versitygw-{VERSION}"


def binary() -> Path:
    return bin_dir() / "versitygw"


def ensure_built() -> Path:
    target = binary()
    if target.is_file() and os.access(target, os.X_OK):
        return target
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="versitygw-build-") as work:
        env = dict(os.environ, CGO_ENABLED="0", GOWORK="off", GOBIN=work)
        subprocess.run(["nice", "-n", "10", "go", "install", f"{MODULE}@{VERSION}"], env=env, check=True)
        built = Path(work) / "versitygw"
        tmp = out / ".versitygw.tmp"
        built.replace(tmp) if built.stat().st_dev == out.stat().st_dev else tmp.write_bytes(built.read_bytes())
        tmp.chmod(0o755)
        tmp.replace(target)  # atomic: a half-built binary is never at the final name
    return target


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
