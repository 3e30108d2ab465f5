"""A real S3-compatible server for tests and benchmarks: versitygw over a temp directory, on loopback.

Built by e2e/localcluster/build_versitygw.py (e2e/setup.sh runs it). Credentials reach the
gateway through its environment (ROOT_ACCESS_KEY_ID / ROOT_SECRET_ACCESS_KEY), never argv.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from e2e.localcluster.build_versitygw import binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    root: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=_free_port)
    access_key: str = field(default_factory=lambda: "coai" + secrets.token_hex(6))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """What the engine needs to reach this server (endpoint overridable for pods)."""
        return {"COAI_S3_ENDPOINT": endpoint or self.endpoint, "COAI_S3_REGION": "us-east-1",
                "COAI_S3_PATH_STYLE": "true", "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def start(self) -> S3Server:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ROOT_ACCESS_KEY_ID": self.access_key, "ROOT_SECRET_ACCESS_KEY": self.secret_key}
        log = (self.root.parent / f"versitygw-{self.port}.log").open("ab")
        self.proc = subprocess.Popen([str(binary()), "--port", f"{self.host}:{self.port}", "--quiet",
                                      "--health", "/health", "posix", str(self.root)],
                                     env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the one readiness poll of this layer (no e2e helpers here)
            if self.proc.poll() is not None:
                raise RuntimeError(f"versitygw exited with {self.proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("versitygw did not become ready in 30s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self):  # type: ignore[no-untyped-def]
        from minio import Minio

        return Minio(f"{self.host}:{self.port}", access_key=self.access_key, secret_key=self.secret_key,
                     secure=False, region="us-east-1")

    def make_bucket(self) -> str:
        name = f"coai-{secrets.token_hex(4)}"
        self.client().make_bucket(name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(o.object_name for o in self.client().list_objects(bucket, prefix=prefix, recursive=True))


def require_versitygw() -> None:
    if not binary().is_file():
        pytest.skip(f"versitygw not built ({binary()}): run e2e/localcluster/build_versitygw.py (e2e/setup.sh does)")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    require_versitygw()
    server = S3Server(tmp_path_factory.mktemp("versitygw") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    return s3_server.make_bucket()
