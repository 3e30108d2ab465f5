"""CoaiInstance spec: defaults, child names and validation (pure; no I/O).

The CRD defaults most fields already; the same defaults are applied here so render works on any
dict (unit tests, objects created before a default existed) and never sees a missing key.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from coai_operator import constants
from coai_operator.bundles.realline import FLOATING_TAGS, is_real

Spec = dict[str, Any]

DEFAULT_PORT = 8000
# The real app has no /health: `GET /` answers with static serving off, `GET /api/` with it on
# (the image's default). spec.healthPath overrides the derived path.
HEALTH_PATH_STATIC = "/api/"
GUIDE_HEALTH_PATH = "/health"  # the migration guide's 1.x-2.x line (its stand-in app answers it)
HEALTH_PATH_NO_STATIC = "/"
# strconv.ParseBool's false spellings (the app reads SERVE_STATIC/DEBUG through viper).
_FALSE = ("0", "f", "F", "false", "FALSE", "False")
_TRUE = ("1", "t", "T", "true", "TRUE", "True")
# Where the offline mode puts the tiktoken BPE files (TIKTOKEN_CACHE_DIR of the app).
TIKTOKEN_DIR = "/tiktoken"
DEFAULT_SERVICE_PORT = 80
DEFAULT_DB_PORT = 3306
DEFAULT_DB_NAME = "chatnio"
DEFAULT_REDIS_PORT = 6379
DEFAULT_REDIS_IMAGE = "redis:7-alpine"
DEFAULT_SECRET_KEY = "password"  # noqa: S105  (the key name in the Secret)
DEFAULT_SIZES = {"storage": "10Gi", "logs": "5Gi", "configVolume": "1Gi", "redis": "1Gi"}
DEFAULT_RESOURCES = {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}

# Environment the operator derives from spec fields; spec.config must not set these.
RESERVED_ENV = (
    "SERVER_PORT",
    "MYSQL_HOST", "MYSQL_PORT", "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_DB", "MYSQL_DATABASE",
    "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD",
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Both an image tag and a label value: the version is used as both.
VERSION_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Names:
    """Deterministic child names: a restarted operator finds everything it created."""

    instance: str

    @property
    def deployment(self) -> str:
        return self.instance

    @property
    def service(self) -> str:
        return self.instance

    @property
    def configmap(self) -> str:
        return f"{self.instance}-env"

    @property
    def storage_pvc(self) -> str:
        return f"{self.instance}-storage"

    @property
    def logs_pvc(self) -> str:
        return f"{self.instance}-logs"

    @property
    def config_pvc(self) -> str:
        return f"{self.instance}-config"

    @property
    def redis(self) -> str:
        return f"{self.instance}-redis"

    @property
    def redis_pvc(self) -> str:
        return f"{self.instance}-redis-data"


@dataclass(frozen=True)
class Problem:
    """Why a spec cannot work: a CamelCase reason and a message that says what to fix."""

    reason: str
    message: str


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def with_defaults(spec: Spec | None) -> Spec:
    """A deep copy of `spec` with every default filled in."""
    s = copy.deepcopy(spec or {})
    s.setdefault("image", constants.DEFAULT_APP_IMAGE)
    s.setdefault("replicas", 1)
    s.setdefault("port", DEFAULT_PORT)
    s["config"] = _obj(s.get("config"))
    if not s.get("healthPath"):
        s["healthPath"] = default_health_path(s)
    service = s["service"] = _obj(s.get("service"))
    service.setdefault("type", "ClusterIP")
    service.setdefault("port", DEFAULT_SERVICE_PORT)
    db = s["database"] = _obj(s.get("database"))
    db.setdefault("port", DEFAULT_DB_PORT)
    db.setdefault("name", DEFAULT_DB_NAME)
    if isinstance(db.get("passwordSecretRef"), dict):
        db["passwordSecretRef"].setdefault("key", DEFAULT_SECRET_KEY)
    redis = s["redis"] = _obj(s.get("redis"))
    redis.setdefault("port", DEFAULT_REDIS_PORT)
    if isinstance(redis.get("passwordSecretRef"), dict):
        redis["passwordSecretRef"].setdefault("key", DEFAULT_SECRET_KEY)
    managed = redis["managed"] = _obj(redis.get("managed"))
    managed.setdefault("enabled", False)
    managed.setdefault("image", DEFAULT_REDIS_IMAGE)
    managed["storage"] = _obj(managed.get("storage"))
    managed["storage"].setdefault("size", DEFAULT_SIZES["redis"])
    for key in ("storage", "logs", "configVolume"):
        volume = s[key] = _obj(s.get(key))
        volume.setdefault("size", DEFAULT_SIZES[key])
    s["storage"].setdefault("retain", True)
    s.setdefault("resources", copy.deepcopy(DEFAULT_RESOURCES))
    maintenance = s["maintenance"] = _obj(s.get("maintenance"))
    maintenance.setdefault("enabled", False)
    if isinstance(_obj(s.get("admin")).get("passwordSecretRef"), dict):
        s["admin"]["passwordSecretRef"].setdefault("key", DEFAULT_SECRET_KEY)
    s["offline"] = _obj(s.get("offline"))
    s["offline"].setdefault("enabled", False)
    return s


def default_health_path(spec: Spec) -> str:
    """The guide's line keeps its documented /health; the real app answers on / or /api/."""
    if not is_real(str(spec.get("version", ""))):
        return GUIDE_HEALTH_PATH
    return HEALTH_PATH_STATIC if serve_static(spec["config"]) else HEALTH_PATH_NO_STATIC


