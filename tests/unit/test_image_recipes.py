"""What the local images are made of (e2e/localcluster/images.py), checked without building them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from e2e.localcluster import appimages, images

REPO = Path(__file__).resolve().parents[2]


def test_operator_image_name_is_what_helm_and_kustomize_deploy() -> None:
    deployment = yaml.safe_load((REPO / "manifests/base/deployment.yaml").read_text())
    assert images.operator_image() == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert images.operator_image().startswith("ghcr.io/coai-operator/coai-operator:")


def test_standin_covers_every_guide_version_the_e2e_scenarios_use() -> None:
    used = set()
    for path in [*(REPO / "e2e").glob("test_*.py"), REPO / "e2e/migration_support.py"]:
        used |= set(re.findall(r"\b([12]\.\d+\.\d+)\b", path.read_text()))
    assert used and used <= set(appimages.standin_versions())


def _entrypoint(tmp_path: Path, *args: str) -> str:
    script = tmp_path / "entrypoint.sh"
    script.write_bytes(images.REDIS_ENTRYPOINT)
    fake = tmp_path / "redis-server"
    fake.write_text('#!/bin/sh\necho "$0 $*"\n')
    fake.chmod(0o755)
    done = subprocess.run(["sh", str(script), *args], env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
                          capture_output=True, text=True, check=True)
    return done.stdout.strip().replace(f"{tmp_path}/", "")


def test_redis_entrypoint_switches_protected_mode_off_like_the_official_image(tmp_path: Path) -> None:
    # The managed-Redis pod's args (render.py), with and without a password.
    assert _entrypoint(tmp_path, "redis-server", "--appendonly", "yes") == \
        "redis-server --protected-mode no --appendonly yes"
    assert _entrypoint(tmp_path, "redis-server", "/etc/r.conf", "--requirepass", "x") == \
        "redis-server /etc/r.conf --protected-mode no --requirepass x"
    assert _entrypoint(tmp_path, "--port", "7000") == "redis-server --protected-mode no --port 7000"
    # A later argument still wins, and other commands run unchanged.
    assert _entrypoint(tmp_path, "redis-server", "--protected-mode", "yes").endswith("--protected-mode yes")
    assert _entrypoint(tmp_path, "echo", "hi") == "hi"
    assert _entrypoint(tmp_path, "redis-server", "--version") == "redis-server --version"  # only as argv[1]
