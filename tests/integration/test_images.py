"""The local images (e2e/localcluster/images.py): built, or found in the cache, and shaped like the
images the manifests name. No cluster: each archive's manifest, config and a few files are read.

Cold, this builds everything (mmdebstrap, buildah, the CoAI Go builds: many minutes); warm it
only hashes the inputs.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from e2e.helpers import wait_for
from e2e.localcluster import appimages, images
from e2e.localcluster.buildah import stage_names
from e2e.localcluster.imagetar import archive_tags, read_archive, read_file, unpack

from coai_operator.constants import DEFAULT_APP_IMAGE
from coai_operator.instance.render import REDIS_GID, REDIS_PORT, REDIS_UID
from coai_operator.instance.spec import DEFAULT_PORT, DEFAULT_REDIS_IMAGE

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHATNIO_VERSIONS = ("3.10.5", "3.11.1", "4.24.2", "4.25.0")
Factory = pytest.TempPathFactory


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    return images.ensure_images(["operator", "redis", "standin"])


@pytest.fixture(scope="module")
def chatnio() -> dict[str, Path]:
    pytest.importorskip("e2e.localcluster.build_coai", reason="the CoAI builder (build_coai.py) is not in this tree")
    return images.ensure_images(["chatnio"])


_ROOTS: dict[tuple[Path, str], Path] = {}


def _root(archive: Path, tag: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's root filesystem, unpacked once per test module run."""
    if (archive, tag) not in _ROOTS:
        _ROOTS[archive, tag] = unpack(archive, tmp_path_factory.mktemp("rootfs") / "root", tag)
    return _ROOTS[archive, tag]


