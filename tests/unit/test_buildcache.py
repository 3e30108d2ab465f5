"""e2e/localcluster/buildcache.py: a cached build is reused, lands whole or not at all (no Go build here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from e2e.localcluster import build_binaries, build_coai, build_flux, build_versitygw, buildcache, netpol

# A fake build command: writes the two files a "build" produces into the staging directory ($0).
FAKE_BUILD = 'mkdir -p "$0/crds" && printf crd > "$0/crds/a.yaml" && printf tool > "$0/tool"'


class Builds:
    """A build that runs FAKE_BUILD and counts how often it ran."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, staging: Path, work: Path) -> None:
        self.count += 1
        assert work in staging.parents and not any(staging.iterdir())
        buildcache.run(["sh", "-c", FAKE_BUILD, str(staging)], work, nice=10)


def test_a_cold_build_lands_in_the_cache_and_a_warm_one_is_reused(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out, build = tmp_path / "cache" / "tool" / "v1", Builds()
    assert buildcache.ensure(out, ("tool",), build, "tool v1") == out
    assert (out / "tool").read_text() == "tool" and (out / "crds" / "a.yaml").read_text() == "crd"
    err = capsys.readouterr().err
    assert "+ nice -n 10 sh -c" in err and re.search(rf"built tool v1 in \d+s -> {re.escape(str(out))}", err)
    assert sorted(p.name for p in out.iterdir()) == ["crds", "tool"]  # no temporary name is left

    assert buildcache.ensure(out, ("tool",), build, "tool v1") == out
    assert build.count == 1
    assert capsys.readouterr().err == ""  # a warm run says nothing


def test_what_is_there_is_never_rebuilt(tmp_path: Path) -> None:
    out = tmp_path / "v1"
    out.mkdir()
    (out / "a").write_text("cached")

    def must_not_run(staging: Path, work: Path) -> None:
        raise AssertionError("built although cached")

    buildcache.ensure(out, ("a",), must_not_run, "a")
    assert (out / "a").read_text() == "cached"


def test_a_failed_build_leaves_the_cache_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "v1"
    out.mkdir()
    (out / "other").write_text("another target's binary")

    def fails(staging: Path, work: Path) -> None:
        (staging / "tool").write_text("half")
        buildcache.run(["sh", "-c", "exit 3"], work)

    with pytest.raises(subprocess.CalledProcessError, match="exit status 3"):
        buildcache.ensure(out, ("tool",), fails, "tool")
    assert sorted(p.name for p in out.iterdir()) == ["other"]


def test_a_build_that_does_not_produce_a_named_file_is_refused(tmp_path: Path) -> None:
    def forgets(staging: Path, work: Path) -> None:
        (staging / "a").write_text("a")

    with pytest.raises(RuntimeError, match="building ab produced no b"):
        buildcache.ensure(tmp_path / "v1", ("a", "b"), forgets, "ab")
    assert not (tmp_path / "v1").exists()


def test_an_install_cut_short_before_the_named_file_does_not_count_as_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, build = tmp_path / "v1", Builds()
    real_move = shutil.move

    def interrupted(src: str, dst: str) -> str:
        if Path(src).name == "tool":
            raise KeyboardInterrupt
        return real_move(src, dst)

    monkeypatch.setattr(buildcache.shutil, "move", interrupted)
    with pytest.raises(KeyboardInterrupt):
        buildcache.ensure(out, ("tool",), build, "tool")
    assert (out / "crds" / "a.yaml").exists() and not (out / "tool").exists()  # the named file goes last

    monkeypatch.setattr(buildcache.shutil, "move", real_move)
    buildcache.ensure(out, ("tool",), build, "tool")
    assert build.count == 2 and (out / "tool").read_text() == "tool"


def test_targets_sharing_a_directory_merge_and_a_leftover_directory_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "v1"
    (out / "templates").mkdir(parents=True)
    (out / "templates" / "stale.html").write_text("left by an interrupted build")
    (out / "crds").mkdir()
    (out / "crds" / "first.yaml").write_text("the first controller's")

    def build(staging: Path, work: Path) -> None:
        (staging / "templates").mkdir()
        (staging / "templates" / "code.html").write_text("new")
        (staging / "crds").mkdir()
        (staging / "crds" / "second.yaml").write_text("the second controller's")
        (staging / "chat").write_text("binary")

    buildcache.ensure(out, ("templates", "chat"), build, "app")
    assert sorted(p.name for p in (out / "templates").iterdir()) == ["code.html"]
    assert sorted(p.name for p in (out / "crds").iterdir()) == ["first.yaml", "second.yaml"]
    assert (out / "chat").read_text() == "binary"


def test_go_mod_replaces_and_wrapper_modules() -> None:
    gomod = (
        "module github.com/fluxcd/source-controller\n\n"
        "replace github.com/fluxcd/source-controller/api => ./api\n\n"
        "replace (\n"
        "\tk8s.io/api => ./staging/src/k8s.io/api // local\n"
        "\tgithub.com/opencontainers/go-digest v1.0.0 => github.com/opencontainers/go-digest v1.0.1-0.2024\n"
        ")\n"
        "require k8s.io/klog v1.0.0\n"
    )
    assert buildcache.replaces(gomod) == [
        ("github.com/fluxcd/source-controller/api", "./api", None),
        ("k8s.io/api", "./staging/src/k8s.io/api", None),
        ("github.com/opencontainers/go-digest", "github.com/opencontainers/go-digest", "v1.0.1-0.2024"),
    ]
    assert buildcache.gomod("helm", "helm.sh/helm/v3 v3.19.5") == (
        "module coai-e2e/helm\n\ngo 1.24\n\nrequire helm.sh/helm/v3 v3.19.5\n")
    assert buildcache.gomod("k", "k8s.io/kubernetes v1.35.4", ["k8s.io/api => k8s.io/api v0.35.4"]).endswith(
        "require k8s.io/kubernetes v1.35.4\n\nreplace (\n\tk8s.io/api => k8s.io/api v0.35.4\n)\n")


def test_the_cache_keys_stay_the_warm_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed directory name is a cold rebuild (36 minutes in CI): change these only on purpose."""
    versions = [k for k in ("K8S", "ETCD", "HELM", "CONTAINERD", "COREDNS", "FLUX", "VERSITYGW", "KUBE_ROUTER",
                            "TIKTOKEN_LOADER") if f"COAI_{k}_VERSION" in os.environ]
    if versions:
        pytest.skip(f"versions overridden: {versions}")
    monkeypatch.delenv("COAI_SOURCE_GIT", raising=False)
    root = buildcache.CACHE_ROOT
    paths = [build_binaries.bin_dir(), build_binaries.node_bin_dir(), build_flux.flux_dir(), build_versitygw.binary(),
             netpol.binary(), build_coai.build_dir("3.10.5"), build_coai.build_dir("4.25.0")]
    assert [p.relative_to(root).as_posix() for p in paths] == [
        "bin/k8s-v1.35.4_etcd-v3.6.16_helm-v3.19.5",
        "node/containerd-v2.3.7_coredns-v1.15.0",
        "flux/v1.9.6",
        "bin/versitygw-v1.8.0/versitygw",
        "kube-router/v2.1.0/kube-router",
        "coai/3.10.5/34d759e80b4ba43e",
        "coai/4.25.0/49ebfb7e5c57b2e0",
    ]
    assert {m.CACHE_ROOT for m in (build_binaries, build_coai, build_flux, build_versitygw, netpol)} == {root}
