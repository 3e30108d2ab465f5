"""A STAND-IN for the CoAI app of the migration guide's 1.6 - 2.0 line, which has no public image.

It answers the endpoints the guide's validation script calls, on the guide's schema:
- `GET /health`: 200 when the database answers `SELECT 1` (or when no MYSQL_HOST is configured,
  as for a host-side health server), else 503 with the error;
- `GET /v1/system/version`: the version it was built for and the schema version it finds;
- `POST /v1/chat/completions` (`Authorization: Bearer <key>`): an OpenAI-shaped canned answer;
- `POST /v1/files` (multipart `file`, `purpose`): stores the file under $STORAGE_DIR/uploads/.
Settings come from the app's own environment names (SERVER_PORT, MYSQL_HOST, MYSQL_PORT,
MYSQL_USER, MYSQL_PASSWORD, MYSQL_DB / MYSQL_DATABASE), like the operator renders them.
It never touches the schema: migrations are the operator's job, not the app's.

Standard library + pymysql only: the image copies this package and nothing else of the repo.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import pymysql

MAX_UPLOAD = 16 << 20
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Settings:
    version: str
    port: int = 8000
    storage: Path = Path("/storage")
    db: Mapping[str, Any] | None = None  # pymysql.connect() arguments; None: no database configured

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        db = None
        if env.get("MYSQL_HOST"):
            db = {"host": env["MYSQL_HOST"], "port": int(env.get("MYSQL_PORT") or 3306),
                  "user": env.get("MYSQL_USER") or "root", "password": env.get("MYSQL_PASSWORD", ""),
                  "database": env.get("MYSQL_DB") or env.get("MYSQL_DATABASE") or "chatnio",
                  "connect_timeout": 5, "read_timeout": 10}
        return cls(version=env.get("COAI_STANDIN_VERSION", "unknown"), port=int(env.get("SERVER_PORT") or 8000),
                   storage=Path(env.get("STORAGE_DIR") or "/storage"), db=db)


def database_state(settings: Settings) -> tuple[bool, str | None, str]:
    """(healthy, schema version from schema_migrations or None, message)."""
    if settings.db is None:
        return True, None, "no database configured"
    try:
        conn = pymysql.connect(**settings.db)
    except pymysql.err.MySQLError as exc:
        return False, None, f"database unreachable: {exc.args[-1] if exc.args else exc}"
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            try:
                cur.execute("SELECT version FROM schema_migrations ORDER BY applied_at DESC, version DESC LIMIT 1")
                row = cur.fetchone()
            except pymysql.err.MySQLError:
                row = None  # no migrations table yet: an untracked (fresh or 1.6) schema
        return True, (str(row[0]) if row else None), "database reachable"
    except pymysql.err.MySQLError as exc:
        return False, None, f"database error: {exc.args[-1] if exc.args else exc}"
    finally:
        conn.close()


def chat_answer(request: Mapping[str, Any], version: str) -> dict[str, Any]:
    model = str(request.get("model") or "gpt-3.5-turbo")
    content = f"Hello from the CoAI {version} stand-in."
    tokens = len(content.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": 1 + tokens},
    }


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Form fields of a multipart/form-data body: name -> (filename or None, bytes)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        raise ValueError("expected multipart/form-data")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def store_upload(storage: Path, filename: str, data: bytes, purpose: str) -> dict[str, Any]:
    file_id = f"file-{uuid.uuid4().hex[:24]}"
    safe = SAFE_NAME.sub("_", Path(filename).name) or "upload"
    target = storage / "uploads" / f"{file_id}-{safe}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
            "filename": filename, "purpose": purpose}


class Handler(http.server.BaseHTTPRequestHandler):
    settings: Settings  # set on the subclass that make_server() creates
    server_version = "coai-standin"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/health/"):
            healthy, schema, message = database_state(self.settings)
            self._json(200 if healthy else 503, {"status": healthy, "version": self.settings.version,
                                                 "schemaVersion": schema, "message": message})
        elif path == "/v1/system/version":
            _, schema, _ = database_state(self.settings)
            self._json(200, {"version": self.settings.version, "schemaVersion": schema, "standIn": True})
        else:
            self._json(404, {"status": False, "error": f"no route {path}"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ("/v1/chat/completions", "/v1/files"):
            self._json(404, {"status": False, "error": f"no route {path}"})
            return
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth.removeprefix("Bearer ").strip():
            self._json(401, {"error": {"message": "missing API key (Authorization: Bearer ...)"}})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD:
            self._json(413, {"error": {"message": f"body over {MAX_UPLOAD} bytes"}})
            return
        body = self.rfile.read(length)
        try:
            if path == "/v1/chat/completions":
                self._json(200, chat_answer(json.loads(body or b"{}"), self.settings.version))
                return
            fields = parse_multipart(self.headers.get("Content-Type", ""), body)
            filename, data = fields.get("file", (None, b""))
            if not filename:
                raise ValueError("no file part")
            purpose = fields.get("purpose", (None, b"chat"))[1].decode(errors="replace")
            self._json(200, store_upload(self.settings.storage, filename, data, purpose))
        except (ValueError, json.JSONDecodeError) as exc:
            self._json(400, {"error": {"message": str(exc)}})

    def _json(self, status: int, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("COAI_STANDIN_QUIET") != "1":
            super().log_message(format, *args)


def make_server(settings: Settings, host: str = "0.0.0.0") -> http.server.ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"settings": settings})
    return http.server.ThreadingHTTPServer((host, settings.port), handler)


@contextmanager
def serving(settings: Settings, host: str = "127.0.0.1") -> Iterator[str]:
    """The app in a thread of this process (tests, host-side servers); yields its base URL."""
    server = make_server(settings, host)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    settings = Settings.from_env()
    server = make_server(settings)
    # As PID 1 in its container the process ignores SIGTERM unless it handles it, and every stop
    # (maintenance, a rollout) waited the whole 30 s grace period for the SIGKILL. The real app
    # (Go) exits on SIGTERM; so does its stand-in.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"CoAI {settings.version} stand-in listening on :{settings.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
