"""The real CoAI server as a host process, with what it needs, for the integration layer.

- `RealApp`: the `chat` binary of a version (e2e/localcluster/build_coai.py builds and caches it)
  in a temporary working directory (config/, logs/, storage/), on 127.0.0.1, against a real
  MariaDB and a real redis-server, with the tiktoken files so chat never downloads anything.
- `redis_server`: Debian's redis-server on a free loopback port.
- `StandInUpstream`: stands in for an LLM provider (none can exist here): an OpenAI-compatible
  chat endpoint that streams SSE, because CoAI always asks its upstream for a stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from e2e.helpers import wait_for

from coai_operator.engine.dbconfig import DbConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e" / "localcluster"))
import build_coai

sys.path.pop(0)

STAND_IN_ANSWER = "Hello from the stand-in upstream"
STAND_IN_KEY = "sk-stand-in-upstream-key"
MODEL = "gpt-3.5-turbo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chat_binary(version: str) -> Path:
    """The build directory of `version`, or skip when it cannot be built here (no Go, no source)."""
    try:
        return build_coai.ensure_built(version)
    except (build_coai.SourceError, subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot build CoAI {version}: {exc}")


# --- redis ---------------------------------------------------------------------------------------

def _redis_binary() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else "")
    if not found:
        pytest.skip("redis-server is not installed (e2e/setup.sh installs it)")
    return found


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private redis-server (no persistence) on a free loopback port, one per test: the app
    caches users and rate limits there; yields the port."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([_redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: proc.poll() is None and _redis_ping(port), timeout=30, message="redis-server answers PING")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- the stand-in upstream -----------------------------------------------------------------------

class StandInUpstream:
    """OpenAI-compatible /v1/chat/completions answering in SSE chunks (or JSON without stream)."""

    def __init__(self, bind: str = "127.0.0.1") -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail = False  # answer 500 (to make a chat check fail on purpose)
        self.server = ThreadingHTTPServer((bind, 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                upstream.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if upstream.fail:
                    self._json(500, {"error": {"message": "stand-in upstream told to fail", "type": "server_error"}})
                    return
                if self.headers.get("Authorization") != f"Bearer {STAND_IN_KEY}":
                    self._json(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
                    return
                if not body.get("stream"):
                    self._json(200, {"id": "chatcmpl-stand-in", "object": "chat.completion", "model": MODEL,
                                     "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                         "role": "assistant", "content": STAND_IN_ANSWER}}]})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                for i, word in enumerate(STAND_IN_ANSWER.split(" ")):
                    chunk = {"id": "chatcmpl-stand-in", "object": "chat.completion.chunk", "model": MODEL,
                             "choices": [{"index": 0, "finish_reason": None,
                                          "delta": {"content": (" " if i else "") + word}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                done = {"id": "chatcmpl-stand-in", "object": "chat.completion.chunk", "model": MODEL,
                        "choices": [{"index": 0, "finish_reason": "stop", "delta": {}}]}
                self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
                self.wfile.flush()
                self.close_connection = True

        return Handler


@pytest.fixture(scope="session")
def stand_in_upstream() -> Iterator[StandInUpstream]:
    upstream = StandInUpstream()
    upstream.thread.start()
    try:
        yield upstream
    finally:
        upstream.server.shutdown()
        upstream.server.server_close()


# --- the app ---------------------------------------------------------------------------------------

class RealApp:
    """One working directory of the real app; start/stop the binary of any version in it."""

    def __init__(self, workdir: Path, db: DbConfig, redis_port: int, *, serve_static: bool = False) -> None:
        self.workdir = workdir
        self.db = db
        self.redis_port = redis_port
        self.serve_static = serve_static
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.version: str | None = None
        for sub in ("config", "logs", "storage"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_prefix(self) -> str:
        return "/api" if self.serve_static else ""

    @property
    def health_url(self) -> str:
        return self.base_url + ("/api/" if self.serve_static else "/")

    @property
    def config_yaml(self) -> Path:
        return self.workdir / "config" / "config.yaml"

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir),
            "SERVER_PORT": str(self.port), "SERVE_STATIC": "true" if self.serve_static else "false",
            "MYSQL_HOST": self.db.host, "MYSQL_PORT": str(self.db.port), "MYSQL_USER": self.db.user,
            "MYSQL_PASSWORD": self.db.password, "MYSQL_DB": self.db.database, "MYSQL_DATABASE": self.db.database,
            "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(self.redis_port), "REDIS_DB": "0",
            # Offline: the tokenizer files are served locally, as in an air-gapped cluster.
            "TIKTOKEN_CACHE_DIR": str(build_coai.tiktoken_dir()),
        }

    def start(self, version: str) -> None:
        build = chat_binary(version)
        # The app copies ./config.example.yaml to config/config.yaml when that is missing.
        shutil.copyfile(build / "config.example.yaml", self.workdir / "config.example.yaml")
        log = (self.workdir / f"chat-{version}.log").open("ab")
        self.proc = subprocess.Popen([str(build / "chat")], cwd=self.workdir, env=self.env(),
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.version = version
        wait_for(self._healthy, timeout=120, message=f"CoAI {version} answers {self.health_url}")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"chat {self.version} exited with {self.proc.returncode}: {self.log_tail()}")
        with urllib.request.urlopen(self.health_url, timeout=5) as answer:
            return answer.status == 200

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the app has no signal handler: it ends at once
            self.proc.wait(timeout=30)
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        logs = sorted(self.workdir.glob("chat-*.log"))
        text = logs[-1].read_text(errors="replace") if logs else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def real_app(workdir: Path, db: DbConfig, redis_port: int, version: str, *,
             serve_static: bool = False) -> Iterator[RealApp]:
    app = RealApp(workdir, db, redis_port, serve_static=serve_static)
    app.start(version)
    try:
        yield app
    finally:
        app.stop()
