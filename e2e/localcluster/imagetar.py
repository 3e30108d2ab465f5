"""Image archives in the `docker save` layout, written and read without a container engine.

An archive is a tar of `manifest.json`, one config JSON and one uncompressed tar per layer.
`ctr -n k8s.io images import ARCHIVE` names the image from manifest.json's RepoTags, normalised
the way the kubelet normalises a pod's image (`redis:7-alpine` -> docker.io/library/redis:7-alpine),
so no `--base-name` is needed (with one, ctr drops every name outside that prefix).
Layers are uncompressed: the archives stay on this machine, and gzip would cost CPU twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.localcluster.buildcache import file_sha256

# A fixed timestamp: the same inputs give a byte-identical archive.
EPOCH = 0
ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Layer:
    path: Path  # an uncompressed tar
    diff_id: str  # "sha256:<hex>" of that tar

    @classmethod
    def of(cls, path: Path) -> Layer:
        return cls(path, "sha256:" + file_sha256(path))


@dataclass(frozen=True)
class Member:
    """One entry of a layer: a file (`data` bytes or a host path), a directory (`data` None) or a symlink."""

    name: str
    data: bytes | Path | None = None
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    symlink: str | None = None


def write_layer(out: Path, members: Iterable[Member]) -> Layer:
    """A deterministic layer tar (sorted names, fixed times, numeric owners)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for m in sorted(members, key=lambda m: m.name):
            info = tarfile.TarInfo(m.name.lstrip("/"))
            info.mtime, info.uid, info.gid, info.mode = EPOCH, m.uid, m.gid, m.mode
            if m.symlink is not None:
                info.type, info.linkname = tarfile.SYMTYPE, m.symlink
                tar.addfile(info)
            elif m.data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(m.data, Path):
                info.size = m.data.stat().st_size
                with m.data.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
    os.replace(tmp, out)
    return Layer.of(out)


def image_config(layers: list[Layer], *, cmd: list[str] | None = None, entrypoint: list[str] | None = None,
                 env: Mapping[str, str] | None = None, workdir: str = "/", user: str = "",
                 ports: Iterable[str] = (), volumes: Iterable[str] = (),
                 labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An OCI/docker image config. `ports` like "8094/tcp"."""
    config: dict[str, Any] = {
        "Env": [f"{k}={v}" for k, v in {"PATH": DEFAULT_PATH, **(env or {})}.items()],
        "WorkingDir": workdir,
    }
    if cmd is not None:
        config["Cmd"] = list(cmd)
    if entrypoint is not None:
        config["Entrypoint"] = list(entrypoint)
    if user:
        config["User"] = user
    if ports:
        config["ExposedPorts"] = {p: {} for p in ports}
    if volumes:
        config["Volumes"] = {v: {} for v in volumes}
    if labels:
        config["Labels"] = dict(labels)
    return {
        "architecture": ARCHES.get(platform.machine(), platform.machine()),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "coai-operator e2e images"}
                    for _ in layers],
    }


def write_archive(out: Path, images: list[tuple[list[str], Mapping[str, Any]]], layers: list[Layer]) -> Path:
    """The archive at `out`: (tags, config) per image, all on `layers`. Written beside it, then
    renamed, so a reader never sees half of one."""
    layer_names = [f"{layer.diff_id.removeprefix('sha256:')}/layer.tar" for layer in layers]
    configs = {}
    for _, config in images:
        data = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        configs[hashlib.sha256(data).hexdigest() + ".json"] = data
    manifest = [{"Config": name, "RepoTags": list(tags), "Layers": layer_names}
                for name, (tags, _) in zip(configs, images, strict=True)]
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in configs.items():
            _add_bytes(tar, name, data)
        for name, layer in zip(layer_names, layers, strict=True):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = layer.path.stat().st_size, EPOCH, 0o644
            with layer.path.open("rb") as fh:
                tar.addfile(info, fh)
        _add_bytes(tar, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
    os.replace(tmp, out)
    return out


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
    tar.addfile(info, io.BytesIO(data))


@dataclass(frozen=True)
class ArchiveInfo:
    tags: list[str]
    config: dict[str, Any]  # the whole image config; ["config"] holds Cmd, Env, User, ...
    layers: list[str]  # member names of the layer tars, base first

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config["config"].get("Env") or [])


def read_archive(path: Path, tag: str | None = None) -> ArchiveInfo:
    """Manifest and config of one image of a docker-save archive (ours or `buildah push
    docker-archive:`'s): the one tagged `tag`, or the first."""
    with tarfile.open(path) as tar:
        entries = json.load(_member(tar, "manifest.json"))
        entry = next((e for e in entries if tag is None or tag in (e.get("RepoTags") or [])), None)
        if entry is None:
            raise KeyError(f"{path} has no image tagged {tag}")
        config = json.load(_member(tar, entry["Config"]))
    return ArchiveInfo(list(entry.get("RepoTags") or []), config, list(entry["Layers"]))


def archive_tags(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return [t for e in json.load(_member(tar, "manifest.json")) for t in e.get("RepoTags") or []]


def read_file(path: Path, file: str, tag: str | None = None) -> bytes | None:
    """One file of an image's root filesystem (the top-most layer that has it), or None."""
    info = read_archive(path, tag)
    wanted = file.lstrip("/")
    with tarfile.open(path) as tar:
        for layer_name in reversed(info.layers):
            with tarfile.open(fileobj=_member(tar, layer_name)) as layer:
                for member in layer:
                    if member.name.removeprefix("./").rstrip("/") == wanted and member.isfile():
                        return layer.extractfile(member).read()  # type: ignore[union-attr]
    return None


def _member(tar: tarfile.TarFile, name: str) -> io.BufferedReader:
    fh = tar.extractfile(name)
    if fh is None:
        raise ValueError(f"{name} is not a file in the archive")
    return fh  # type: ignore[return-value]


def unpack(path: Path, dest: Path, tag: str | None = None) -> Path:
    """An image's root filesystem under `dest` (layers in order, whiteouts applied): for checks
    that run the image's programs with chroot, without a container runtime."""
    info = read_archive(path, tag)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path) as outer:
        for name in info.layers:
            with tarfile.open(fileobj=_member(outer, name)) as layer:
                members = layer.getmembers()
                for m in members:
                    base = Path(m.name).name
                    if base.startswith(".wh."):
                        target = dest / Path(m.name).parent / base.removeprefix(".wh.")
                        if base != ".wh..wh..opq" and (target.is_symlink() or target.is_file()):
                            target.unlink()
                        elif base != ".wh..wh..opq" and target.is_dir():
                            shutil.rmtree(target)
                layer.extractall(dest, members=[m for m in members if not Path(m.name).name.startswith(".wh.")
                                                and not (m.ischr() or m.isblk())],
                                 numeric_owner=True, filter="fully_trusted")
    return dest
