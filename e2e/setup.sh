#!/usr/bin/env bash
# Install everything the operator, its tests and the local control plane need. Idempotent:
# a second run only checks. Binaries are cached outside the repo (~/.cache/coai-operator).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
command -v mariadb-dump >/dev/null 2>&1 || need_apt+=(mariadb-client)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v go >/dev/null 2>&1 || need_apt+=(golang-go)
# The real node (e2e/localcluster/node.py): runtime, CNI plugins, iptables, the apiserver relay,
# and a static C toolchain for the pause image.
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || need_apt+=(iptables)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need_apt+=(iproute2)
command -v socat >/dev/null 2>&1 || need_apt+=(socat)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need_apt+=(libc6-dev)
# Images without a registry (e2e/localcluster/images.py): Debian root filesystems, the Dockerfile.
command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
command -v buildah >/dev/null 2>&1 || need_apt+=(buildah)
# kube-router's firewall (NetworkPolicy enforcement on the real node) programs ipsets.
command -v ipset >/dev/null 2>&1 || [ -x /usr/sbin/ipset ] || need_apt+=(ipset)
# The real CoAI server's integration tests run Debian's redis-server.
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The package's own service is not used: tests and the demo start private servers.
  (service mariadb stop || true) >/dev/null 2>&1
  (service redis-server stop || true) >/dev/null 2>&1
fi

PYTHON=${PYTHON:-python3}
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

.venv/bin/python e2e/localcluster/build_binaries.py >/dev/null
# Flux's source-controller and kustomize-controller for e2e/test_gitops.py (cached by version).
nice -n 10 .venv/bin/python e2e/localcluster/build_flux.py >/dev/null
# checkov (tests/unit/test_scan.py), pinned, in its own venv under the cache.
.venv/bin/python -m tests.checkov --install
# kube-router, firewall only (e2e/localcluster/netpol.py), into the versioned cache.
.venv/bin/python e2e/localcluster/netpol.py
# versitygw: the real S3 server the backup tests start on loopback (tests/s3.py)
.venv/bin/python e2e/localcluster/build_versitygw.py >/dev/null
# The real app (chat) of every version on its line, and the tiktoken files for offline chat.
nice -n 10 .venv/bin/python e2e/localcluster/build_coai.py --tiktoken >/dev/null
echo "setup ok: $(.venv/bin/python e2e/localcluster/build_binaries.py --print-dir)"
