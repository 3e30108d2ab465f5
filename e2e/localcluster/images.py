"""Every container image the local cluster runs, built here without a registry or a daemon.

`ensure_images()` returns image name (exactly as the manifests write it) -> a docker archive that
`ctr -n k8s.io images import ARCHIVE` imports under that name (import each distinct path once:
several names can share one archive). Each archive is cached under
~/.cache/coai-operator/images/ by the hash of everything it is made of; a warm run only hashes
its inputs. Builds are serialised by a lock file, so concurrent callers wait rather than race.

  python:3.11-slim-bookworm          Debian's python3 + pip (the Dockerfile's FROM; not deployed)
  ghcr.io/coai-operator/...:<appVersion>   the project's own Dockerfile, built by buildah
  redis:7-alpine                      Debian's redis-server 7, the managed-Redis default
  coai-guide-standin:<v>              stand-in app for the guide's 1.6 - 2.0 line (e2e/standin)
  programzmh/chatnio:<v>              the real CoAI server, built from source by build_coai.py

Command line: `python -m e2e.localcluster.images [--only GROUP ...]` (operator, redis, standin,
chatnio) builds and prints the map.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

from coai_operator.constants import DEFAULT_APP_IMAGE
from coai_operator.instance.render import REDIS_GID, REDIS_PORT, REDIS_UID
from coai_operator.instance.spec import DEFAULT_REDIS_IMAGE
from e2e.localcluster import appimages
from e2e.localcluster.buildah import Buildah, context_digest, stage_names
from e2e.localcluster.buildcache import CACHE_ROOT, locked
from e2e.localcluster.debian import Rootfs, ensure_rootfs
from e2e.localcluster.imagetar import Layer, Member, image_config, write_archive, write_layer

REPO = Path(__file__).resolve().parents[2]
CACHE = CACHE_ROOT / "images"

BASE_IMAGE = "python:3.11-slim-bookworm"
# Like the official python image: `python` and `pip` on /usr/local/bin, pip installs into
# /usr/local (Debian's scheme outside a venv) without the PEP 668 refusal.
# Debian's own container images ship this apt configuration: apt keeps no package caches, so a
# Dockerfile's `rm -rf /var/lib/apt/lists/*` is all the cleaning it needs (80 MB otherwise).
_CLEAN = "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"
APT_DOCKER_CLEAN = (f'DPkg::Post-Invoke {{ "{_CLEAN}"; }};', f'APT::Update::Post-Invoke {{ "{_CLEAN}"; }};',
                    'Dir::Cache::pkgcache "";', 'Dir::Cache::srcpkgcache "";')
_PYTHON_HOOK = (
    'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
    'for n in python python3; do ln -sf /usr/bin/python3 "$1/usr/local/bin/$n"; done',
    'for n in pip pip3; do ln -sf /usr/bin/pip3 "$1/usr/local/bin/$n"; done',
    "printf '%s\\n' " + " ".join(f"'{line}'" for line in APT_DOCKER_CLEAN) + ' > "$1/etc/apt/apt.conf.d/docker-clean"',
    "echo 'Acquire::Languages \"none\";' > \"$1/etc/apt/apt.conf.d/docker-no-languages\"",
    # With those settings mmdebstrap's own cleanup no longer finds the caches it made.
    'rm -f "$1"/var/cache/apt/*.bin',
)
PYTHON_ROOTFS = Rootfs("python3.11-bookworm", ("python3", "python3-pip", "python3-venv", "ca-certificates"),
                       hook=" && ".join(_PYTHON_HOOK), host_cas=True)
# Debian's redis user gets the uid/gid of the official image's (the pod's runAsUser/runAsGroup).
REDIS_ROOTFS = Rootfs("redis-bookworm", ("redis-server",), hook=(
    f'chroot "$1" groupmod -g {REDIS_GID} redis && chroot "$1" usermod -u {REDIS_UID} redis'
    f' && mkdir -p "$1/data" && chown {REDIS_UID}:{REDIS_GID} "$1/data"'))


def operator_image() -> str:
    """The name the chart and the kustomize base deploy: values image.repository + the chart's appVersion."""
    chart = REPO / "charts" / "coai-operator"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    app_version = yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"]
    return f"{values['image']['repository']}:{values['image'].get('tag') or app_version}"


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _slug(name: str) -> str:
    return name.rsplit("/", 1)[-1].replace(":", "-")


def _cached(name: str, key: str, build: Callable[[Path], object]) -> Path:
    """CACHE/<slug>-<key>.tar, built when missing; older archives of the same image are removed."""
    out = CACHE / f"{_slug(name)}-{key}.tar"
    if not out.exists():
        started = time.monotonic()
        build(out)
        for old in CACHE.glob(f"{_slug(name)}-*.tar"):
            if old != out and len(old.name) == len(out.name):
                old.unlink(missing_ok=True)
        print(f"images: {name} ready in {time.monotonic() - started:.0f}s ({out.stat().st_size >> 20} MiB)",
              flush=True)
    return out