def _run_in(archive: Path, tag: str, factory: pytest.TempPathFactory, *cmd: str) -> str:
    """`cmd` in the image's root filesystem (chroot), as the image's user with the image's env."""
    cfg = read_archive(archive, tag).config["config"]
    root = _root(archive, tag, factory)
    env = dict(item.split("=", 1) for item in cfg["Env"])
    user = ["--userspec", cfg["User"]] if cfg.get("User") else []
    done = subprocess.run(["chroot", *user, str(root), *cmd], env=env, capture_output=True, text=True, timeout=120,
                          cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


def _config(path: Path, tag: str) -> dict:
    info = read_archive(path, tag)
    assert tag in info.tags
    return info.config["config"]


def test_every_archive_is_tagged_with_the_names_it_is_returned_for(built: dict[str, Path]) -> None:
    assert {images.operator_image(), DEFAULT_REDIS_IMAGE, f"{appimages.STANDIN_IMAGE}:2.0.0"} <= set(built)
    for name, path in built.items():
        assert path.is_file() and path.parent == images.CACHE
        assert name in archive_tags(path)


def test_operator_image_is_the_dockerfile_build_under_the_deployed_name(built: dict[str, Path]) -> None:
    values = yaml.safe_load((REPO / "charts/coai-operator/values.yaml").read_text())["image"]
    chart = yaml.safe_load((REPO / "charts/coai-operator/Chart.yaml").read_text())
    name = f"{values['repository']}:{chart['appVersion']}"
    deployment = yaml.safe_load((REPO / "manifests/base/deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == name
    cfg = _config(built[name], name)
    # What the Dockerfile says, as buildah built it.
    assert (cfg["Entrypoint"], cfg["Cmd"], cfg["User"], cfg["WorkingDir"]) == \
        (["coai-operator"], ["run", "--all-namespaces"], "65532:65532", "/tmp")
    assert "8080/tcp" in cfg["ExposedPorts"]
    env = dict(item.split("=", 1) for item in cfg["Env"])
    assert (env["HOME"], env["PYTHONDONTWRITEBYTECODE"], env["PYTHONUNBUFFERED"]) == ("/tmp", "1", "1")
    assert cfg["Labels"]["org.opencontainers.image.title"] == "coai-operator"
    script = read_file(built[name], "/usr/local/bin/coai-operator")
    assert script is not None and b"coai_operator.cli" in script
    passwd = read_file(built[name], "/etc/passwd")
    assert passwd is not None and b"nonroot:x:65532:65532:" in passwd
    assert read_file(built[name], "/var/cache/apt/pkgcache.bin") is None  # the base's apt keeps no caches
    if "tiktoken" in stage_names((REPO / "Dockerfile").read_text()):  # the named build context's files
        tiktoken = images.NAMED_CONTEXTS["tiktoken"]()
        for path in sorted(tiktoken.iterdir()):
            assert read_file(built[name], f"/opt/coai-operator/tiktoken/{path.name}") == path.read_bytes()


def test_base_image_is_a_python_3_11_with_pip_and_apt_sources(built: dict[str, Path]) -> None:
    base, _ = images.python_base()
    cfg = _config(base, images.BASE_IMAGE)
    assert cfg["Cmd"] == ["python3"]
    assert read_file(base, "/usr/lib/python3.11/EXTERNALLY-MANAGED") is None  # pip installs like the official image
    assert read_file(base, "/usr/bin/python3.11") is not None
    assert b"Dir::Cache::pkgcache" in (read_file(base, "/etc/apt/apt.conf.d/docker-clean") or b"")
    sources = read_file(base, "/etc/apt/sources.list")
    assert sources is not None and b"bookworm main" in sources and b"bookworm-security" in sources


def test_redis_image_runs_redis_server_as_the_managed_redis_pod_user(built: dict[str, Path]) -> None:
    path = built[DEFAULT_REDIS_IMAGE]
    cfg = _config(path, DEFAULT_REDIS_IMAGE)
    assert (cfg["Entrypoint"], cfg["Cmd"], cfg["WorkingDir"], cfg["User"]) == \
        (["/usr/local/bin/docker-entrypoint.sh"], ["redis-server"], "/data", f"{REDIS_UID}:{REDIS_GID}")
    assert read_file(path, "/usr/local/bin/docker-entrypoint.sh") == images.REDIS_ENTRYPOINT
    assert (cfg["ExposedPorts"], cfg["Volumes"]) == ({f"{REDIS_PORT}/tcp": {}}, {"/data": {}})
    passwd = read_file(path, "/etc/passwd")
    assert passwd is not None and f"redis:x:{REDIS_UID}:{REDIS_GID}:".encode() in passwd


def test_standin_is_tagged_for_every_guide_version_and_runs_our_app(built: dict[str, Path]) -> None:
    versions = appimages.standin_versions()
    assert {"1.6.0", "1.8.0", "1.9.0", "2.0.0"} <= set(versions)
    paths = {built[f"{appimages.STANDIN_IMAGE}:{v}"] for v in versions}
    assert len(paths) == 1  # one archive, shared layers
    [path] = paths
    for version in versions:
        cfg = _config(path, f"{appimages.STANDIN_IMAGE}:{version}")
        env = dict(item.split("=", 1) for item in cfg["Env"])
        assert env["COAI_STANDIN_VERSION"] == version
        assert (cfg["Cmd"], cfg["User"], env["PYTHONPATH"]) == (["python3", "-m", "standin"], "65532:65532", "/app")
        assert cfg["ExposedPorts"] == {f"{DEFAULT_PORT}/tcp": {}}
    assert read_file(path, "/app/standin/app.py") == (REPO / "e2e/standin/app.py").read_bytes()
    assert read_file(path, "/usr/local/lib/python3.11/dist-packages/pymysql/__init__.py") is not None


@pytest.mark.parametrize("version", CHATNIO_VERSIONS)
def test_chatnio_image_is_laid_out_like_upstream(chatnio: dict[str, Path], version: str) -> None:
    from e2e.localcluster import build_coai

    name = f"{DEFAULT_APP_IMAGE}:{version}"
    cfg = _config(chatnio[name], name)
    assert (cfg["Cmd"], cfg["WorkingDir"], cfg.get("User", "")) == (["./chat"], "/", "")  # root, as upstream
    assert cfg["Volumes"] == {"/config": {}, "/logs": {}, "/storage": {}}
    assert cfg["ExposedPorts"] == {"8094/tcp": {}}
    app_dir = build_coai.ensure_built(version)
    assert read_file(chatnio[name], "/config.example.yaml") == (app_dir / "config.example.yaml").read_bytes()
    assert read_file(chatnio[name], "/addition/article/template.docx") is not None
    assert read_file(chatnio[name], "/etc/ssl/certs/ca-certificates.crt") is not None
    assert read_file(chatnio[name], "/etc/timezone") == b"Asia/Shanghai\n"


# The images' programs really run, as the image's user (chroot: no container runtime here).
def test_operator_image_runs_the_cli_and_the_database_tools(built: dict[str, Path],
                                                            tmp_path_factory: Factory) -> None:
    name = images.operator_image()
    assert "0.1.0" in _run_in(built[name], name, tmp_path_factory, "coai-operator", "version")
    assert "mariadb-dump" in _run_in(built[name], name, tmp_path_factory, "mariadb-dump", "--version")
    assert "Zstandard" in _run_in(built[name], name, tmp_path_factory, "zstd", "--version")


def test_base_image_python_and_pip_run(tmp_path_factory: Factory) -> None:
    base, _ = images.python_base()
    assert "Python 3.11" in _run_in(base, images.BASE_IMAGE, tmp_path_factory, "python", "--version")
    assert "python 3.11" in _run_in(base, images.BASE_IMAGE, tmp_path_factory, "pip", "--version")


def test_redis_image_serves_as_its_user_with_the_managed_redis_args(built: dict[str, Path],
                                                                    tmp_path_factory: Factory) -> None:
    archive = built[DEFAULT_REDIS_IMAGE]
    version = _run_in(archive, DEFAULT_REDIS_IMAGE, tmp_path_factory, "/usr/local/bin/docker-entrypoint.sh",
                      "redis-server", "--version")
    assert "Redis server v=7." in version
    cfg = read_archive(archive, DEFAULT_REDIS_IMAGE).config["config"]
    root = _root(archive, DEFAULT_REDIS_IMAGE, tmp_path_factory)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # render.py's args, plus a loopback port: this runs on the host's network.
    args = ["redis-server", "--appendonly", "yes", "--port", str(port), "--bind", "127.0.0.1"]
    server = subprocess.Popen(["chroot", "--userspec", cfg["User"], str(root), "sh", "-c",
                               f"cd {cfg['WorkingDir']} && exec {cfg['Entrypoint'][0]} {' '.join(args)}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def cli(*words: str) -> str:
        return subprocess.run(["chroot", str(root), "redis-cli", "-p", str(port), *words], capture_output=True,
                              text=True, timeout=10).stdout.strip()

    try:
        wait_for(lambda: cli("ping") == "PONG", timeout=30, interval=0.2, message="redis in the image answers")
        assert cli("config", "get", "protected-mode").split() == ["protected-mode", "no"]
        assert cli("set", "k", "v") == "OK"
        aof = root / "data" / "appendonlydir"
        assert (aof.stat().st_uid, aof.stat().st_gid) == (REDIS_UID, REDIS_GID)
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_standin_image_imports_its_app(built: dict[str, Path], tmp_path_factory: Factory) -> None:
    name = f"{appimages.STANDIN_IMAGE}:2.0.0"
    out = _run_in(built[name], name, tmp_path_factory, "python3", "-c",
                  "import os, pymysql, standin.app as a; print(a.Settings.from_env().version, os.getuid())")
    assert out.strip() == "2.0.0 65532"


def test_chatnio_binary_finds_its_libraries(chatnio: dict[str, Path], tmp_path_factory: Factory) -> None:
    name = f"{DEFAULT_APP_IMAGE}:{CHATNIO_VERSIONS[-1]}"
    out = _run_in(chatnio[name], name, tmp_path_factory, "/lib64/ld-linux-x86-64.so.2", "--list", "/chat")
    assert "libc.so.6" in out and "not found" not in out
