#!/usr/bin/env python3
"""Build Flux's source-controller and kustomize-controller from their Go modules, with their CRDs,
into a versioned cache outside the repository (~/.cache/coai-operator/flux/<version>/).

Both go.mod files replace their own `api` module with `./api`, so neither can be `go install`ed.
As for kubernetes (build_binaries.py), each is built from a wrapper module that requires the real
module and replaces the local-path modules with the published module of the same version. The
non-local replaces of the controller's go.mod (a go-digest fork, pinned kustomize) are copied as
they are: Go ignores the replaces of a dependency, and the controllers do not build without them.
The CRDs are the module's own config/crd/bases.

Already built versions are skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# v1.9.x is the newest line whose go.mod accepts the Go toolchain here (v1.10 wants go 1.27).
FLUX_VERSION = os.environ.get("COAI_FLUX_VERSION", "v1.9.6")
CACHE_ROOT = Path(os.environ.get("COAI_E2E_CACHE", Path.home() / ".cache" / "coai-operator"))
CONTROLLERS = ("source-controller", "kustomize-controller")
# Modules whose required version the Go module proxy does not serve (403 "This module version is
# not available", seen for github.com/fluxcd/pkg/artifact v0.18.2 and v0.18.3): the nearest version it
# serves, same minor, same API. Checked by building; drop an entry when the proxy has the version.
PINS = {"github.com/fluxcd/pkg/artifact": "v0.18.0"}
REPLACE = re.compile(r"^(\S+)(?:\s+\S+)?\s+=>\s+(\S+)(?:\s+(\S+))?$")


def flux_dir() -> Path:
    return CACHE_ROOT / "flux" / FLUX_VERSION


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOFLAGS="-mod=mod", GOWORK="off")
    return env


def _run(cmd: list[str], cwd: Path) -> str:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=cwd, env=_go_env(), check=True, stdout=subprocess.PIPE, text=True).stdout


def replaces(gomod: str) -> list[tuple[str, str, str | None]]:
    """(module, target, target version or None for a local path) for every replace of a go.mod."""
    found = []
    in_block = False
    for line in gomod.splitlines():
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


def wrapper_gomod(name: str, module: str, version: str, gomod: str) -> str:
    lines = []
    for mod, target, target_version in replaces(gomod):
        if target.startswith("."):  # ./api: the published module of the same version
            lines.append(f"\t{mod} => {mod} {version}")
        else:
            lines.append(f"\t{mod} => {target} {target_version}")
    lines += [f"\t{mod} => {mod} {pinned}" for mod, pinned in PINS.items()]
    body = "\n".join(lines)
    return f"module coai-e2e/{name}\n\ngo 1.24\n\nrequire {module} {version}\n\nreplace (\n{body}\n)\n"


def build_controller(name: str, out: Path, work: Path) -> None:
    module = f"github.com/fluxcd/{name}"
    wd = work / name
    wd.mkdir(parents=True)
    (wd / "go.mod").write_text(f"module coai-e2e/{name}\n\ngo 1.24\n")
    info = json.loads(_run(["go", "mod", "download", "-json", f"{module}@{FLUX_VERSION}"], wd))
    (wd / "go.mod").write_text(wrapper_gomod(name, module, FLUX_VERSION, Path(info["GoMod"]).read_text()))
    _run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / name), module], wd)
    crds = out / "crds"
    crds.mkdir(exist_ok=True)
    for crd in sorted((Path(info["Dir"]) / "config" / "crd" / "bases").glob("*.yaml")):
        shutil.copyfile(crd, crds / crd.name)


def ensure_built(controllers: list[str] | None = None) -> Path:
    out = flux_dir()
    out.mkdir(parents=True, exist_ok=True)
    for name in controllers or list(CONTROLLERS):
        if (out / name).is_file():
            continue
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"coai-build-{name}-") as tmp:
            staging = Path(tmp) / "out"
            staging.mkdir()
            build_controller(name, staging, Path(tmp))
            (out / "crds").mkdir(exist_ok=True)
            for crd in (staging / "crds").glob("*.yaml"):
                shutil.move(str(crd), out / "crds" / crd.name)
            shutil.move(str(staging / name), out / name)  # last: its presence means "built"
        print(f"built {name} {FLUX_VERSION} in {time.monotonic() - started:.0f}s", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("controllers", nargs="*", choices=[*CONTROLLERS, []], help="default: both")
    parser.add_argument("--print-dir", action="store_true", help="only print the binary directory")
    args = parser.parse_args()
    if args.print_dir:
        print(flux_dir())
        return 0
    print(ensure_built(args.controllers or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
