"""`coai-operator import-compose`: the seed's "Docker to Kubernetes" move, automated.

Reads a docker-compose file that runs CoAI and writes the equivalent CoaiInstance plus the Secrets
it needs. Pure: compose dict in, manifest dicts out. Secret-looking values (passwords, keys,
tokens, SECRET) go to Secrets, everything else to `spec.config`; the database and Redis settings
become `spec.database` / `spec.redis`. The data on the compose volumes is not copied; the output
says how (the instance's PVCs are created empty).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coai_operator import constants
from coai_operator.bundles.config_migration import is_secret_key
from coai_operator.instance.spec import RESERVED_ENV

Obj = dict[str, Any]
APP_IMAGE = re.compile(r"(^|/)chatnio(:|@|$)")
SEMVER = re.compile(r"^v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)$")


class ComposeError(ValueError):
    """The compose file cannot be turned into a CoaiInstance; the message says why."""


@dataclass
class Imported:
    manifests: list[Obj]
    notes: list[str] = field(default_factory=list)


def _env(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        env = {}
        for item in raw:
            key, sep, value = str(item).partition("=")
            if sep:  # `- KEY` alone means "take it from the host": nothing to import
                env[key] = value
        return env
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def find_app_service(compose: Mapping[str, Any]) -> tuple[str, Obj]:
    services = compose.get("services") or {}
    matches = [(name, svc) for name, svc in services.items() if APP_IMAGE.search(str((svc or {}).get("image", "")))]
    if not matches:
        raise ComposeError("no service runs the CoAI image (programzmh/chatnio) in this compose file")
    if len(matches) > 1:
        raise ComposeError(f"several services run CoAI ({', '.join(n for n, _ in matches)}); keep one")
    return matches[0]


def _version(image: str, override: str | None) -> str:
    if override:
        return override
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    match = SEMVER.match(tag)
    if not match:
        raise ComposeError(f"image {image!r} has no version tag (e.g. :3.11.2); pass --version")
    return match.group(1)


def _container_port(service: Mapping[str, Any], env: Mapping[str, str]) -> int:
    if env.get("SERVER_PORT", "").isdigit():
        return int(env["SERVER_PORT"])
    for mapping in service.get("ports") or []:
        target = mapping.get("target") if isinstance(mapping, dict) else str(mapping).split(":")[-1]
        digits = str(target).split("/")[0]
        if digits.isdigit():
            return int(digits)
    return 8094  # the app's default server.port


def _health_path(service: Mapping[str, Any]) -> str | None:
    """The URL path the compose healthcheck probes (`curl -f http://localhost:8094/health`)."""
    test = (service.get("healthcheck") or {}).get("test")
    text = " ".join(str(t) for t in test) if isinstance(test, list) else str(test or "")
    match = re.search(r"https?://[^/\s\"']+(/[^\s\"'|;&]*)", text)
    return match.group(1) if match else None


def _quantity(value: Any) -> str | None:
    """A compose memory size (`2G`, `512m`, `1gb`, bytes) as a Kubernetes quantity (binary units, as docker)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)b?", str(value).strip().lower())
    if not match:
        return None
    number, unit = match.groups()
    return number if unit in ("", "b") else f"{number}{unit.upper()}i"


def _resources(service: Mapping[str, Any]) -> Obj | None:
    deploy = ((service.get("deploy") or {}).get("resources") or {})
    limit = (deploy.get("limits") or {}).get("memory") or service.get("mem_limit")
    request = (deploy.get("reservations") or {}).get("memory") or service.get("mem_reservation")
    cpu = (deploy.get("limits") or {}).get("cpus") or service.get("cpus")
    out: Obj = {}
    if limit and _quantity(limit):
        out.setdefault("limits", {})["memory"] = _quantity(limit)
    if cpu:
        out.setdefault("limits", {})["cpu"] = str(cpu)
    if request and _quantity(request):
        out.setdefault("requests", {})["memory"] = _quantity(request)
    if out and "requests" not in out:  # the CRD replaces the whole default: keep a request
        out["requests"] = {"memory": out["limits"].get("memory", "1Gi")}
    return out or None


