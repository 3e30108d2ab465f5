"""The guide-line stand-in app as its image runs it (`python -m standin`, env only) on a real MariaDB."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from e2e.helpers import wait_for

from coai_operator.engine import validate
from coai_operator.engine.dbconfig import DbConfig
from tests.mariadb import engine_env, query

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_standin_process_serves_health_and_schema_version_from_the_database(db_config: DbConfig, tmp_path: Path,
                                                                             monkeypatch) -> None:
    query(db_config, "CREATE TABLE schema_migrations (version VARCHAR(255) PRIMARY KEY,"
                     " applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, description TEXT)")
    query(db_config, "INSERT INTO schema_migrations (version, applied_at) VALUES"
                     " ('1.8.0', '2024-01-01 00:00:00'), ('1.9.0', '2024-02-01 00:00:00')")
    port = _free_port()
    env = {**os.environ, **engine_env(db_config), "SERVER_PORT": str(port), "STORAGE_DIR": str(tmp_path),
           "COAI_STANDIN_VERSION": "1.9.0", "PYTHONPATH": str(REPO / "e2e")}
    # The image's command, with the package on PYTHONPATH as in the image (/app/standin).
    proc = subprocess.Popen([sys.executable, "-m", "standin"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        health = wait_for(lambda: _get_json(url + "/health"), timeout=30, interval=0.2, message="stand-in up")
        assert health == {"status": True, "version": "1.9.0", "schemaVersion": "1.9.0",
                          "message": "database reachable"}
        # What the operator's validation Job runs, with the same MYSQL_* environment.
        for key, value in engine_env(db_config).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("TEST_API_KEY", "sk-validate")
        settings = validate.Settings(base_url=url, timeout=5, retry_interval=0.2)
        report = validate.validate(["database", "health", "chat", "files"], [], settings)
        assert (report["passed"], report["failed"]) == (4, 0), report
        assert len(list((tmp_path / "uploads").iterdir())) == 1
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f"CoAI 1.9.0 stand-in listening on :{port}" in out
    assert "GET /health" in out  # request log on stdout, as `kubectl logs` shows it