def python_base() -> tuple[Path, list[Layer]]:
    layer = ensure_rootfs(PYTHON_ROOTFS, CACHE)
    config = image_config([layer], cmd=["python3"], env={"LANG": "C.UTF-8"})
    path = _cached(BASE_IMAGE, _key(layer.diff_id, config),
                   lambda out: write_archive(out, [([BASE_IMAGE], config)], [layer]))
    return path, [layer]


def _tiktoken_dir() -> Path:
    from e2e.localcluster import build_coai  # the real app's builder lays the files out

    return build_coai.tiktoken_dir()


# Named build contexts (`--build-context NAME=DIR`) for the Dockerfile stages of these names.
NAMED_CONTEXTS: dict[str, Callable[[], Path]] = {"tiktoken": _tiktoken_dir}


def build_operator() -> dict[str, Path]:
    base, _ = python_base()
    name, dockerfile = operator_image(), REPO / "Dockerfile"
    stages = stage_names(dockerfile.read_text())
    contexts = {stage: make() for stage, make in NAMED_CONTEXTS.items() if stage in stages}
    key = _key(base.name, context_digest(REPO, dockerfile), name,
               {stage: appimages.tree_digest(path) for stage, path in contexts.items()})
    builder = Buildah(CACHE / "buildah")
    return {name: _cached(name, key, lambda out: builder.build(REPO, dockerfile, name, {BASE_IMAGE: base}, out,
                                                               contexts))}


# The official image's build switches protected mode off by default (it refuses every client from
# another pod when no password is set); Debian's binary keeps it on, so the entrypoint passes
# --protected-mode no right after the optional config file, where later arguments still override it.
REDIS_ENTRYPOINT = b"""#!/bin/sh
set -e
case "$1" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ]; then
  shift
  case "$1" in
    -v|--version|-h|--help|--test-memory|--check-system) set -- redis-server "$@" ;;
    *.conf) conf=$1; shift; set -- redis-server "$conf" --protected-mode no "$@" ;;
    *) set -- redis-server --protected-mode no "$@" ;;
  esac
fi
exec "$@"
"""


def build_redis() -> dict[str, Path]:
    base = ensure_rootfs(REDIS_ROOTFS, CACHE)
    entrypoint = "/usr/local/bin/docker-entrypoint.sh"

    def build(out: Path) -> None:
        layer = write_layer(CACHE / "layers" / f"{out.stem}-entrypoint.tar",
                            [Member(entrypoint.lstrip("/"), REDIS_ENTRYPOINT, mode=0o755)])
        config = image_config([base, layer], entrypoint=[entrypoint], cmd=["redis-server"], workdir="/data",
                              user=f"{REDIS_UID}:{REDIS_GID}", ports=[f"{REDIS_PORT}/tcp"], volumes=["/data"])
        write_archive(out, [([DEFAULT_REDIS_IMAGE], config)], [base, layer])
        layer.path.unlink()

    key = _key(base.diff_id, REDIS_ENTRYPOINT.decode(), REDIS_UID, REDIS_GID, REDIS_PORT)
    return {DEFAULT_REDIS_IMAGE: _cached(DEFAULT_REDIS_IMAGE, key, build)}


def build_standin() -> dict[str, Path]:
    _, base_layers = python_base()
    names = [f"{appimages.STANDIN_IMAGE}:{v}" for v in appimages.standin_versions()]
    key = _key([layer.diff_id for layer in base_layers], appimages.standin_digest(), names)
    path = _cached(appimages.STANDIN_IMAGE, key, lambda out: appimages.write_standin(out, base_layers, CACHE))
    return dict.fromkeys(names, path)


def build_chatnio(versions: Iterable[str] | None = None) -> dict[str, Path]:
    from e2e.localcluster import build_coai  # the realapp helper's builder (Go, minutes when cold)

    base = ensure_rootfs(appimages.CHATNIO_ROOTFS, CACHE)
    out: dict[str, Path] = {}
    for version in versions or build_coai.SOURCES:
        name = f"{DEFAULT_APP_IMAGE}:{version}"
        app_dir = build_coai.ensure_built(version)
        files = ("chat", *build_coai.RUNTIME_FILES)
        key = _key(base.diff_id, appimages.tree_digest(*(app_dir / f for f in files)), name)
        out[name] = _cached(name, key, lambda path, d=app_dir, f=files, n=name:
                            appimages.write_chatnio(path, base, d, f, n, CACHE))
    return out


BUILDERS: dict[str, Callable[[], dict[str, Path]]] = {
    "operator": build_operator,
    "redis": build_redis,
    "standin": build_standin,
    "chatnio": build_chatnio,
}


def ensure_images(only: Iterable[str] | None = None) -> dict[str, Path]:
    """Image name -> archive for every image (or the groups in `only`: operator, redis, standin, chatnio)."""
    groups = list(only) if only is not None else list(BUILDERS)
    unknown = [g for g in groups if g not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown image group(s) {unknown}; known: {list(BUILDERS)}")
    images: dict[str, Path] = {}
    with locked(CACHE / ".lock"):
        for group in groups:
            images.update(BUILDERS[group]())
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(BUILDERS), help="image groups (default: all)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    images = ensure_images(args.only)
    for name, path in images.items():
        print(f"{name}\t{path}")
    print(f"images: {len(images)} ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