def _published_port(service: Mapping[str, Any]) -> int | None:
    for mapping in service.get("ports") or []:
        if isinstance(mapping, dict):
            published = str(mapping.get("published") or "")
        else:
            parts = str(mapping).split("/")[0].split(":")
            published = parts[-2] if len(parts) >= 2 else ""
        if published.split("-")[0].isdigit():
            return int(published.split("-")[0])
    return None


def import_compose(compose: Mapping[str, Any], name: str = "coai", version: str | None = None,
                   app_env: Mapping[str, str] | None = None) -> Imported:
    """`app_env`: the container environment as compose resolves it (compose_env); without it the
    service's `environment:` is read literally."""
    service_name, service = find_app_service(compose)
    image = str(service["image"])
    env = dict(app_env) if app_env is not None else _env(service)
    notes: list[str] = []
    secrets: dict[str, dict[str, str]] = {}

    spec: Obj = {"version": _version(image, version), "port": _container_port(service, env)}
    health = _health_path(service)
    if health:
        spec["healthPath"] = health
    resources = _resources(service)
    if resources:
        spec["resources"] = resources
    published = _published_port(service)
    if published:
        spec["service"] = {"port": published}
    repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    if repository != constants.DEFAULT_APP_IMAGE:
        spec["image"] = repository

    if env.get("MYSQL_HOST"):
        database: Obj = {"host": env["MYSQL_HOST"], "port": int(env.get("MYSQL_PORT") or 3306),
                         "name": env.get("MYSQL_DB") or env.get("MYSQL_DATABASE") or "chatnio",
                         "user": env.get("MYSQL_USER") or "root"}
        if env.get("MYSQL_PASSWORD"):
            secrets[f"{name}-db"] = {"password": env["MYSQL_PASSWORD"]}
            database["passwordSecretRef"] = {"name": f"{name}-db", "key": "password"}
        spec["database"] = database
        if env["MYSQL_HOST"] in (compose.get("services") or {}):
            notes.append(f"database host {env['MYSQL_HOST']!r} is a compose service: run it in the cluster "
                         "(or point spec.database.host at your database) before applying")
    else:
        notes.append("no MYSQL_HOST in the service's environment: set spec.database.host before applying")

    if env.get("REDIS_HOST"):
        redis: Obj = {"host": env["REDIS_HOST"], "port": int(env.get("REDIS_PORT") or 6379)}
        if env.get("REDIS_PASSWORD"):
            secrets[f"{name}-redis"] = {"password": env["REDIS_PASSWORD"]}
            redis["passwordSecretRef"] = {"name": f"{name}-redis", "key": "password"}
        spec["redis"] = redis
        if env["REDIS_HOST"] in (compose.get("services") or {}):
            spec["redis"] = {"managed": {"enabled": True}}
            secrets.pop(f"{name}-redis", None)
            notes.append(f"Redis service {env['REDIS_HOST']!r} becomes a managed Redis (redis:7-alpine, appendonly)")

    rest = {k: v for k, v in env.items() if k not in RESERVED_ENV and k != "MYSQL_DATABASE"}
    app_secret = {k: v for k, v in rest.items() if is_secret_key(k)}
    config = {k: v for k, v in rest.items() if k not in app_secret}
    if app_secret:
        secrets[f"{name}-app"] = app_secret
        spec["secretRef"] = {"name": f"{name}-app"}
    if config:
        spec["config"] = config

    volumes = [str(v) for v in service.get("volumes") or []]
    if volumes:
        notes.append("copy the data of " + ", ".join(volumes) + f" into the PVCs {name}-storage / {name}-config "
                     f"once they exist (e.g. kubectl cp ./storage <pod>:/storage)")
    notes.append(f"imported service {service_name!r}")

    manifests: list[Obj] = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name}, "type": "Opaque",
         "stringData": data}
        for secret_name, data in sorted(secrets.items())
    ]
    manifests.append({"apiVersion": constants.API_VERSION, "kind": constants.INSTANCE_KIND,
                      "metadata": {"name": name}, "spec": spec})
    return Imported(manifests=manifests, notes=notes)
