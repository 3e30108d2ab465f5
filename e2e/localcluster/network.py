"""The node's network and its host side effects: a bridge of our own, forwarding on that bridge
only, iptables chains, and the record of what the host looked like before, so teardown can
restore it exactly (even after a run that was killed: the record survives in /run).

Pods live on BRIDGE (POD_CIDR); the host is GATEWAY on it, which is also where host services
that pods must reach listen (CoreDNS, the apiserver relay, MariaDB).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

BRIDGE = "coai-e2e0"
GATEWAY = "10.244.0.1"
BRIDGE_MAC = "02:c0:a1:e2:e0:01"  # locally administered
POD_CIDR = "10.244.0.0/24"
NETWORK_NAME = "coai-e2e"
FORWARD_CHAIN = "COAI-E2E-FORWARD"
# Chains the node's components create (kube-proxy, kubelet, CNI portmap, kube-router) and ours.
CHAIN_PREFIXES = ("KUBE-", "CNI-", "COAI-E2E")
# kube-router's firewall alone (its chains and ipsets), removed when the firewall stops mid-run.
FIREWALL_CHAIN_PREFIXES = ("KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-")
TABLES = ("filter", "nat", "mangle", "raw")
# The kubelet sets these at start (protectKernelDefaults: false); they are host-wide.
SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")
# Directories the kubelet, libcni and runc use whatever their configured roots are.
HOST_DIRS = ("/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd", "/var/lib/cni")
RECORD = Path("/run/coai-e2e-node/host-state.json")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _chains(binary: str, table: str) -> list[str]:
    done = _run(binary, "-w", "5", "-t", table, "-S", check=False)
    return [line.split()[1] for line in done.stdout.splitlines() if line.startswith("-N ")]


def all_chains() -> dict[str, list[str]]:
    return {f"{b}/{t}": _chains(b, t) for b in ("iptables", "ip6tables") for t in TABLES}


def record_host_state() -> None:
    """Remember the host as it is before the node exists (kept if an earlier run left one)."""
    if RECORD.exists():
        return
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps({
        "sysctls": {name: _sysctl_path(name).read_text().strip() for name in SYSCTLS},
        "chains": all_chains(),
        "ipsets": ipsets(),
        "dirs": [d for d in HOST_DIRS if Path(d).exists()],
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")],
    }))


def setup_bridge() -> None:
    # A fixed address: a bridge without one takes the lowest of its ports' addresses, so it
    # changed whenever a pod's veth came or went, and a pod that had resolved the gateway kept
    # sending to the old address until its ARP entry expired. Its connections to MariaDB on the
    # gateway stalled for 50-110 s (TCP backoff) whenever an earlier pod went away mid-step.
    _run("ip", "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge")
    _run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    # Forwarding for packets arriving on our bridge only (service DNAT between pods); the
    # host-wide switch stays as it is. The setting disappears with the interface.
    _sysctl_path(f"net.ipv4.conf.{BRIDGE}.forwarding").write_text("1\n")
    _run("iptables", "-w", "5", "-N", FORWARD_CHAIN)
    _run("iptables", "-w", "5", "-A", FORWARD_CHAIN, "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT")
    # Pods never leave through another interface: no route to the outside world from a test.
    _run("iptables", "-w", "5", "-A", FORWARD_CHAIN, "-i", BRIDGE, "-j", "DROP")
    _run("iptables", "-w", "5", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)


def cni_config(ipam_dir: Path) -> dict:
    return {
        "cniVersion": "1.0.0", "name": NETWORK_NAME,
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": False, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(ipam_dir),
                      "ranges": [[{"subnet": POD_CIDR, "rangeStart": "10.244.0.10", "gateway": GATEWAY}]],
                      "routes": [{"dst": "0.0.0.0/0", "gw": GATEWAY}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def ipsets() -> list[str]:
    if shutil.which("ipset") is None:
        return []
    return _run("ipset", "list", "-n", check=False).stdout.split()


def _remove_new_ipsets(before: list[str]) -> None:
    """After the chains that refer to them are gone (a set in use cannot be destroyed)."""
    for name in ipsets():
        if name not in before:
            _run("ipset", "destroy", name, check=False)


def remove_firewall(chains_before: dict[str, list[str]], ipsets_before: list[str]) -> None:
    """Undo kube-router's firewall only: the node's other chains stay."""
    _remove_new_chains(chains_before, FIREWALL_CHAIN_PREFIXES)
    _remove_new_ipsets(ipsets_before)


def _remove_new_chains(before: dict[str, list[str]], prefixes: tuple[str, ...] = CHAIN_PREFIXES) -> None:
    ours = re.compile("^(" + "|".join(re.escape(p) for p in prefixes) + ")")
    for key, chains in all_chains().items():
        binary, table = key.split("/")
        new = [c for c in chains if ours.match(c) and c not in before.get(key, [])]
        if not new:
            continue
        rules = _run(binary, "-w", "5", "-t", table, "-S", check=False).stdout.splitlines()
        for rule in rules:  # jumps into our chains from chains that stay
            parts = shlex.split(rule)  # comments are quoted
            if parts[:1] == ["-A"] and parts[1] not in new and any(n in parts for n in new):
                _run(binary, "-w", "5", "-t", table, "-D", *parts[1:], check=False)
        for chain in new:
            _run(binary, "-w", "5", "-t", table, "-F", chain, check=False)
        for chain in new:
            _run(binary, "-w", "5", "-t", table, "-X", chain, check=False)


def _remove_cgroups(before: list[str]) -> None:
    for top in Path("/sys/fs/cgroup").glob("*/kubepods"):
        if str(top) in before:
            continue
        for cg in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                cg.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def kill_pod_processes() -> None:
    """Every process in the kubelet's pod cgroups (our containers, nothing else lives there)."""
    for procs in Path("/sys/fs/cgroup/pids/kubepods").rglob("cgroup.procs"):
        for pid in procs.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def kill_processes_naming(needle: str) -> list[int]:
    """SIGKILL every process whose command line contains `needle` (e.g. a containerd socket path
    under the cluster's state dir: shims that outlived their tasks). Returns the pids killed."""
    killed = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if needle in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pid = int(cmdline.parent.name)
                if pid != os.getpid():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
    return killed


def unmount_under(*roots: str) -> None:
    """Lazily unmount every mount at or below `roots`, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == r or point.startswith(r.rstrip("/") + "/") for r in roots):
            points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        _run("umount", "-l", point, check=False)


def restore_host() -> None:
    """Undo everything: bridge, chains, sysctls, cgroups, host directories. Idempotent."""
    if not RECORD.exists():
        return
    before = json.loads(RECORD.read_text())
    unmount_under(*HOST_DIRS)
    _run("ip", "link", "del", BRIDGE, check=False)
    _remove_new_chains(before["chains"])
    _remove_new_ipsets(before.get("ipsets", []))
    for name, value in before["sysctls"].items():
        with contextlib.suppress(OSError):
            _sysctl_path(name).write_text(value + "\n")
    _remove_cgroups(before["cgroups"])
    for directory in HOST_DIRS:
        if directory not in before["dirs"]:
            shutil.rmtree(directory, ignore_errors=True)
    RECORD.unlink()
    with contextlib.suppress(OSError):
        RECORD.parent.rmdir()
