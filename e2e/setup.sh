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
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The package's own service is not used: tests and the demo start private servers.
  (service mariadb stop || true) >/dev/null 2>&1
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
# versitygw: the real S3 server the backup tests start on loopback (tests/s3.py)
.venv/bin/python e2e/localcluster/build_versitygw.py >/dev/null
echo "setup ok: $(.venv/bin/python e2e/localcluster/build_binaries.py --print-dir)"
