"""The guide-line stand-in app (e2e/standin) answers what the validation Job asks, in the shapes it checks.

The checks are the operator's own (`coai_operator.engine.validate`), run against the app in a thread.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from e2e.standin.app import Settings, parse_multipart, serving

from coai_operator.engine import validate


@pytest.fixture
def app(tmp_path: Path):
    with serving(Settings(version="1.9.0", port=0, storage=tmp_path)) as url:
        yield url


def _settings(url: str) -> validate.Settings:
    return validate.Settings(base_url=url, timeout=2, retry_interval=0.2)


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_settings_come_from_the_apps_env_names() -> None:
    s = Settings.from_env({"SERVER_PORT": "8123", "MYSQL_HOST": "db", "MYSQL_PORT": "3307", "MYSQL_USER": "u",
                           "MYSQL_PASSWORD": "p", "MYSQL_DATABASE": "guide", "COAI_STANDIN_VERSION": "2.0.0"})
    assert (s.port, s.version) == (8123, "2.0.0")
    assert s.db == {"host": "db", "port": 3307, "user": "u", "password": "p", "database": "guide",
                    "connect_timeout": 5, "read_timeout": 10}
    # MYSQL_DB (what the operator renders) wins over MYSQL_DATABASE; no host: no database.
    assert Settings.from_env({"MYSQL_HOST": "db", "MYSQL_DB": "a", "MYSQL_DATABASE": "b"}).db["database"] == "a"
    default = Settings.from_env({})
    assert (default.port, default.db, default.storage) == (8000, None, Path("/storage"))


def test_validation_checks_pass_against_the_standin(app: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TEST_API_KEY", "sk-anything")
    settings = _settings(app)
    assert "HTTP 200" in validate.check_health(settings)
    assert "model answered" in validate.check_chat(settings)
    assert "file id file-" in validate.check_files(settings)
    [stored] = (tmp_path / "uploads").iterdir()
    assert stored.read_bytes() == b"This is a test file\n"
    assert stored.name.endswith("-coai-validation.txt")


def test_version_endpoint_names_the_version_and_says_it_is_a_standin(app: str) -> None:
    assert _get(app + "/v1/system/version") == (200, {"version": "1.9.0", "schemaVersion": None, "standIn": True})


def test_chat_and_files_refuse_a_request_without_an_api_key(app: str, monkeypatch) -> None:
    monkeypatch.setenv("TEST_API_KEY", "")
    request = urllib.request.Request(app + "/v1/chat/completions", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 401
    request = urllib.request.Request(app + "/v1/files", data=b"x", method="POST",
                                     headers={"Authorization": "Bearer "})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 401


def test_bad_bodies_are_400_and_unknown_routes_404(app: str) -> None:
    auth = {"Authorization": "Bearer sk-x"}
    for path, body, headers in (("/v1/chat/completions", b"{not json", {}),
                                ("/v1/files", b"plain", {"Content-Type": "text/plain"})):
        request = urllib.request.Request(app + path, data=body, method="POST", headers={**auth, **headers})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)
        assert err.value.code == 400
    assert _get(app + "/v1/chat")[0] == 404


def test_health_is_503_with_the_reason_when_the_database_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = {"host": "127.0.0.1", "port": port, "user": "u", "password": "p", "database": "d", "connect_timeout": 2}
    with serving(Settings(version="2.0.0", port=0, storage=tmp_path, db=db)) as url:
        status, body = _get(url + "/health")
        assert status == 503
        assert body["status"] is False and "database unreachable" in body["message"]
        with pytest.raises(validate.Fail, match="/health"):  # 503 is retried until the check's deadline
            validate.check_health(_settings(url))


def test_multipart_parser_keeps_file_name_and_bytes() -> None:
    body, content_type = validate._multipart({"purpose": "chat"}, "file", "a b.txt", b"\x00\x01data")
    fields = parse_multipart(content_type, body)
    assert fields == {"purpose": (None, b"chat"), "file": ("a b.txt", b"\x00\x01data")}


def test_the_standin_exits_on_sigterm_as_pid_1_must(tmp_path: Path) -> None:
    """Without a handler, PID 1 ignores SIGTERM: each stop of a stand-in pod waited its whole grace
    period (30 s) for the SIGKILL, in every maintenance and rollout of the e2e suite."""
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", "SERVER_PORT": str(port), "STORAGE_DIR": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "e2e.standin"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert "listening" in (proc.stdout.readline() if proc.stdout else "")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
