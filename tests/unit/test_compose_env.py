"""import-compose reads compose files as `docker compose` does: .env, environment, ${VAR:-d},
${VAR:?e}, every unresolved variable listed, nothing written; healthcheck, memory, published port.

The guide's docker-compose-v2.yml is embedded (users cloning the repo have no seed); when the seed
is present ($COAI_SHARED, default ../shared) the copy is checked against it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coai_operator.compose import import_compose
from coai_operator.compose_env import (
    InterpolationError,
    interpolate,
    interpolate_text,
    parse_dotenv,
    resolve_service_env,
)

REPO = Path(__file__).resolve().parents[2]
SEED = Path(os.environ.get("COAI_SHARED", REPO.parent / "shared")) / "seeds" / "000_9c15eefc9f41e2db.txt"
GUIDE_V2 = """\
version: '3.8'
services:
  chatnio:
    image: programzmh/chatnio:v2.0.0
    environment:
      # Updated environment variables
      - SECRET=${SECRET}
      - RBAC_ENABLED=true
      - API_VERSION=v2
    volumes:
      # New volume structure
      - storage:/app/storage
      - logs:/app/logs
      - certs:/app/certs  # New for v2.0
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost:8000/health"]
      interval: 30s
      timeout: 10s
      retries: 3
    deploy:
      resources:
        limits:
          memory: 2G
        reservations:
          memory: 1G
"""


def test_embedded_copy_matches_the_guide() -> None:
    if not SEED.is_file():
        pytest.skip(f"seed not available at {SEED}")
    text = SEED.read_text()
    block = text[text.index("# docker-compose-v2.yml") + len("# docker-compose-v2.yml\n"):]
    assert block.startswith(GUIDE_V2.split("    deploy:")[0])
    assert "memory: 2G" in block[:1200] and "memory: 1G" in block[:1200]


def _run_cli(tmp_path: Path, compose: str, env: dict[str, str],
             dotenv: str | None = None) -> subprocess.CompletedProcess:
    (tmp_path / "docker-compose.yml").write_text(compose)
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET", "DB_PASSWORD", "PORT")}
    return subprocess.run([sys.executable, "-m", "coai_operator.cli", "import-compose",
                           str(tmp_path / "docker-compose.yml"), "--name", "chat"],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_guide_v2_secret_from_the_environment_not_the_literal(tmp_path: Path) -> None:
    done = _run_cli(tmp_path, GUIDE_V2, {"SECRET": "jwt-secret-from-env-0123456789"})
    assert done.returncode == 0, done.stderr
    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(done.stdout)}
    assert docs["Secret/chat-app"]["stringData"]["SECRET"] == "jwt-secret-from-env-0123456789"
    assert "${SECRET}" not in done.stdout
    spec = docs["CoaiInstance/chat"]["spec"]
    assert spec["version"] == "2.0.0"
    assert spec["healthPath"] == "/health"
    assert spec["resources"] == {"limits": {"memory": "2Gi"}, "requests": {"memory": "1Gi"}}
    assert spec["config"] == {"RBAC_ENABLED": "true", "API_VERSION": "v2"}


def test_guide_v2_without_secret_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    done = _run_cli(tmp_path, GUIDE_V2, {})
    assert done.returncode == 1
    assert done.stdout == ""
    assert "nothing written" in done.stderr and "SECRET is not set" in done.stderr


def test_dotenv_beside_the_file_and_environment_precedence(tmp_path: Path) -> None:
    compose = GUIDE_V2.replace("- API_VERSION=v2",
                               "- API_VERSION=${API:-v2}\n      - DB_PASSWORD=${DB_PASSWORD:?set DB_PASSWORD}")
    compose = compose.replace("    healthcheck:", "    ports: [\"${PORT:-8080}:8094\"]\n    healthcheck:")
    dotenv = "SECRET='from dotenv'\nDB_PASSWORD=from-dotenv\n# comment\nexport API=v3\n"
    done = _run_cli(tmp_path, compose, {"DB_PASSWORD": "from-shell"}, dotenv=dotenv)
    assert done.returncode == 0, done.stderr
    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(done.stdout)}
    secret = docs["Secret/chat-app"]["stringData"]
    assert secret["SECRET"] == "from dotenv" and secret["DB_PASSWORD"] == "from-shell"
    spec = docs["CoaiInstance/chat"]["spec"]
    assert spec["config"]["API_VERSION"] == "v3"
    assert spec["service"] == {"port": 8080} and spec["port"] == 8094


def test_all_unresolved_listed_at_once(tmp_path: Path) -> None:
    compose = GUIDE_V2.replace("- RBAC_ENABLED=true", "- RBAC_ENABLED=${RBAC}\n      - X=${NEEDED:?the X value}")
    done = _run_cli(tmp_path, compose, {})
    assert done.returncode == 1 and done.stdout == ""
    for name in ("SECRET is not set", "RBAC is not set", "NEEDED: the X value"):
        assert name in done.stderr


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("${A}", {"A": "1"}, "1"), ("$A-$B", {"A": "1", "B": "2"}, "1-2"), ("$$A", {}, "$A"),
    ("${A:-d}", {"A": ""}, "d"), ("${A-d}", {"A": ""}, ""), ("${A-d}", {}, "d"),
    ("${A:+alt}", {"A": "x"}, "alt"), ("${A:+alt}", {"A": ""}, ""), ("${A:-${B}}", {"B": "b"}, "b"),
])
def test_interpolation_forms(text: str, env: dict[str, str], expected: str) -> None:
    problems: list[str] = []
    assert interpolate_text(text, env, "x", problems) == expected
    assert problems == []


def test_required_forms() -> None:
    problems: list[str] = []
    interpolate_text("${A:?need A}${B?need B}", {"B": ""}, "svc", problems)
    assert problems == ["svc: A: need A"]
    with pytest.raises(InterpolationError) as err:
        interpolate({"a": ["${X}", {"b": "${Y}"}]}, {})
    assert err.value.problems == ["a[0]: variable X is not set", "a[1].b: variable Y is not set"]


def test_bare_keys_and_env_file(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("FROM_FILE=1\nOVERRIDDEN=file\n")
    service = {"env_file": ["app.env"], "environment": ["OVERRIDDEN=inline", "BARE"]}
    assert resolve_service_env(service, {"BARE": "b"}, tmp_path, "s") == {
        "FROM_FILE": "1", "OVERRIDDEN": "inline", "BARE": "b"}
    with pytest.raises(InterpolationError, match="BARE takes its value"):
        resolve_service_env({"environment": {"BARE": None}}, {}, tmp_path, "s")


def test_dotenv_parsing() -> None:
    assert parse_dotenv('A=1\n# c\nB="x y"\nexport C=3 # note\nD=\n') == {"A": "1", "B": "x y", "C": "3", "D": ""}


def test_pure_import_carries_port_health_and_memory() -> None:
    doc = yaml.safe_load(GUIDE_V2.replace("    healthcheck:", "    ports: [{target: 8094, published: 9000}]\n"
                                          "    healthcheck:"))
    doc = interpolate(doc, {"SECRET": "s" * 32})
    imported = import_compose(doc, name="c", app_env=resolve_service_env(doc["services"]["chatnio"], {}, None, "s"))
    spec = imported.manifests[-1]["spec"]
    assert spec["service"] == {"port": 9000} and spec["healthPath"] == "/health"
    assert spec["resources"]["limits"]["memory"] == "2Gi"
