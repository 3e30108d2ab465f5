"""What the local images are made of (e2e/localcluster/images.py), checked without building them."""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path

import yaml
from e2e.localcluster import appimages, images
from e2e.localcluster.imagetar import Member, read_archive, read_file, write_layer

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


def test_chatnio_image_puts_the_binary_and_runtime_files_at_the_root_like_upstream(tmp_path: Path) -> None:
    app = tmp_path / "built"
    (app / "utils" / "templates").mkdir(parents=True)
    (app / "addition" / "article").mkdir(parents=True)
    (app / "chat").write_bytes(b"\x7fELF fake")
    (app / "chat").chmod(0o755)
    (app / "config.example.yaml").write_text("server:\n  port: 8094\n")
    (app / "utils" / "templates" / "code.html").write_text("<html>")
    (app / "addition" / "article" / "template.docx").write_bytes(b"PK")
    (app / "SOURCE").write_text("4.25.0 abc\n")  # the builder's note, not part of the image
    base = write_layer(tmp_path / "base.tar", [Member("etc", mode=0o755)])
    files = ("chat", "config.example.yaml", "utils/templates", "addition/article/template.docx")
    out = appimages.write_chatnio(tmp_path / "img.tar", base, app, files, "programzmh/chatnio:4.25.0", tmp_path)
    info = read_archive(out, "programzmh/chatnio:4.25.0")
    cfg = info.config["config"]
    assert (cfg["Cmd"], cfg["WorkingDir"], cfg.get("Entrypoint"), cfg.get("User")) == (["./chat"], "/", None, None)
    assert (cfg["Volumes"], cfg["ExposedPorts"]) == ({"/config": {}, "/logs": {}, "/storage": {}}, {"8094/tcp": {}})
    assert read_file(out, "/chat") == b"\x7fELF fake"
    assert read_file(out, "/utils/templates/code.html") == b"<html>"
    assert read_file(out, "/SOURCE") is None
    with tarfile.open(out) as outer, tarfile.open(fileobj=outer.extractfile(info.layers[1])) as layer:
        modes = {m.name: (m.type, m.mode) for m in layer}
    assert modes["chat"] == (tarfile.REGTYPE, 0o755)
    for d in ("config", "logs", "storage", "utils", "utils/templates", "addition", "addition/article"):
        assert modes[d] == (tarfile.DIRTYPE, 0o755)
    assert not list(tmp_path.glob("*-app.tar"))  # the layer lives only inside the archive
