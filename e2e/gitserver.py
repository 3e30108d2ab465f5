"""A Git repository served over smart HTTP on 127.0.0.1: `git http-backend` (Git's own server, as
CGI) behind a small threaded HTTP server. Flux's source-controller clones from it; tests commit and
push to it from a working clone.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import yaml

GIT_ENV = {"GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.invalid", "GIT_COMMITTER_NAME": "e2e",
           "GIT_COMMITTER_EMAIL": "e2e@example.invalid", "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True,
                          timeout=60).stdout.strip()


class _Handler(http.server.BaseHTTPRequestHandler):
    root: Path

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1", "REMOTE_USER": "e2e", "REMOTE_ADDR": "127.0.0.1",
            "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(length),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=120)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = done.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status if done.returncode == 0 else 500)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


class GitServer:
    """Bare repository `repo.git` served at `url`, and a working clone in `work` to commit from."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="coai-git-"))
        self.root = self.base / "srv"
        self.bare = self.root / "repo.git"
        self.work = self.base / "work"
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/repo.git"

    def start(self) -> GitServer:
        self.root.mkdir(parents=True, exist_ok=True)
        _git("init", "--bare", "--initial-branch=main", str(self.bare), cwd=self.base)
        _git("config", "http.receivepack", "true", cwd=self.bare)
        handler = type("Handler", (_Handler,), {"root": self.root})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        _git("clone", self.url, str(self.work), cwd=self.base)
        _git("checkout", "-B", "main", cwd=self.work)
        return self

    def commit(self, files: dict[str, object | None], message: str) -> str:
        """Write (or with None, delete) files in the clone, commit, push; returns the commit sha."""
        for name, content in files.items():
            target = self.work / name
            if content is None:
                target.unlink(missing_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            text = content if isinstance(content, str) else yaml.safe_dump_all(
                content if isinstance(content, list) else [content], sort_keys=False)
            target.write_text(text)
        _git("add", "-A", cwd=self.work)
        _git("commit", "--allow-empty", "-m", message, cwd=self.work)
        _git("push", "origin", "main", cwd=self.work)
        return _git("rev-parse", "HEAD", cwd=self.work)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        shutil.rmtree(self.base, ignore_errors=True)