def _flag(config: dict[str, Any], key: str) -> bool | None:
    """A boolean env setting as the app reads it: True, False, or None when unset."""
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    return True if text in _TRUE else False if text in _FALSE else None


def serve_static(config: dict[str, Any]) -> bool:
    """Whether the app serves its frontend (then its API lives under /api/). On by default."""
    return _flag(config, "SERVE_STATIC") is not False


def api_prefix(spec: Spec) -> str:
    """Path prefix of the app's API (/login, /v1/chat/completions ...): /api with static serving."""
    return "/api" if serve_static(spec["config"]) else ""


def admin_password_ref(spec: Spec) -> dict[str, str] | None:
    ref = _obj(spec.get("admin")).get("passwordSecretRef")
    return ref if isinstance(ref, dict) and ref.get("name") else None


def offline(spec: Spec) -> bool:
    return bool(spec["offline"].get("enabled"))


def redis_managed(spec: Spec) -> bool:
    return bool(spec["redis"]["managed"].get("enabled"))


def maintenance(spec: Spec) -> bool:
    return bool(spec["maintenance"].get("enabled"))


def desired_replicas(spec: Spec) -> int:
    return 0 if maintenance(spec) else int(spec["replicas"])


def image_ref(spec: Spec) -> str:
    """`image:version`, or `image:version@digest` when spec.imageDigest pins it (a rollback to
    what ran before; tags can be re-pushed). The CRD forbids a tag or digest in spec.image: the
    version is the tag, so a version change is always an image change."""
    digest = spec.get("imageDigest")
    return f"{spec['image']}:{spec['version']}" + (f"@{digest}" if digest else "")


