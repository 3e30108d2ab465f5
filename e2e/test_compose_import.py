"""What import-compose writes is accepted by the real apiserver's CRD schema."""

from __future__ import annotations

import subprocess
import sys

import yaml
from tests.unit.test_compose_import import COMPOSE

from e2e.conftest import Cluster


def test_imported_manifests_pass_server_side_validation(cluster: Cluster, crds_installed: list[str],
                                                        namespace: str) -> None:
    out = subprocess.run([sys.executable, "-m", "coai_operator.cli", "import-compose", "-", "--name", "chat"],
                         input=yaml.safe_dump(COMPOSE), capture_output=True, text=True, check=True).stdout
    applied = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=out)
    assert "coaiinstance.coai.dev/chat created (server dry run)" in applied.stdout
