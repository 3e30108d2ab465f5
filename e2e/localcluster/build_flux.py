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
import os
import shutil
import sys
from functools import partial
from pathlib import Path

try:
    from e2e.localcluster import buildcache
except ModuleNotFoundError:  # run as a script, or imported with e2e/localcluster on sys.path
    import buildcache

# v1.9.x is the newest line whose go.mod accepts the Go toolchain here (v1.10 wants go 1.27).
FLUX_VERSION = os.environ.get("COAI_FLUX_VERSION", "v1.9.6")
CACHE_ROOT = buildcache.CACHE_ROOT
CONTROLLERS = ("source-controller", "kustomize-controller")
# Modules whose required version the Go module proxy does not serve (403 "This module version is
# not available", seen for github.com/fluxcd/pkg/artifact v0.18.2 and v0.18.3): the nearest version it
# serves, same minor, same API. Checked by building; drop an entry when the proxy has the version.
PINS = {"github.com/fluxcd/pkg/artifact": "v0.18.0"}


def flux_dir() -> Path:
    return CACHE_ROOT / "flux" / FLUX_VERSION


def wrapper_gomod(name: str, module: str, version: str, gomod: str) -> str:
    lines = []
    for mod, target, target_version in buildcache.replaces(gomod):
        if target.startswith("."):  # ./api: the published module of the same version
            lines.append(f"{mod} => {mod} {version}")
        else:
            lines.append(f"{mod} => {target} {target_version}")
    lines += [f"{mod} => {mod} {pinned}" for mod, pinned in PINS.items()]
    return buildcache.gomod(name, f"{module} {version}", lines)


def build_controller(name: str, out: Path, work: Path) -> None:
    module = f"github.com/fluxcd/{name}"
    wd = work / name
    info = buildcache.module_download(module, FLUX_VERSION, wd)
    (wd / "go.mod").write_text(wrapper_gomod(name, module, FLUX_VERSION, Path(info["GoMod"]).read_text()))
    buildcache.go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / name), module], wd)
    crds = out / "crds"
    crds.mkdir(exist_ok=True)
    for crd in sorted((Path(info["Dir"]) / "config" / "crd" / "bases").glob("*.yaml")):
        shutil.copyfile(crd, crds / crd.name)


def ensure_built(controllers: list[str] | None = None) -> Path:
    """The directory of the controllers (each built when missing) and their CRDs (crds/)."""
    for name in controllers or list(CONTROLLERS):
        buildcache.ensure(flux_dir(), (name,), partial(build_controller, name), f"{name} {FLUX_VERSION}")
    return flux_dir()


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
