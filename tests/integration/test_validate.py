"""validate against a real MariaDB and a tiny local HTTP server standing in for the app."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from coai_operator.engine.dbconfig import DbConfig

from .engine_support import EngineRun, create_schema, populate, query, run_engine

pytestmark = pytest.mark.integration

API_KEY = "sk-test-validate-0123456789"


class FakeApp:
    def __init__(self) -> None:
        self.health_status = 200
        self.health_unavailable = 0  # answer 503 this many times first
        self.chat_status = 200
        self.files_status = 200
        self.seen: list[dict[str, Any]] = []


def _handler(app: FakeApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health" and app.health_unavailable > 0:
                app.health_unavailable -= 1
                self._answer(503, {"status": False})
            elif self.path == "/health":
                self._answer(app.health_status, {"status": app.health_status == 200})
            else:
                self._answer(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            app.seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                             "type": self.headers.get("Content-Type"), "body": body})
            if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                self._answer(401, {"error": "bad key"})
            elif self.path == "/v1/chat/completions":
                payload = json.loads(body)
                assert payload["messages"][0]["content"] == "Hello"
                self._answer(app.chat_status, {"choices": [{"message": {"role": "assistant", "content": "Hi!"}}]})
            elif self.path == "/v1/files":
                ok = b'name="file"; filename="coai-validation.txt"' in body and b"This is a test file" in body
                self._answer(app.files_status if ok else 400, {"id": "file-123", "object": "file"})
            else:
                self._answer(404, {"error": "not found"})

    return Handler


@pytest.fixture
def fake_app() -> Iterator[tuple[str, FakeApp]]:
    app = FakeApp()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(app))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", app
    server.shutdown()
    server.server_close()


@pytest.fixture
def manifest(db_config: DbConfig, db_env: dict[str, str], tmp_path: Path) -> Path:
    create_schema(db_config)
    populate(db_config)
    run = run_engine(db_env, "backup", "--dir", str(tmp_path / "bk"))
    assert run.returncode == 0, run.stderr
    return tmp_path / "bk" / "manifest.json"


def _statuses(checks: list[dict[str, Any]]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in checks}


def _failed_report(run: EngineRun) -> dict[str, Any]:
    """The full report of a failed validation: in the final line if the CLI carries it, else on stderr."""
    if "checks" in run.result:
        return run.result
    line = next(line for line in run.stderr.splitlines() if "validation report: " in line)
    return json.loads(line.split("validation report: ", 1)[1])


def test_all_checks_pass(db_env: dict[str, str], fake_app: tuple[str, FakeApp], manifest: Path) -> None:
    base, app = fake_app
    run = run_engine({**db_env, "TEST_API_KEY": API_KEY}, "validate", "--base-url", base, "--manifest", str(manifest))
    assert run.returncode == 0, run.stderr
    assert run.result["ok"] is True
    assert _statuses(run.result["checks"]) == dict.fromkeys(
        ("database", "health", "chat", "files", "dataIntegrity"), "passed")
    assert run.result["failed"] == 0
    for check in run.result["checks"]:
        assert set(check) == {"name", "status", "message", "durationMs"}
        assert isinstance(check["durationMs"], int)
    assert [s["path"] for s in app.seen] == ["/v1/chat/completions", "/v1/files"]
    assert app.seen[1]["type"].startswith("multipart/form-data; boundary=")
    assert API_KEY not in run.stdout + run.stderr
    assert db_env["MYSQL_PASSWORD"] not in run.stdout + run.stderr


@pytest.mark.parametrize(("broken", "attr"), [("health", "health_status"), ("chat", "chat_status"),
                                              ("files", "files_status")])
def test_a_failing_endpoint_fails_its_check(db_env: dict[str, str], fake_app: tuple[str, FakeApp], manifest: Path,
                                            broken: str, attr: str) -> None:
    base, app = fake_app
    setattr(app, attr, 503)
    run = run_engine({**db_env, "TEST_API_KEY": API_KEY}, "validate", "--base-url", base, "--manifest", str(manifest),
                     "--timeout", "1")
    assert run.returncode == 1
    assert run.result["ok"] is False
    assert run.result["reason"] == "ValidationFailed"
    assert broken in run.result["error"] and "503" in run.result["error"]
    statuses = _statuses(_failed_report(run)["checks"])
    assert statuses.pop(broken) == "failed"
    assert set(statuses.values()) == {"passed"}


def test_switched_off_and_unconfigured_checks_are_skipped(db_env: dict[str, str], fake_app: tuple[str, FakeApp],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_API_KEY", raising=False)
    base, app = fake_app
    run = run_engine(db_env, "validate", "--base-url", base, "--skip", "files")
    assert run.returncode == 0, run.stderr
    checks = {c["name"]: c for c in run.result["checks"]}
    assert checks["database"]["status"] == "passed"
    assert checks["health"]["status"] == "passed"
    assert checks["chat"] == {**checks["chat"], "status": "skipped", "message": "skipped: no TEST_API_KEY"}
    assert checks["files"]["message"] == "switched off"
    assert checks["dataIntegrity"]["message"] == "not configured: no --manifest or --row-counts-env"
    assert app.seen == []

    only = run_engine(db_env, "validate", "--checks", "database")
    assert only.returncode == 0, only.stderr
    assert _statuses(only.result["checks"]) == {"database": "passed", "health": "skipped", "chat": "skipped",
                                                 "files": "skipped", "dataIntegrity": "skipped"}


def test_http_checks_retry_while_the_app_settles(db_env: dict[str, str], fake_app: tuple[str, FakeApp]) -> None:
    base, app = fake_app
    app.health_unavailable = 2
    run = run_engine(db_env, "validate", "--checks", "health", "--base-url", base, "--timeout", "20",
                     "--retry-interval", "0.2")
    assert run.returncode == 0, run.stderr
    assert app.health_unavailable == 0
    app.health_status = 404  # not retryable: fails at once
    started = time.monotonic()
    run = run_engine(db_env, "validate", "--checks", "health", "--base-url", base, "--timeout", "20")
    assert run.returncode == 1
    assert "HTTP 404" in run.result["error"]
    assert time.monotonic() - started < 15


def test_unreachable_app_fails_health(db_env: dict[str, str]) -> None:
    run = run_engine(db_env, "validate", "--checks", "health", "--base-url", "http://127.0.0.1:9", "--timeout", "2")
    assert run.returncode == 1
    assert "health" in run.result["error"]


def test_data_integrity_rule(db_config: DbConfig, db_env: dict[str, str], manifest: Path) -> None:
    def integrity(*extra: str) -> EngineRun:
        return run_engine(db_env, "validate", "--checks", "dataIntegrity", "--manifest", str(manifest), *extra)

    # New tables and new rows are fine (>=); --exact demands equality.
    query(db_config, "CREATE TABLE roles (id INT PRIMARY KEY)")
    query(db_config, "INSERT INTO users (username) VALUES ('new after migration')")
    assert integrity().returncode == 0
    exact = integrity("--exact")
    assert exact.returncode == 1
    assert "users has 7 rows, backup had 6" in exact.result["error"]

    # Losing rows fails, unless the table is exempted.
    query(db_config, "DELETE FROM audit WHERE id <= 2")
    lost = integrity()
    assert lost.returncode == 1
    assert "audit has 16 rows, backup had 18" in lost.result["error"]
    assert integrity("--ignore-tables", "audit").returncode == 0

    # A dropped table fails unless a migration is allowed to drop it.
    query(db_config, "DROP TABLE audit")
    assert "audit was dropped" in integrity().result["error"]
    assert integrity("--allow-dropped", "audit").returncode == 0


def test_unknown_check_is_a_clear_error(db_env: dict[str, str]) -> None:
    run = run_engine(db_env, "validate", "--checks", "database,bogus")
    assert run.returncode == 1
    assert "unknown check(s) bogus" in run.result["error"]
