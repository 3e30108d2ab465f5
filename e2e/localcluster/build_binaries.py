#!/usr/bin/env python3
"""Build the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kubectl, helm) from their Go modules into a versioned cache outside the repository.

k8s.io/kubernetes and go.etcd.io/etcd/server/v3 cannot be `go install`ed because their go.mod
files replace sibling modules with local paths. We build each from a small wrapper module that
requires the real module and replaces every such local-path module with the published module of
the matching version. The list is read from the downloaded go.mod, never hard-coded.

Already built versions are skipped, so a warm run costs a few stat() calls.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

try:
    from e2e.localcluster import buildcache
except ModuleNotFoundError:  # run as a script, or imported with e2e/localcluster on sys.path
    import buildcache

K8S_VERSION = os.environ.get("COAI_K8S_VERSION", "v1.35.4")
ETCD_VERSION = os.environ.get("COAI_ETCD_VERSION", "v3.6.16")
HELM_VERSION = os.environ.get("COAI_HELM_VERSION", "v3.19.5")
CONTAINERD_VERSION = os.environ.get("COAI_CONTAINERD_VERSION", "v2.3.7")
COREDNS_VERSION = os.environ.get("COAI_COREDNS_VERSION", "v1.15.0")
CACHE_ROOT = buildcache.CACHE_ROOT

K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy")
CONTAINERD_COMMANDS = ("containerd", "ctr", "containerd-shim-runc-v2")


def bin_dir() -> Path:
    return CACHE_ROOT / "bin" / f"k8s-{K8S_VERSION}_etcd-{ETCD_VERSION}_helm-{HELM_VERSION}"


def node_bin_dir() -> Path:
    """The node's own runtime binaries, cached apart so a version bump rebuilds only them."""
    return CACHE_ROOT / "node" / f"containerd-{CONTAINERD_VERSION}_coredns-{COREDNS_VERSION}"


def local_replacements(gomod: str) -> list[str]:
    """Modules that a go.mod replaces with a local directory (the staging / sibling modules)."""
    return [module for module, target, _ in buildcache.replaces(gomod) if target.startswith(".")]


def _major_matches(module: str, version: str) -> bool:
    """A module path only accepts versions of its own major (`/v3` for v3.x, none for v0/v1)."""
    major = int(version.removeprefix("v").split(".")[0])
    suffix = re.search(r"/v(\d+)$", module)
    return int(suffix.group(1)) == major if suffix else major <= 1


def _wrapper(wd: Path, module: str, version: str, sibling_version: str) -> Path:
    gomod = Path(buildcache.module_download(module, version, wd)["GoMod"]).read_text()
    siblings = [m for m in local_replacements(gomod) if _major_matches(m, sibling_version)]
    return buildcache.wrapper_module(wd, f"{module} {version}", [f"{m} => {m} {sibling_version}" for m in siblings])


def build_kubernetes(out: Path, work: Path) -> None:
    wd = _wrapper(work / "kubernetes", "k8s.io/kubernetes", K8S_VERSION, "v0." + K8S_VERSION.removeprefix("v1."))
    major, minor = K8S_VERSION.removeprefix("v").split(".")[:2]
    stamp = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        stamp += [f"-X {pkg}.gitVersion={K8S_VERSION}", f"-X {pkg}.gitMajor={major}",
                  f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean"]
    pkgs = [f"k8s.io/kubernetes/cmd/{c}" for c in K8S_COMMANDS]
    buildcache.go(["build", "-trimpath", "-ldflags", "-s -w " + " ".join(stamp), "-o", f"{out}/", *pkgs], wd)


def build_etcd(out: Path, work: Path) -> None:
    wd = _wrapper(work / "etcd", "go.etcd.io/etcd/server/v3", ETCD_VERSION, ETCD_VERSION)
    buildcache.go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"), "go.etcd.io/etcd/server/v3"], wd)


def build_helm(out: Path, work: Path) -> None:
    wd = buildcache.wrapper_module(work / "helm", f"helm.sh/helm/v3 {HELM_VERSION}")
    buildcache.go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "helm"), "helm.sh/helm/v3/cmd/helm"], wd)


def build_containerd(out: Path, work: Path) -> None:
    module = "github.com/containerd/containerd/v2"
    wd = buildcache.wrapper_module(work / "containerd", f"{module} {CONTAINERD_VERSION}")
    ldflags = f"-s -w -X {module}/version.Version={CONTAINERD_VERSION}"
    buildcache.go(["build", "-trimpath", "-tags", "no_btrfs no_devmapper no_zfs", "-ldflags", ldflags,
                   "-o", f"{out}/", *(f"{module}/cmd/{c}" for c in CONTAINERD_COMMANDS)], wd)


def build_coredns(out: Path, work: Path) -> None:
    wd = buildcache.wrapper_module(work / "coredns", f"github.com/coredns/coredns {COREDNS_VERSION}")
    buildcache.go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "coredns"),
                   "github.com/coredns/coredns"], wd)


# target -> (the binaries it builds, its build, the cache directory they land in)
TARGETS: dict[str, tuple[tuple[str, ...], buildcache.Build, Callable[[], Path]]] = {
    "etcd": (("etcd",), build_etcd, bin_dir),
    "kubernetes": (K8S_COMMANDS, build_kubernetes, bin_dir),
    "helm": (("helm",), build_helm, bin_dir),
    "containerd": (CONTAINERD_COMMANDS, build_containerd, node_bin_dir),
    "coredns": (("coredns",), build_coredns, node_bin_dir),
}


def ensure_built(targets: list[str] | None = None) -> Path:
    """Build what is missing; the control-plane binary directory (node targets: node_bin_dir())."""
    for name in targets or list(TARGETS):
        binaries, build, where = TARGETS[name]
        buildcache.ensure(where(), binaries, build, name)
    return bin_dir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", choices=[*TARGETS, []], help="default: all")
    parser.add_argument("--print-dir", action="store_true", help="only print the binary directory")
    args = parser.parse_args()
    if args.print_dir:
        print(bin_dir())
        return 0
    print(ensure_built(args.targets or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
