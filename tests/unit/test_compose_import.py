"""import-compose: the seed's Docker -> Kubernetes move as a pure transformation."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from coai_operator.compose import ComposeError, import_compose

COMPOSE = yaml.safe_load("""
services:
  chatnio:
    image: programzmh/chatnio:3.11.2
    ports: ["8000:8094"]
    environment:
      MYSQL_HOST: mysql
      MYSQL_USER: chatnio
      MYSQL_PASSWORD: "p@ss'word"
      MYSQL_DB: chatnio
      REDIS_HOST: redis
      SECRET: "0123456789abcdef0123456789abcdef"
      OPENAI_API_KEY: sk-abc
      SERVE_STATIC: "true"
    volumes: ["./config:/config", "./storage:/storage"]
  mysql: {image: mysql:8}
  redis: {image: redis:7-alpine}
""")


def by_kind(manifests: list[dict]) -> dict[str, dict]:
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


def test_compose_becomes_an_instance_with_secrets_split_out() -> None:
    imported = import_compose(COMPOSE, name="chat")
    objs = by_kind(imported.manifests)
    spec = objs["CoaiInstance/chat"]["spec"]
    assert spec["version"] == "3.11.2" and spec["port"] == 8094 and "image" not in spec
    assert spec["database"] == {"host": "mysql", "port": 3306, "name": "chatnio", "user": "chatnio",
                                "passwordSecretRef": {"name": "chat-db", "key": "password"}}
    assert spec["redis"] == {"managed": {"enabled": True}}
    assert spec["config"] == {"SERVE_STATIC": "true"}
    assert spec["secretRef"] == {"name": "chat-app"}
    assert objs["Secret/chat-db"]["stringData"] == {"password": "p@ss'word"}
    assert objs["Secret/chat-app"]["stringData"] == {"SECRET": "0123456789abcdef0123456789abcdef",
                                                     "OPENAI_API_KEY": "sk-abc"}
    assert "p@ss" not in yaml.safe_dump(objs["CoaiInstance/chat"])
    assert any("mysql" in note for note in imported.notes) and any("/storage" in note for note in imported.notes)


def test_list_style_environment_and_explicit_version() -> None:
    compose = {"services": {"app": {"image": "registry.local/chatnio:latest",
                                    "environment": ["MYSQL_HOST=db.example", "SERVER_PORT=9000", "DEBUG"]}}}
    spec = by_kind(import_compose(compose, version="3.11.2").manifests)["CoaiInstance/coai"]["spec"]
    assert spec["image"] == "registry.local/chatnio" and spec["version"] == "3.11.2" and spec["port"] == 9000
    assert "config" not in spec  # DEBUG without a value comes from the host: nothing to import


@pytest.mark.parametrize(("compose", "message"), [
    ({"services": {"web": {"image": "nginx"}}}, "no service runs the CoAI image"),
    ({"services": {"app": {"image": "programzmh/chatnio:latest"}}}, "no version tag"),
    ({"services": {"a": {"image": "programzmh/chatnio:1.0.0"}, "b": {"image": "programzmh/chatnio:1.0.0"}}},
     "several services"),
])
def test_unusable_compose_files_say_why(compose: dict, message: str) -> None:
    with pytest.raises(ComposeError, match=message):
        import_compose(compose)


def test_cli_writes_yaml_that_parses(tmp_path) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(COMPOSE))
    out = subprocess.run([sys.executable, "-m", "coai_operator.cli", "import-compose", str(path), "--name", "x"],
                         capture_output=True, text=True, check=True).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(out)]
    assert kinds == ["Secret", "Secret", "CoaiInstance"]
    bad = subprocess.run([sys.executable, "-m", "coai_operator.cli", "import-compose", "-"], input="services: {}",
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "no service runs" in bad.stderr