def secret_refs(spec: Spec) -> list[tuple[str, str | None, str]]:
    """(secret name, key or None for the whole Secret, spec field) the pods will need."""
    refs: list[tuple[str, str | None, str]] = []
    db_ref = spec["database"].get("passwordSecretRef")
    if isinstance(db_ref, dict) and db_ref.get("name"):
        refs.append((db_ref["name"], db_ref["key"], "spec.database.passwordSecretRef"))
    redis_ref = spec["redis"].get("passwordSecretRef")
    if isinstance(redis_ref, dict) and redis_ref.get("name"):
        refs.append((redis_ref["name"], redis_ref["key"], "spec.redis.passwordSecretRef"))
    secret_ref = spec.get("secretRef")
    if isinstance(secret_ref, dict) and secret_ref.get("name"):
        refs.append((secret_ref["name"], None, "spec.secretRef"))
    certs = spec.get("certs")
    certs_ref = certs.get("secretRef") if isinstance(certs, dict) else None
    if isinstance(certs_ref, dict) and certs_ref.get("name"):
        refs.append((certs_ref["name"], None, "spec.certs.secretRef"))
    admin_ref = admin_password_ref(spec)
    if admin_ref:
        refs.append((admin_ref["name"], admin_ref["key"], "spec.admin.passwordSecretRef"))
    return refs


def _check_quantity(value: Any, field_path: str) -> Problem | None:
    try:
        if parse_quantity(value) <= 0:
            raise ValueError
    except (ValueError, TypeError, ArithmeticError):
        return Problem("InvalidStorageSize",
                       f"{field_path} {value!r} is not a positive Kubernetes quantity (e.g. 10Gi)")
    return None


def validate(spec: Spec) -> Problem | None:
    """The first problem that keeps this spec (already defaulted) from working, or None.

    The CRD's OpenAPI schema and CEL rules catch most of these at admission; checking again
    here keeps the operator safe with objects admitted by an older CRD or with validation off.
    """
    version = spec.get("version")
    if not isinstance(version, str) or not VERSION_RE.match(version):
        return Problem("InvalidVersion",
                       f"spec.version {version!r} must be a version such as 3.11.2 (it is the image tag)")
    if version.lower() in FLOATING_TAGS:
        return Problem("FloatingTag", f"spec.version {version!r} is a floating tag: it moves under a running "
                                      "instance and a rollback could not return to it; pin a version such as 4.25.0")
    if not spec["database"].get("host"):
        return Problem("DatabaseHostMissing", "spec.database.host is required: the MySQL/MariaDB server CoAI uses")
    if spec["redis"].get("host") and redis_managed(spec):
        return Problem("ConflictingRedisConfig",
                       "spec.redis.host and spec.redis.managed.enabled=true are both set: "
                       "use an existing Redis (host) or a managed one, not both")
    if not isinstance(spec["replicas"], int) or spec["replicas"] < 0:
        return Problem("InvalidReplicas", f"spec.replicas {spec['replicas']!r} must be an integer >= 0")
    for field_path, value in (
        ("spec.storage.size", spec["storage"]["size"]),
        ("spec.logs.size", spec["logs"]["size"]),
        ("spec.configVolume.size", spec["configVolume"]["size"]),
        ("spec.redis.managed.storage.size", spec["redis"]["managed"]["storage"]["size"]),
    ):
        if field_path.startswith("spec.redis") and not redis_managed(spec):
            continue
        problem = _check_quantity(value, field_path)
        if problem:
            return problem
    if _flag(spec["config"], "DEBUG") and (redis_managed(spec) or spec["redis"].get("host")):
        return Problem("DebugWipesRedis",
                       "spec.config DEBUG=true makes CoAI run FLUSHALL on every Redis (re)connect, wiping "
                       "rate limits, sessions and counters of every database of that Redis: remove DEBUG "
                       "or run without spec.redis")
    bad_names = sorted(k for k in spec["config"] if not ENV_NAME.match(str(k)))
    if bad_names:
        return Problem("InvalidConfigKey",
                       f"spec.config keys must be environment variable names; invalid: {', '.join(bad_names)}")
    reserved = sorted(k for k in spec["config"] if k in RESERVED_ENV)
    if reserved:
        return Problem("ReservedConfigKey",
                       f"spec.config sets {', '.join(reserved)}, which the operator derives from "
                       "spec.port, spec.database and spec.redis (passwords come from their passwordSecretRef): "
                       "remove them from spec.config")
    return None
