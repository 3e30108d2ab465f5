"""Where backups live: a directory (a PVC mount) or S3-compatible object storage, one interface.

A *location* is a root (a directory, or bucket + prefix); one backup is a child of it
(`<root>/<backup name>/`) holding its artifacts and, written last, `manifest.json`. Writes are
all-or-nothing on both: a file is renamed into place, an object appears only when its
multipart upload completes (a failed upload is aborted, never completed with partial data).

S3 client: the MinIO Python SDK (Apache-2.0, talks to any S3-compatible store). boto3 was the
first choice but botocore pins python-dateutil<3 while kubernetes==37 needs >=3, so both cannot
be installed together. The SDK sends payload hashes / Content-MD5, not the CRC trailers that
some stores reject, so `checksums: when_required` is its natural behaviour.

S3 settings come from the environment (a Job gets them from the location and its Secret):
COAI_S3_ENDPOINT (http(s)://host:port), COAI_S3_REGION, COAI_S3_PATH_STYLE (default true),
COAI_S3_CA_FILE, and credentials AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
A location URL is `s3://bucket/prefix` or a filesystem path.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlparse

from coai_operator.engine.errors import EngineError
from coai_operator.engine.fsutil import atomic_output, atomic_write_bytes

PART_SIZE = 8 << 20  # multipart part size: memory per upload is about this plus a few 1 MiB chunks


class StoreError(EngineError):
    reason = "StorageUnavailable"


class Store(Protocol):
    where: str

    def child(self, name: str) -> Store: ...
    def writer(self, name: str) -> contextlib.AbstractContextManager[BinaryIO]: ...
    def reader(self, name: str) -> contextlib.AbstractContextManager[BinaryIO]: ...
    def size(self, name: str) -> int | None: ...
    def get_bytes(self, name: str) -> bytes | None: ...
    def put_bytes(self, name: str, data: bytes) -> None: ...
    def names(self) -> list[str]: ...
    def children(self) -> list[str]: ...
    def delete(self, name: str) -> None: ...
    def prepare(self) -> None: ...


@dataclass
class LocalStore:
    root: Path

    @property
    def where(self) -> str:
        return str(self.root)

    def child(self, name: str) -> LocalStore:
        return LocalStore(self.root / name)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def writer(self, name: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return atomic_output(self.root / name)

    @contextlib.contextmanager
    def reader(self, name: str) -> Iterator[BinaryIO]:
        with (self.root / name).open("rb") as src:
            yield src

    def size(self, name: str) -> int | None:
        path = self.root / name
        return path.stat().st_size if path.is_file() else None

    def get_bytes(self, name: str) -> bytes | None:
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def put_bytes(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self.root / name, data)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_file()) if self.root.is_dir() else []

    def children(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


@dataclass(frozen=True)
class S3Settings:
    endpoint: str
    bucket: str
    region: str = "us-east-1"
    path_style: bool = True
    ca_file: str = ""
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, bucket: str, env: Mapping[str, str] | None = None) -> S3Settings:
        env = os.environ if env is None else env
        endpoint = env.get("COAI_S3_ENDPOINT", "")
        if not endpoint:
            raise StoreError("COAI_S3_ENDPOINT is not set (the S3 endpoint, e.g. https://s3.example.com)")
        return cls(endpoint=endpoint, bucket=bucket, region=env.get("COAI_S3_REGION") or "us-east-1",
                   path_style=env.get("COAI_S3_PATH_STYLE", "true").lower() not in ("false", "0", "no"),
                   ca_file=env.get("COAI_S3_CA_FILE", ""), access_key=env.get("AWS_ACCESS_KEY_ID", ""),
                   secret_key=env.get("AWS_SECRET_ACCESS_KEY", ""))


def _client(settings: S3Settings):  # type: ignore[no-untyped-def]
    import certifi
    import urllib3
    from minio import Minio

    url = urlparse(settings.endpoint)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise StoreError(f"S3 endpoint {settings.endpoint!r} must look like https://host[:port]")
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10, read=120),
        retries=urllib3.Retry(total=3, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504]),
        cert_reqs="CERT_REQUIRED", ca_certs=settings.ca_file or certifi.where(),
    )
    client = Minio(url.netloc, access_key=settings.access_key, secret_key=settings.secret_key,
                   secure=url.scheme == "https", region=settings.region, http_client=http)
    if not settings.path_style:
        client.enable_virtual_style_endpoint()
    return client


class _Pipe:
    """A bounded chunk queue from our writer to the uploader thread (pull side for the SDK)."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)
        self._rest = b""
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        out = bytearray(self._rest)
        self._rest = b""
        while not self._eof and (size < 0 or len(out) < size):
            item = self.chunks.get()
            if isinstance(item, BaseException):
                raise item  # the writer failed: the SDK aborts the multipart upload
            if item is None:
                self._eof = True
                break
            out += item
        if size >= 0 and len(out) > size:
            self._rest = bytes(out[size:])
            del out[size:]
        return bytes(out)


class _UploadAbortedError(Exception):
    pass


class _S3Writer:
    def __init__(self, pipe: _Pipe, failed: threading.Event) -> None:
        self._pipe, self._failed, self._buf = pipe, failed, bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        if len(self._buf) >= 1 << 20:
            self.flush()
        return len(data)

    def flush(self) -> None:
        while self._buf:
            if self._failed.is_set():
                raise StoreError("the upload failed (see the error that follows)")
            try:
                self._pipe.chunks.put(bytes(self._buf), timeout=1)
            except queue.Full:
                continue
            self._buf.clear()


