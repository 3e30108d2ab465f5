"""The local images (e2e/localcluster/images.py): built, or found in the cache, and shaped like the
images the manifests name. No cluster: each archive's manifest, config and a few files are read.

Cold, this builds everything (mmdebstrap, buildah, the CoAI Go builds: many minutes); warm it
only hashes the inputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coai_operator.constants import DEFAULT_APP_IMAGE
from coai_operator.instance.render import REDIS_GID, REDIS_PORT, REDIS_UID
from coai_operator.instance.spec import DEFAULT_PORT, DEFAULT_REDIS_IMAGE
from e2e.localcluster import appimages, images
from e2e.localcluster.imagetar import archive_tags, read_archive, read_file

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHATNIO_VERSIONS = ("3.10.5", "3.11.1", "4.24.2", "4.25.0")


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    return images.ensure_images()


def _config(path: Path, tag: str) -> dict:
    info = read_archive(path, tag)
    assert tag in info.tags
    return info.config["config"]


def test_every_archive_is_tagged_with_the_names_it_is_returned_for(built: dict[str, Path]) -> None:
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


def test_base_image_is_a_python_3_11_with_pip_and_apt_sources(built: dict[str, Path]) -> None:
    base, _ = images.python_base()
    cfg = _config(base, images.BASE_IMAGE)
    assert cfg["Cmd"] == ["python3"]
    assert read_file(base, "/usr/lib/python3.11/EXTERNALLY-MANAGED") is None  # pip installs like the official image
    assert read_file(base, "/usr/bin/python3.11") is not None
    sources = read_file(base, "/etc/apt/sources.list")
    assert sources is not None and b"bookworm main" in sources and b"bookworm-security" in sources


def test_redis_image_runs_redis_server_as_the_managed_redis_pod_user(built: dict[str, Path]) -> None:
    path = built[DEFAULT_REDIS_IMAGE]
    cfg = _config(path, DEFAULT_REDIS_IMAGE)
    assert (cfg["Cmd"], cfg["WorkingDir"], cfg["User"]) == (["redis-server"], "/data", f"{REDIS_UID}:{REDIS_GID}")
    assert (cfg["ExposedPorts"], cfg["Volumes"]) == ({f"{REDIS_PORT}/tcp": {}}, {"/data": {}})
    passwd = read_file(path, "/etc/passwd")
    assert passwd is not None and f"redis:x:{REDIS_UID}:{REDIS_GID}:".encode() in passwd
    assert read_file(path, "/usr/bin/redis-server") is not None or read_file(path, "/usr/bin/redis-check-rdb")


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
def test_chatnio_image_is_laid_out_like_upstream(built: dict[str, Path], version: str) -> None:
    from e2e.localcluster import build_coai

    name = f"{DEFAULT_APP_IMAGE}:{version}"
    cfg = _config(built[name], name)
    assert (cfg["Cmd"], cfg["WorkingDir"], cfg.get("User", "")) == (["./chat"], "/", "")  # root, as upstream
    assert cfg["Volumes"] == {"/config": {}, "/logs": {}, "/storage": {}}
    assert cfg["ExposedPorts"] == {"8094/tcp": {}}
    app_dir = build_coai.ensure_built(version)
    assert read_file(built[name], "/config.example.yaml") == (app_dir / "config.example.yaml").read_bytes()
    assert read_file(built[name], "/addition/article/template.docx") is not None
    assert read_file(built[name], "/etc/ssl/certs/ca-certificates.crt") is not None
    assert read_file(built[name], "/etc/timezone") == b"Asia/Shanghai\n"
