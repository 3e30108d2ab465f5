"""The app images: the guide-line stand-in (e2e/standin on the python base) and the real CoAI
server laid out like the upstream `programzmh/chatnio` image (Dockerfile of github.com/coaidev/coai:
alpine + ca-certificates + tzdata, Asia/Shanghai, `/chat` and its runtime files at the root,
WORKDIR /, VOLUME /config /logs /storage, EXPOSE 8094, CMD ["./chat"], running as root).
Ours is a Debian minbase instead of alpine: the binary is built against glibc here.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path

import yaml

from e2e.localcluster.debian import Rootfs
from e2e.localcluster.imagetar import Layer, Member, image_config, write_archive, write_layer

REPO = Path(__file__).resolve().parents[2]
STANDIN_SOURCE = REPO / "e2e" / "standin"
# The name says what it is: no public image of the guide's 1.6 - 2.0 line exists.
STANDIN_IMAGE = "coai-guide-standin"
STANDIN_PORT = 8000  # the CoaiInstance default spec.port; SERVER_PORT overrides it
NONROOT = 65532
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"

CHATNIO_ROOTFS = Rootfs("coai-base-bookworm", ("ca-certificates", "tzdata"), hook=(
    'echo Asia/Shanghai > "$1/etc/timezone" && ln -sf /usr/share/zoneinfo/Asia/Shanghai "$1/etc/localtime"'),
    host_cas=True)
CHATNIO_PORT = 8094


def standin_versions() -> list[str]:
    """Every line of the guide's compatibility table (the operator's bundle)."""
    table = REPO / "operator" / "coai_operator" / "bundles" / "compatibility.yaml"
    return [str(line["version"]) for line in yaml.safe_load(table.read_text())["lines"]]


def _package_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _pymysql_dir() -> Path:
    spec = importlib.util.find_spec("pymysql")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pymysql is not installed (pip install -e '.[test]')")
    return Path(next(iter(spec.submodule_search_locations)))


def tree_digest(*roots: Path) -> str:
    """sha256 over the relative names, modes and contents of every file under `roots` (files or dirs)."""
    digest = hashlib.sha256()
    for root in roots:
        found = [root] if root.is_file() else root.rglob("*")
        for path in sorted(p for p in found if p.is_file() and "__pycache__" not in p.parts):
            data, rel = path.read_bytes(), path.relative_to(root.parent)
            digest.update(f"{rel}\0{path.stat().st_mode & 0o111}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def standin_digest() -> str:
    return tree_digest(STANDIN_SOURCE, _pymysql_dir())


def write_standin(out: Path, base_layers: list[Layer], cache: Path) -> Path:
    """One archive, one tag per guide version: the layers are shared, only the config differs."""
    pymysql = _pymysql_dir()
    members = [Member("app", mode=0o755), Member("app/standin", mode=0o755),
               Member("storage", mode=0o777)]  # writable without a volume, like the app's own
    members += [Member(f"app/standin/{p.relative_to(STANDIN_SOURCE)}", p) for p in _package_files(STANDIN_SOURCE)]
    members += [Member(f"{SITE_PACKAGES}/pymysql", mode=0o755)]
    members += [Member(f"{SITE_PACKAGES}/pymysql/{p.relative_to(pymysql)}", p) for p in _package_files(pymysql)]
    dirs = {str(Path(m.name).parent) for m in members if m.data is not None}
    members += [Member(d, mode=0o755) for d in sorted(dirs) if d not in {m.name for m in members}]
    layer = write_layer(cache / "layers" / f"{out.stem}-app.tar", members)
    layers = [*base_layers, layer]
    entries = []
    for version in standin_versions():
        config = image_config(layers, cmd=["python3", "-m", "standin"], workdir="/app", user=f"{NONROOT}:{NONROOT}",
                              ports=[f"{STANDIN_PORT}/tcp"], volumes=["/storage"],
                              env={"LANG": "C.UTF-8", "PYTHONPATH": "/app", "PYTHONDONTWRITEBYTECODE": "1",
                                   "PYTHONUNBUFFERED": "1", "COAI_STANDIN_VERSION": version},
                              labels={"org.opencontainers.image.title": "CoAI guide-line stand-in",
                                      "org.opencontainers.image.version": version})
        entries.append(([f"{STANDIN_IMAGE}:{version}"], config))
    write_archive(out, entries, layers)
    layer.path.unlink()
    return out


def write_chatnio(out: Path, base: Layer, app_dir: Path, files: Iterable[str], name: str, cache: Path) -> Path:
    """`files` (relative to app_dir: the binary and the runtime files) at the image root."""
    members = [Member(d, mode=0o755) for d in ("config", "logs", "storage")]
    paths = sorted({p for rel in files for p in [app_dir / rel, *(app_dir / rel).rglob("*")]})
    for path in paths:
        rel = path.relative_to(app_dir)
        members += [Member(str(parent), mode=0o755) for parent in reversed(rel.parents[:-1])]
        if path.is_dir():
            members.append(Member(str(rel), mode=0o755))
        elif path.is_file():
            members.append(Member(str(rel), path, mode=0o755 if path.stat().st_mode & 0o111 else 0o644))
    unique = {m.name: m for m in members}
    layer = write_layer(cache / "layers" / f"{out.stem}-app.tar", unique.values())
    config = image_config([base, layer], cmd=["./chat"], workdir="/", ports=[f"{CHATNIO_PORT}/tcp"],
                          volumes=["/config", "/logs", "/storage"])
    write_archive(out, [([name], config)], [base, layer])
    layer.path.unlink()
    return out