@dataclass
class S3Store:
    settings: S3Settings
    prefix: str = ""

    def __post_init__(self) -> None:
        self._sdk = _client(self.settings)

    @property
    def where(self) -> str:
        return f"s3://{self.settings.bucket}/{self.prefix}".rstrip("/")

    def _key(self, name: str) -> str:
        return f"{self.prefix.strip('/')}/{name}".lstrip("/")

    def child(self, name: str) -> S3Store:
        return S3Store(self.settings, self._key(name))

    def _call(self, what: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        from minio.error import S3Error

        try:
            return fn(*args, **kwargs)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                return None
            raise StoreError(f"S3 {what} at {self.where} failed: {exc.code}: {exc.message}") from exc
        except Exception as exc:  # urllib3 / socket errors: the store is unreachable
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise StoreError(f"S3 {what} at {self.where} failed: {detail}") from exc

    def prepare(self) -> None:
        if not self._call("bucket check", self._sdk.bucket_exists, self.settings.bucket):
            raise StoreError(f"bucket {self.settings.bucket!r} does not exist at {self.settings.endpoint}")

    @contextlib.contextmanager
    def writer(self, name: str) -> Iterator[BinaryIO]:
        pipe, failed = _Pipe(), threading.Event()
        errors: list[BaseException] = []

        def upload() -> None:
            try:
                # one part in flight: the SDK's parallel mode queues parts without bound, so memory
                # would grow with the database whenever the store is slower than the dump
                self._call("upload", self._sdk.put_object, self.settings.bucket, self._key(name), pipe, -1,
                           part_size=PART_SIZE, num_parallel_uploads=1)
            except BaseException as exc:
                errors.append(exc)
                failed.set()
                with contextlib.suppress(queue.Empty):
                    while True:  # unblock a writer waiting on a full queue
                        pipe.chunks.get_nowait()

        thread = threading.Thread(target=upload, name=f"upload-{name}", daemon=True)
        thread.start()
        out = _S3Writer(pipe, failed)
        try:
            yield out  # type: ignore[misc]
            out.flush()
            self._put_end(pipe, failed, None)
        except BaseException as exc:
            self._put_end(pipe, failed, _UploadAbortedError(str(exc)))
            thread.join()
            if errors and not isinstance(errors[0], _UploadAbortedError) and isinstance(exc, StoreError):
                raise errors[0] from exc
            raise
        thread.join()
        if errors:
            raise errors[0]

    @staticmethod
    def _put_end(pipe: _Pipe, failed: threading.Event, item: BaseException | None) -> None:
        while not failed.is_set():
            try:
                pipe.chunks.put(item, timeout=1)
                return
            except queue.Full:
                continue

    @contextlib.contextmanager
    def reader(self, name: str) -> Iterator[BinaryIO]:
        resp = self._call("download", self._sdk.get_object, self.settings.bucket, self._key(name))
        if resp is None:
            raise StoreError(f"{self.where}/{name} does not exist")
        try:
            yield resp
        finally:
            resp.close()
            resp.release_conn()

    def size(self, name: str) -> int | None:
        stat = self._call("stat", self._sdk.stat_object, self.settings.bucket, self._key(name))
        return None if stat is None else int(stat.size)

    def get_bytes(self, name: str) -> bytes | None:
        resp = self._call("download", self._sdk.get_object, self.settings.bucket, self._key(name))
        if resp is None:
            return None
        try:
            return bytes(resp.read())
        finally:
            resp.close()
            resp.release_conn()

    def put_bytes(self, name: str, data: bytes) -> None:
        import io

        self._call("upload", self._sdk.put_object, self.settings.bucket, self._key(name), io.BytesIO(data), len(data))

    def _list(self) -> list[str]:
        base = self._key("")
        objects = self._call("list", self._sdk.list_objects, self.settings.bucket, prefix=base)
        return [str(o.object_name)[len(base):] for o in self._call("list", list, objects or [])]

    def names(self) -> list[str]:
        return sorted(n for n in self._list() if n and not n.endswith("/"))

    def children(self) -> list[str]:
        return sorted(n.rstrip("/") for n in self._list() if n.endswith("/"))

    def delete(self, name: str) -> None:
        self._call("delete", self._sdk.remove_object, self.settings.bucket, self._key(name))


def open_store(url: str, env: Mapping[str, str] | None = None) -> Store:
    """`s3://bucket/prefix` (settings from env) or a filesystem path."""
    if url.startswith("s3://"):
        parsed = urlparse(url)
        if not parsed.netloc:
            raise StoreError(f"{url!r} names no bucket (s3://bucket/prefix)")
        return S3Store(S3Settings.from_env(parsed.netloc, env), parsed.path.strip("/"))
    return LocalStore(Path(url))


def delete_tree(store: Store) -> int:
    """Delete a backup's objects/files: the manifest FIRST (so a half-deleted backup is never "good")."""
    names = store.names()
    ordered = sorted(names, key=lambda n: n != "manifest.json")
    for name in ordered:
        store.delete(name)
    if isinstance(store, LocalStore) and store.root.is_dir():
        with contextlib.suppress(OSError):
            store.root.rmdir()
    return len(ordered)
