"""Image archives written without an engine, and the build-context hash of the operator image."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from e2e.localcluster import buildah
from e2e.localcluster.imagetar import (
    Member,
    archive_tags,
    image_config,
    read_archive,
    read_file,
    write_archive,
    write_layer,
)

REPO = Path(__file__).resolve().parents[2]


def _two_layers(tmp_path: Path):
    host_file = tmp_path / "tool"
    host_file.write_bytes(b"#!/bin/sh\necho hi\n")
    base = write_layer(tmp_path / "base.tar", [Member("etc", mode=0o755), Member("etc/motd", b"base\n"),
                                               Member("bin", symlink="usr/bin")])
    top = write_layer(tmp_path / "top.tar", [Member("etc/motd", b"top\n"), Member("tool", host_file, mode=0o755),
                                             Member("data", mode=0o777, uid=999, gid=1000)])
    return base, top


def test_layers_are_deterministic_and_keep_modes_owners_and_links(tmp_path: Path) -> None:
    base, top = _two_layers(tmp_path)
    again = write_layer(tmp_path / "again.tar", [Member("etc/motd", b"top\n"), Member("data", mode=0o777, uid=999,
                        gid=1000), Member("tool", tmp_path / "tool", mode=0o755)])
    assert again.diff_id == top.diff_id and again.diff_id != base.diff_id
    with tarfile.open(top.path) as tar:
        members = {m.name: m for m in tar}
    assert list(members) == ["data", "etc/motd", "tool"]  # sorted
    assert (members["data"].isdir(), members["data"].mode, members["data"].uid, members["data"].gid) == \
        (True, 0o777, 999, 1000)
    assert members["tool"].mode == 0o755 and members["tool"].mtime == 0
    with tarfile.open(base.path) as tar:
        assert tar.getmember("bin").linkname == "usr/bin"


def test_archive_has_the_docker_save_layout_and_reads_back(tmp_path: Path) -> None:
    base, top = _two_layers(tmp_path)
    config = image_config([base, top], cmd=["./tool"], env={"A": "1"}, workdir="/w", user="65532:65532",
                          ports=["8000/tcp"], volumes=["/data"], labels={"x": "y"})
    other = image_config([base, top], cmd=["./tool", "--other"])
    out = write_archive(tmp_path / "img.tar", [(["demo:1"], config), (["demo:2", "example.com/demo:2"], other)],
                        [base, top])
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        names = tar.getnames()
    assert [m["RepoTags"] for m in manifest] == [["demo:1"], ["demo:2", "example.com/demo:2"]]
    assert manifest[0]["Layers"] == manifest[1]["Layers"] == [f"{layer.diff_id[7:]}/layer.tar" for layer in (base, top)]
    assert names.count(manifest[0]["Layers"][0]) == 1  # shared layers stored once
    info = read_archive(out, "demo:1")
    assert info.config["rootfs"]["diff_ids"] == [base.diff_id, top.diff_id]
    cfg = info.config["config"]
    assert (cfg["Cmd"], cfg["WorkingDir"], cfg["User"], cfg["ExposedPorts"], cfg["Volumes"], cfg["Labels"]) == \
        (["./tool"], "/w", "65532:65532", {"8000/tcp": {}}, {"/data": {}}, {"x": "y"})
    assert info.env["A"] == "1" and "/usr/local/bin" in info.env["PATH"]
    assert read_archive(out, "demo:2").config["config"]["Cmd"] == ["./tool", "--other"]
    assert archive_tags(out) == ["demo:1", "demo:2", "example.com/demo:2"]
    assert read_file(out, "/etc/motd") == b"top\n"  # the upper layer wins
    assert read_file(out, "/tool").startswith(b"#!/bin/sh")
    assert read_file(out, "/nope") is None
    assert not list(tmp_path.glob("*.tmp"))


def test_copy_sources_reads_the_dockerfile_copies_but_not_stage_copies() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert buildah.copy_sources(text) == ["pyproject.toml", "README.md", "operator"]
    assert buildah.copy_sources("FROM a\nCOPY --chown=1:1 a b \\\n  dest/\nCOPY --from=build /x /y\nADD z /z\n") == \
        ["a", "b", "z"]


def test_context_digest_follows_the_copied_files_and_skips_what_dockerignore_excludes(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\nCOPY app.txt ./\nCOPY pkg ./pkg\n")
    (tmp_path / ".dockerignore").write_text("*\n!app.txt\n!pkg/\npkg/**/__pycache__\npkg/*.egg-info\n")
    (tmp_path / "app.txt").write_text("v1")
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "mod.py").write_text("x = 1")
    first = buildah.context_digest(tmp_path, tmp_path / "Dockerfile")
    (tmp_path / "pkg" / "__pycache__" / "mod.pyc").write_bytes(b"cache")
    (tmp_path / "pkg" / "sub" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "__pycache__" / "m.pyc").write_bytes(b"cache")
    (tmp_path / "pkg" / "x.egg-info").mkdir()
    (tmp_path / "pkg" / "x.egg-info" / "PKG-INFO").write_text("meta")
    (tmp_path / "unrelated.txt").write_text("not copied")
    assert buildah.context_digest(tmp_path, tmp_path / "Dockerfile") == first
    (tmp_path / "pkg" / "mod.py").write_text("x = 2")
    assert buildah.context_digest(tmp_path, tmp_path / "Dockerfile") != first
    (tmp_path / "pkg" / "mod.py").write_text("x = 1")
    (tmp_path / "pkg" / "mod.py").chmod(0o755)
    assert buildah.context_digest(tmp_path, tmp_path / "Dockerfile") != first


def test_stage_names_find_the_stages_a_named_build_context_replaces() -> None:
    text = "FROM scratch AS tiktoken\nFROM python:3 as build\nRUN x\nFROM python:3\nCOPY --from=tiktoken / /t/\n"
    assert buildah.stage_names(text) == ["tiktoken", "build"]
    assert "build" in buildah.stage_names((REPO / "Dockerfile").read_text())
