#!/usr/bin/env python3
"""NetworkPolicy enforcement for the local cluster's real node: kube-router's firewall only.

The bridge CNI enforces no NetworkPolicy. kube-router with `--run-firewall=true --run-router=false
--run-service-proxy=false` only watches Pods, Namespaces and NetworkPolicies and programs iptables
+ ipsets on the node; routing stays with the bridge and Services with kube-proxy. It needs the
`ipset` and `iptables` commands (apt: ipset, iptables) and root on the node's network namespace.

    python e2e/localcluster/netpol.py            build into the versioned cache if missing
    python e2e/localcluster/netpol.py --print    the binary's path

The node harness (`LocalNode.start_firewall()`, node.py) runs it with `firewall_args(...)`.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

try:
    from e2e.localcluster import buildcache
except ModuleNotFoundError:  # run as a script, or imported with e2e/localcluster on sys.path
    import buildcache

KUBE_ROUTER_VERSION = os.environ.get("COAI_KUBE_ROUTER_VERSION", "v2.1.0")
KUBE_ROUTER_MODULE = "github.com/cloudnativelabs/kube-router/v2"
CACHE_ROOT = buildcache.CACHE_ROOT
SERVICE_CIDR = "10.96.0.0/16"  # e2e/localcluster/cluster.py's --service-cluster-ip-range
RUNTIME_COMMANDS = ("iptables", "iptables-save", "iptables-restore", "ipset")


def bin_dir() -> Path:
    return CACHE_ROOT / "kube-router" / KUBE_ROUTER_VERSION


def binary() -> Path:
    return bin_dir() / "kube-router"


def _build(out: Path, work: Path) -> None:
    buildcache.go(["install", "-ldflags", "-s -w", f"{KUBE_ROUTER_MODULE}/cmd/kube-router@{KUBE_ROUTER_VERSION}"],
                  work, nice=10, GOBIN=str(out))


def ensure_built() -> Path:
    """`go install` kube-router (no replace directives in its go.mod) unless cached; the binary."""
    return buildcache.ensure(bin_dir(), ("kube-router",), _build, f"kube-router {KUBE_ROUTER_VERSION}") / "kube-router"


def missing_commands() -> list[str]:
    return [c for c in RUNTIME_COMMANDS if shutil.which(c) is None]


def firewall_args(kubeconfig: Path, node_name: str, service_cidr: str = SERVICE_CIDR) -> list[str]:
    return [
        str(binary()),
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={node_name}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--enable-cni=false",
        "--enable-ipv6=false",
        f"--service-cluster-ip-range={service_cidr}",
        "--health-port=0",  # no listener: loopback-only rule, and nothing polls it
        "--metrics-port=0",
        "--iptables-sync-period=30s",
        "--v=1",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print", action="store_true", help="print the binary's path")
    args = parser.parse_args()
    ensure_built()
    if args.print:
        print(binary())


if __name__ == "__main__":
    main()
