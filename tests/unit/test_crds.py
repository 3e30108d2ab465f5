"""The CRDs in crds/ without a cluster: structure, documentation, the design's field names, defaults,
printer columns, CEL rules, and sample objects checked against the schema by a small validator.

The apiserver's own behaviour (CEL evaluation, defaulting, kubectl explain) is covered by
e2e/test_crds.py.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from coai_operator import constants

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
INSTANCE_FILE = CRD_DIR / f"{constants.INSTANCE_PLURAL}.{constants.GROUP}.yaml"
MIGRATION_FILE = CRD_DIR / f"{constants.MIGRATION_PLURAL}.{constants.GROUP}.yaml"

Schema = dict[str, Any]

# --------------------------------------------------------------------------------------------
# loading and walking


def go_search(pattern: str, value: str) -> bool:
    """An OpenAPI pattern as the apiserver (Go RE2) applies it: `$` is the very end of the text,
    where Python's `$` also matches before a final newline."""
    return re.search(re.sub(r"(?<!\\)\$", r"\\Z", pattern), value) is not None


def _load(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path.name}: exactly one CRD per file"
    return docs[0]


@pytest.fixture(scope="module")
def instance_crd() -> dict[str, Any]:
    return _load(INSTANCE_FILE)


@pytest.fixture(scope="module")
def migration_crd() -> dict[str, Any]:
    return _load(MIGRATION_FILE)


def _version(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return version


def _root(crd: dict[str, Any]) -> Schema:
    return _version(crd)["schema"]["openAPIV3Schema"]


def _at(schema: Schema, dotted: str) -> Schema:
    """The schema node of a dotted path; `[]` steps into items, `{}` into additionalProperties."""
    node = schema
    for part in dotted.split("."):
        if part == "[]":
            node = node["items"]
        elif part == "{}":
            node = node["additionalProperties"]
        else:
            assert part in node.get("properties", {}), f"no field {part!r} in path {dotted!r}"
            node = node["properties"][part]
    return node


def _walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node under `schema` (the node itself included) with its dotted path."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}.[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}.{{}}")


BOTH = pytest.mark.parametrize("crd_file", [INSTANCE_FILE, MIGRATION_FILE], ids=["instance", "migration"])

# --------------------------------------------------------------------------------------------
# CRD shape


@BOTH
def test_crd_metadata_names_and_version(crd_file: Path) -> None:
    crd = _load(crd_file)
    kind, plural, short = {
        INSTANCE_FILE: (constants.INSTANCE_KIND, constants.INSTANCE_PLURAL, "coai"),
        MIGRATION_FILE: (constants.MIGRATION_KIND, constants.MIGRATION_PLURAL, "cmig"),
    }[crd_file]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.{constants.GROUP}" == crd_file.stem
    spec = crd["spec"]
    assert spec["group"] == constants.GROUP
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert names["kind"] == kind
    assert names["plural"] == plural
    assert names["singular"] == kind.lower()
    assert names["listKind"] == f"{kind}List"
    assert names["shortNames"] == [short]
    version = _version(crd)
    assert version["name"] == constants.VERSION
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_category_groups_both_kinds_without_shadowing_a_short_name(instance_crd, migration_crd) -> None:
    # kubectl expands a category before a short name: a category called `coai` would turn
    # `kubectl get coai NAME` into a query over both kinds ("you must specify only one resource").
    categories = {tuple(c["spec"]["names"]["categories"]) for c in (instance_crd, migration_crd)}
    assert len(categories) == 1
    (shared,) = categories
    assert shared == ("coai-all",)
    short_names = {s for c in (instance_crd, migration_crd) for s in c["spec"]["names"]["shortNames"]}
    assert not short_names & set(shared)


def _columns(crd: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    return [(c["name"], c["type"], c["jsonPath"], c.get("priority", 0))
            for c in _version(crd)["additionalPrinterColumns"]]


def test_migration_printer_columns(migration_crd) -> None:
    default_view = [(n, t, p) for n, t, p, prio in _columns(migration_crd) if prio == 0]
    assert default_view == [
        ("Instance", "string", ".spec.instanceRef.name"),
        ("From", "string", ".status.fromVersion"),
        ("To", "string", ".spec.targetVersion"),
        ("Phase", "string", ".status.phase"),
        ("Step", "string", ".status.currentStep"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


def test_instance_printer_columns(instance_crd) -> None:
    default_view = [(n, t, p) for n, t, p, prio in _columns(instance_crd) if prio == 0]
    assert default_view == [
        ("Version", "string", ".status.version"),
        ("Phase", "string", ".status.phase"),
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    wide = {n: p for n, _, p, prio in _columns(instance_crd) if prio == 1}
    assert wide["Replicas"] == ".status.readyReplicas"
    assert wide["Migration"] == ".status.activeMigration"


@BOTH
def test_printer_columns_point_at_schema_fields(crd_file: Path) -> None:
    crd = _load(crd_file)
    root = _root(crd)
    for name, _, path, _ in _columns(crd):
        if path.startswith(".metadata."):
            continue
        dotted = path.lstrip(".").split("[", 1)[0]
        _at(root, dotted)  # raises when the column shows a field the schema does not have
        assert name, path


# --------------------------------------------------------------------------------------------
# structural schema and documentation


@BOTH
def test_every_property_is_typed_and_described(crd_file: Path) -> None:
    root = _root(_load(crd_file))
    for path, node in _walk(root):
        if path == "metadata":
            # The apiserver forbids anything but the type on metadata.
            assert node == {"type": "object"}
            continue
        typed = "type" in node or node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields")
        assert typed, f"{path or '<root>'}: no type"
        if node.get("x-kubernetes-int-or-string"):
            assert node.get("anyOf") == [{"type": "integer"}, {"type": "string"}], path
        description = node.get("description", "")
        assert isinstance(description, str), path
        assert len(description.strip()) >= 10, f"{path or '<root>'}: missing or too short description"


@BOTH
def test_schema_is_structural(crd_file: Path) -> None:
    root = _root(_load(crd_file))
    assert root["type"] == "object"
    for path, node in _walk(root):
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
            assert node.get("x-kubernetes-preserve-unknown-fields") or path == "metadata", (
                f"{path}: an object without properties would be pruned to {{}}")
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), f"{path}: array without items"
        for sub in node.get("anyOf", []):
            assert set(sub) == {"type"}, f"{path}: anyOf may only list types in a structural schema"
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), f"{path}: map keys must be required"
        for key in node.get("required", []):
            assert key in node.get("properties", {}), f"{path}: required {key!r} is not a property"
        if "enum" in node:
            assert "default" not in node or node["default"] in node["enum"], path
        if "default" in node:
            assert not validate(node, node["default"], path), f"{path}: default does not validate"


def _cel_nodes(root: Schema) -> Iterator[tuple[str, Schema]]:
    for path, node in _walk(root):
        if node.get("x-kubernetes-validations"):
            yield path, node


@BOTH
def test_values_cel_can_see_are_bounded(crd_file: Path) -> None:
    """Unbounded strings, lists and maps under a CEL rule blow the apiserver's cost budget."""
    root = _root(_load(crd_file))
    for rule_path, rule_node in _cel_nodes(root):
        if rule_path == "":
            continue  # the root rules only read metadata.name, which the apiserver bounds itself
        seen: list[tuple[str, Schema]] = []
        for rule in rule_node["x-kubernetes-validations"]:
            fields = set(re.findall(r"\b(?:self|oldSelf)\.(\w+)\b(?!\()", rule["rule"]))  # not self.all(...)
            if not fields:
                seen += _walk(rule_node, rule_path)
            for field in fields:
                seen += _walk(rule_node["properties"][field], f"{rule_path}.{field}")
        for path, node in seen:
            kind = node.get("type")
            if kind == "string" and "enum" not in node and node.get("format") != "date-time":
                assert "maxLength" in node, f"{path}: string under a CEL rule needs maxLength"
            if kind == "array":
                assert "maxItems" in node, f"{path}: list under a CEL rule needs maxItems"
            if kind == "object" and "additionalProperties" in node:
                assert "maxProperties" in node, f"{path}: map under a CEL rule needs maxProperties"


@BOTH
def test_cel_messages_name_the_field(crd_file: Path) -> None:
    root = _root(_load(crd_file))
    for path, node in _cel_nodes(root):
        for rule in node["x-kubernetes-validations"]:
            message = rule["message"]
            if path == "":
                assert message.startswith("metadata.name "), message
                continue
            field = f"{path}{rule.get('fieldPath', '')}"
            assert field.lstrip(".") in message, f"message of {rule['rule']!r} should name {field}"


# --------------------------------------------------------------------------------------------
# the design's fields

INSTANCE_SPEC_FIELDS = [
    "version", "image", "replicas", "port", "healthPath",
    "service.type", "service.port",
    "database.host", "database.port", "database.name", "database.user",
    "database.passwordSecretRef.name", "database.passwordSecretRef.key",
    "redis.host", "redis.port", "redis.passwordSecretRef.name", "redis.passwordSecretRef.key",
    "redis.managed.enabled", "redis.managed.storage.size", "redis.managed.storage.storageClassName",
    "secretRef.name", "config.{}",
    "storage.size", "storage.storageClassName", "storage.retain",
    "logs.size", "configVolume.size", "configVolume.storageClassName",
    "resources.requests", "resources.limits",
    "maintenance.enabled", "maintenance.message",
    "podSecurityContext", "securityContext",
    "nodeSelector.{}", "tolerations.[].key", "affinity", "imagePullSecrets.[].name", "serviceAccountName",
    "podAnnotations.{}",
]
INSTANCE_STATUS_FIELDS = [
    "phase", "version", "schemaVersion", "image", "readyReplicas", "endpoint", "activeMigration",
    "observedGeneration", "conditions.[].type", "conditions.[].status", "conditions.[].reason",
    "conditions.[].message", "conditions.[].lastTransitionTime", "conditions.[].observedGeneration",
]
MIGRATION_SPEC_FIELDS = [
    "instanceRef.name", "targetVersion", "dryRun",
    "backup.enabled", "backup.include", "backup.pvc.name", "backup.pvc.size", "backup.pvc.storageClassName",
    "configMigration.rename.{}", "configMigration.set.{}", "configMigration.remove.[]",
    "migrations.configMapRef.name",
    "storageMigration.enabled",
    "validation.enabled", "validation.baseURL", "validation.apiKeySecretRef.name",
    "validation.apiKeySecretRef.key", "validation.checks", "validation.timeoutSeconds",
    "rollback.policy", "rollback.mode", "rollback.requested",
    "maintenance.enabled", "maintenance.message",
    "backoffLimit",
    "jobTemplate.image", "jobTemplate.resources.requests", "jobTemplate.resources.limits",
    "jobTemplate.serviceAccountName", "jobTemplate.nodeSelector", "jobTemplate.tolerations",
    "jobTemplate.securityContext",
]
MIGRATION_STATUS_FIELDS = [
    "phase", "fromVersion", "toVersion", "path.[]",
    "steps.[].name", "steps.[].phase", "steps.[].job", "steps.[].startedAt", "steps.[].finishedAt",
    "steps.[].message", "currentStep",
    "backup.location", "backup.artifacts.[].name", "backup.artifacts.[].bytes", "backup.artifacts.[].sha256",
    "backup.rowCounts.{}", "backup.completedAt",
    "previous.image", "previous.version", "previous.configSnapshot.configMap", "previous.configSnapshot.secret",
    "startedAt", "completedAt", "message", "observedGeneration", "conditions.[].type",
]


@pytest.mark.parametrize("field", INSTANCE_SPEC_FIELDS)
def test_instance_spec_field(instance_crd, field: str) -> None:
    _at(_root(instance_crd), f"spec.{field}")


@pytest.mark.parametrize("field", INSTANCE_STATUS_FIELDS)
def test_instance_status_field(instance_crd, field: str) -> None:
    _at(_root(instance_crd), f"status.{field}")


@pytest.mark.parametrize("field", MIGRATION_SPEC_FIELDS)
def test_migration_spec_field(migration_crd, field: str) -> None:
    _at(_root(migration_crd), f"spec.{field}")


@pytest.mark.parametrize("field", MIGRATION_STATUS_FIELDS)
def test_migration_status_field(migration_crd, field: str) -> None:
    _at(_root(migration_crd), f"status.{field}")


def test_required_fields(instance_crd, migration_crd) -> None:
    assert _root(instance_crd)["required"] == ["spec"]
    assert _root(migration_crd)["required"] == ["spec"]
    assert _at(_root(instance_crd), "spec")["required"] == ["version", "database"]
    assert _at(_root(instance_crd), "spec.database")["required"] == ["host"]
    assert _at(_root(migration_crd), "spec")["required"] == ["instanceRef", "targetVersion"]


def test_enums(instance_crd, migration_crd) -> None:
    inst, mig = _root(instance_crd), _root(migration_crd)
    assert _at(inst, "spec.service.type")["enum"] == ["ClusterIP", "NodePort", "LoadBalancer"]
    assert _at(inst, "status.phase")["enum"] == [
        "Pending", "Progressing", "Ready", "Degraded", "Maintenance", "Migrating"]
    assert _at(mig, "status.phase")["enum"] == [
        "Pending", "Planning", "BackingUp", "Migrating", "Validating", "Succeeded", "Failed",
        "RollingBack", "RolledBack"]
    assert _at(mig, "spec.rollback.policy")["enum"] == ["Automatic", "Manual", "Never"]
    assert _at(mig, "spec.rollback.mode")["enum"] == ["Emergency", "Graceful"]
    assert _at(mig, "spec.backup.include.[]")["enum"] == ["database", "storage", "config"]
    assert _at(mig, "spec.validation.checks.[]")["enum"] == [
        "database", "health", "login", "quota", "fingerprint", "chat", "files", "dataIntegrity"]
    for root in (inst, mig):
        conditions = _at(root, "status.conditions")
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert _at(root, "status.conditions.[].status")["enum"] == ["True", "False", "Unknown"]


@pytest.mark.parametrize(("path", "default"), [
    ("spec.image", constants.DEFAULT_APP_IMAGE),
    ("spec.replicas", 1),
    ("spec.port", 8000),
    ("spec.service.type", "ClusterIP"),
    ("spec.service.port", 80),
    ("spec.database.port", 3306),
    ("spec.database.name", "chatnio"),
    ("spec.redis.managed.enabled", False),
    ("spec.redis.managed.image", "redis:7-alpine"),
    ("spec.storage.size", "10Gi"),
    ("spec.storage.retain", True),
    ("spec.resources", {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}),
    ("spec.maintenance.enabled", False),
    ("spec.offline.enabled", False),
])
def test_instance_defaults(instance_crd, path: str, default: Any) -> None:
    assert _at(_root(instance_crd), path)["default"] == default


@pytest.mark.parametrize(("path", "default"), [
    ("spec.dryRun", False),
    ("spec.backup.enabled", True),
    ("spec.backup.include", ["database", "storage", "config"]),
    ("spec.storageMigration.enabled", False),
    ("spec.validation.enabled", True),
    ("spec.validation.timeoutSeconds", 300),
    ("spec.rollback.policy", "Automatic"),
    ("spec.rollback.mode", "Emergency"),
    ("spec.rollback.requested", False),
    ("spec.maintenance.enabled", True),
    ("spec.backoffLimit", 1),
])
def test_migration_defaults(migration_crd, path: str, default: Any) -> None:
    assert _at(_root(migration_crd), path)["default"] == default


@BOTH
def test_scalar_defaults_are_documented(crd_file: Path) -> None:
    """`kubectl explain` does not print defaults, so every description states its own."""
    for path, node in _walk(_root(_load(crd_file))):
        default = node.get("default")
        if default is None or isinstance(default, dict | list):
            continue
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        description = node["description"]
        assert "default" in description.lower() and shown in description, f"{path}: document default {shown}"


# Groups that only exist when the user configures them; their children's defaults apply then.
OPTIONAL_GROUPS = {
    "spec.database", "spec.database.passwordSecretRef", "spec.redis", "spec.redis.passwordSecretRef",
    "spec.redis.managed", "spec.validation.apiKeySecretRef", "spec.admin", "spec.admin.passwordSecretRef",
}


@BOTH
def test_defaulted_objects_let_nested_defaults_apply(crd_file: Path) -> None:
    """An object whose children have defaults defaults to {} itself, or they never apply."""
    spec = _root(_load(crd_file))["properties"]["spec"]
    for path, node in _walk(spec, "spec"):
        children = node.get("properties", {})
        if path == "spec" or path in OPTIONAL_GROUPS or not any("default" in c for c in children.values()):
            continue
        assert node.get("default") == {}, f"{path}: needs default {{}} so its children's defaults apply"


# --------------------------------------------------------------------------------------------
# patterns

SEMVER_OK = ["0.0.0", "1.8.0", "2.0.0", "3.11.2", "4.25.0", "10.20.30", "2.0.0-rc.1", "2.0.0-alpha-2"]
SEMVER_BAD = ["v2.0.0", "2.0", "2", "02.0.0", "2.0.0+build.1", "latest", "stable", "2.0.0-", "", " 2.0.0",
              "2.0.0\n", "2.0.x"]


@pytest.mark.parametrize(("crd_file", "field"), [(INSTANCE_FILE, "spec.version"),
                                                 (MIGRATION_FILE, "spec.targetVersion")])
def test_version_fields_are_semver_without_v(crd_file: Path, field: str) -> None:
    node = _at(_root(_load(crd_file)), field)
    for good in SEMVER_OK:
        assert go_search(node["pattern"], good), good
    for bad in SEMVER_BAD:
        assert not go_search(node["pattern"], bad), bad
    assert node["maxLength"] <= 128  # an image tag is at most 128 characters


def test_both_crds_use_the_same_semver_pattern(instance_crd, migration_crd) -> None:
    assert (_at(_root(instance_crd), "spec.version")["pattern"]
            == _at(_root(migration_crd), "spec.targetVersion")["pattern"])


@pytest.mark.parametrize(("image", "ok"), [
    ("programzmh/chatnio", True),
    ("chatnio", True),
    ("docker.io/programzmh/chatnio", True),
    ("registry.example.com:5000/mirror/chatnio", True),
    ("localhost:5000/chatnio", True),
    ("programzmh/chatnio:3.11.2", False),
    ("programzmh/chatnio@sha256:abc", False),
    ("Programzmh/Chatnio", False),
    ("", False),
])
def test_image_is_a_repository_without_tag(instance_crd, image: str, ok: bool) -> None:
    assert go_search(_at(_root(instance_crd), "spec.image")["pattern"], image) is ok


@pytest.mark.parametrize(("size", "ok"), [
    ("10Gi", True), ("500Mi", True), ("1.5Ti", True), ("1000000", True), ("2G", True),
    ("10gb", False), ("-1Gi", False), ("Gi", False), ("10 Gi", False),
])
def test_size_pattern(instance_crd, migration_crd, size: str, ok: bool) -> None:
    for root, path in ((_root(instance_crd), "spec.storage.size"), (_root(migration_crd), "spec.backup.pvc.size")):
        assert go_search(_at(root, path)["pattern"], size) is ok


# --------------------------------------------------------------------------------------------
# CEL rules (evaluated for real by the apiserver in e2e/test_crds.py; here: present and as meant)


def _rules(node: Schema) -> list[dict[str, str]]:
    return node.get("x-kubernetes-validations", [])


def test_migration_run_parameters_are_immutable(migration_crd) -> None:
    spec = _at(_root(migration_crd), "spec")
    assert _rules(spec["properties"]["instanceRef"]) == [{
        "rule": "self == oldSelf",
        "message": "spec.instanceRef is immutable; create a new CoaiMigration for another instance"}]
    assert _rules(spec["properties"]["targetVersion"]) == [{
        "rule": "self == oldSelf",
        "message": "spec.targetVersion is immutable; create a new CoaiMigration to upgrade to another version"}, {
        "rule": "!(self in ['latest', 'stable'])",
        "message": "spec.targetVersion must not be a floating tag (latest, stable), a rollback could not know what "
                   "it ran; pin a version such as 4.25.0"}]
    by_field = {r.get("fieldPath"): r for r in _rules(spec)}
    for field in ("backup", "migrations", "configMigration", "storageMigration", "dryRun"):
        rule = by_field[f".{field}"]
        assert rule["rule"] == (f"has(self.{field}) == has(oldSelf.{field}) && "
                                f"(!has(self.{field}) || self.{field} == oldSelf.{field})")
        assert rule["message"].startswith(f"spec.{field} is immutable after creation")


def test_rollback_request_stays_mutable(migration_crd) -> None:
    root = _root(migration_crd)
    spec = _at(root, "spec")
    # No rule freezes spec.rollback as a whole; its only transition rule is one-way on `requested`.
    assert not any("self.rollback == oldSelf.rollback" in r["rule"] for r in _rules(spec))
    (rule,) = _rules(_at(root, "spec.rollback"))
    assert rule["fieldPath"] == ".requested"
    assert "oldSelf.requested" in rule["rule"]
    for mutable in ("rollback", "validation", "maintenance", "backoffLimit", "jobTemplate"):
        assert not any(f"oldSelf.{mutable}" in r["rule"] for r in _rules(spec)), mutable
        assert not any("oldSelf" in r["rule"] and r.get("fieldPath", "") == "" for r in
                       _rules(spec["properties"][mutable])), mutable


def test_reserved_config_keys_match_the_renderer(instance_crd) -> None:
    """spec.config may not set what the operator derives; the CRD rejects exactly those keys."""
    from coai_operator.instance.spec import RESERVED_ENV

    rules = [r["rule"] for r in _rules(_at(_root(instance_crd), "spec.config"))]
    (reserved_rule,) = [r for r in rules if " in [" in r]
    listed = re.findall(r"'([A-Z_]+)'", reserved_rule)
    assert sorted(listed) == sorted(RESERVED_ENV)


def test_instance_has_no_transition_rules(instance_crd) -> None:
    for _, node in _cel_nodes(_root(instance_crd)):
        assert not any("oldSelf" in r["rule"] for r in _rules(node))


# --------------------------------------------------------------------------------------------
# a small validator and defaulter, close enough to the apiserver's for sample objects

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,), "integer": (int,),
    "number": (int, float),
}


def _type_ok(node: Schema, value: Any) -> bool:
    if node.get("x-kubernetes-int-or-string"):
        return isinstance(value, str | int) and not isinstance(value, bool)
    expected = node.get("type")
    if expected is None:
        return True
    if expected in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _JSON_TYPES[expected])


def validate(node: Schema, value: Any, path: str = "") -> list[str]:
    """OpenAPI checks the apiserver makes (types, enums, patterns, bounds, required, sets)."""
    where = path or "<root>"
    if not _type_ok(node, value):
        return [f"{where}: expected {node.get('type', 'int-or-string')}, got {type(value).__name__}"]
    errors: list[str] = []
    if "enum" in node and value not in node["enum"]:
        errors.append(f"{where}: Unsupported value {value!r}")
    if isinstance(value, str):
        if "pattern" in node and not go_search(node["pattern"], value):
            errors.append(f"{where}: should match {node['pattern']}")
        if len(value) > node.get("maxLength", len(value)) or len(value) < node.get("minLength", 0):
            errors.append(f"{where}: length out of bounds")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            errors.append(f"{where}: should be greater than or equal to {node['minimum']}")
        if "maximum" in node and value > node["maximum"]:
            errors.append(f"{where}: should be less than or equal to {node['maximum']}")
    if isinstance(value, list):
        if len(value) > node.get("maxItems", len(value)):
            errors.append(f"{where}: too many items")
        if node.get("x-kubernetes-list-type") == "set" and len(set(map(repr, value))) != len(value):
            errors.append(f"{where}: Duplicate value")
        for i, item in enumerate(value):
            errors += validate(node["items"], item, f"{path}[{i}]")
    if isinstance(value, dict):
        if len(value) > node.get("maxProperties", len(value)):
            errors.append(f"{where}: too many properties")
        errors += [f"{path}.{key}: Required value".lstrip(".") for key in node.get("required", [])
                   if key not in value]
        props = node.get("properties", {})
        for key, sub in value.items():
            sub_path = f"{path}.{key}" if path else key
            if key in props:
                errors += validate(props[key], sub, sub_path)
            elif isinstance(node.get("additionalProperties"), dict):
                errors += validate(node["additionalProperties"], sub, sub_path)
            elif not node.get("x-kubernetes-preserve-unknown-fields") and path not in ("metadata",):
                errors.append(f"{sub_path}: unknown field (would be pruned)")
    return errors


def apply_defaults(node: Schema, value: Any) -> Any:
    """Structural defaulting: a missing property with a default is set, then defaulted itself."""
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(sub, value[key])
        if isinstance(node.get("additionalProperties"), dict):
            for key in value:
                if key not in node.get("properties", {}):
                    value[key] = apply_defaults(node["additionalProperties"], value[key])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        value = [apply_defaults(node["items"], item) for item in value]
    return value


def _check(crd: dict[str, Any], obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    root = _root(crd)
    obj = apply_defaults(root, copy.deepcopy(obj))
    return obj, validate(root, obj)


MINIMAL_INSTANCE = {
    "apiVersion": constants.API_VERSION, "kind": constants.INSTANCE_KIND,
    "metadata": {"name": "chat", "namespace": "coai"},
    "spec": {"version": "3.11.2", "database": {"host": "mariadb.db.svc"}},
}
MINIMAL_MIGRATION = {
    "apiVersion": constants.API_VERSION, "kind": constants.MIGRATION_KIND,
    "metadata": {"name": "to-4-25", "namespace": "coai"},
    "spec": {"instanceRef": {"name": "chat"}, "targetVersion": "4.25.0"},
}


# What a CoaiInstance with only version and database.host gets from the schema (seed defaults).
SEED_INSTANCE_DEFAULTS = {
    "image": "programzmh/chatnio",
    "replicas": 1,
    "port": 8000,
    "healthPath": None,  # derived from spec.config by the operator (instance/spec.py)
    "service": {"type": "ClusterIP", "port": 80},
    "database": {"host": "mariadb.db.svc", "port": 3306, "name": "chatnio"},
    "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},  # + cpu (issue 16)
    "storage": {"size": "10Gi", "retain": True},
    "logs": {"size": "5Gi"},
    "configVolume": {"size": "1Gi"},
    "maintenance": {"enabled": False},
    "offline": {"enabled": False},
}


# What a CoaiMigration with only instanceRef and targetVersion gets from the schema.
MIGRATION_DEFAULTS = {
    "dryRun": False,
    "backup": {"enabled": True, "retainData": True, "include": ["database", "storage", "config"],
               "pvc": {"size": "20Gi"}},
    "storageMigration": {"enabled": False},
    "validation": {"enabled": True, "checks": ["database", "health", "dataIntegrity"], "timeoutSeconds": 300},
    "rollback": {"policy": "Automatic", "mode": "Emergency", "requested": False},
    "maintenance": {"enabled": True},
    "backoffLimit": 1,
}


def test_minimal_instance_gets_the_seed_defaults(instance_crd) -> None:
    obj, errors = _check(instance_crd, MINIMAL_INSTANCE)
    assert errors == []
    spec = obj["spec"]
    assert {k: spec.get(k) for k in SEED_INSTANCE_DEFAULTS} == SEED_INSTANCE_DEFAULTS
    assert "redis" not in spec


def test_minimal_migration_gets_safe_defaults(migration_crd) -> None:
    obj, errors = _check(migration_crd, MINIMAL_MIGRATION)
    assert errors == []
    spec = obj["spec"]
    assert {k: spec.get(k) for k in MIGRATION_DEFAULTS} == MIGRATION_DEFAULTS


FULL_INSTANCE = {
    **MINIMAL_INSTANCE,
    "spec": {
        "version": "4.25.0", "image": "registry.example.com:5000/mirror/chatnio", "imagePullPolicy": "Always",
        "imagePullSecrets": [{"name": "regcred"}], "replicas": 2, "port": 8094, "healthPath": "/api/",
        "service": {"type": "LoadBalancer", "port": 443, "annotations": {"a/b": "c"}},
        "database": {"host": "db", "port": 3307, "name": "coai", "user": "coai",
                     "passwordSecretRef": {"name": "db", "key": "pw"}},
        "redis": {"managed": {"enabled": True, "storage": {"size": "2Gi", "storageClassName": "fast"}}},
        "secretRef": {"name": "coai-env"}, "config": {"SERVE_STATIC": "true", "MAX_TIMEOUT": "300"},
        "storage": {"size": "100Gi", "storageClassName": "standard", "retain": False},
        "logs": {"size": "1Gi"}, "configVolume": {"size": "1Gi", "storageClassName": "nfs"},
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": 2, "memory": "4Gi"}},
        "maintenance": {"enabled": True, "message": "back soon"},
        "podSecurityContext": {"fsGroup": 1000}, "securityContext": {"readOnlyRootFilesystem": False},
        "serviceAccountName": "coai", "nodeSelector": {"pool": "apps"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "apps", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}}, "podAnnotations": {"prometheus.io/scrape": "true"},
    },
    "status": {
        "phase": "Ready", "version": "4.25.0", "schemaVersion": "4.25.0", "image": "x/chatnio:4.25.0",
        "readyReplicas": 2, "endpoint": "http://chat.coai.svc:80", "activeMigration": "to-4-25",
        "observedGeneration": 3,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "2/2 ready",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3}],
    },
}
FULL_MIGRATION = {
    **MINIMAL_MIGRATION,
    "spec": {
        "instanceRef": {"name": "chat"}, "targetVersion": "2.0.0", "dryRun": False,
        "backup": {"enabled": True, "include": ["database", "config"],
                   "pvc": {"name": "chat-backups", "size": "50Gi", "storageClassName": "slow"}},
        "configMigration": {"rename": {"JWT_SECRET": "SECRET"}, "set": {"RBAC_ENABLED": "true"},
                            "remove": ["LEGACY_AUTH_ENABLED", "OLD_API_FORMAT"]},
        "migrations": {"configMapRef": {"name": "extra-sql"}},
        "storageMigration": {"enabled": True},
        "validation": {"enabled": True, "baseURL": "https://chat.example.com",
                       "apiKeySecretRef": {"name": "probe"}, "checks": ["health", "chat", "files"],
                       "timeoutSeconds": 600},
        "rollback": {"policy": "Manual", "mode": "Graceful", "requested": False},
        "maintenance": {"enabled": True, "message": "upgrading"},
        "backoffLimit": 3,
        "jobTemplate": {"image": "ghcr.io/me/engine:dev", "resources": {"limits": {"memory": "1Gi"}},
                        "serviceAccountName": "engine", "nodeSelector": {"pool": "jobs"},
                        "tolerations": [{"operator": "Exists"}], "securityContext": {"runAsUser": 0},
                        "podSecurityContext": {"fsGroup": 0}, "imagePullSecrets": [{"name": "regcred"}]},
    },
    "status": {
        "phase": "Succeeded", "fromVersion": "1.8.0", "toVersion": "2.0.0", "path": ["1.9.0", "2.0.0"],
        "steps": [{"name": "backup", "phase": "Succeeded", "job": "to-2-backup",
                   "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:01:00Z", "message": "ok"}],
        "currentStep": "validate",
        "backup": {"location": "pvc://chat-backups/to-2", "completedAt": "2026-01-01T00:01:00Z",
                   "artifacts": [{"name": "database.sql", "bytes": 2**40, "sha256": "a" * 64}],
                   "rowCounts": {"users": 10_000_000_000}},
        "previous": {"image": "programzmh/chatnio:1.8.0", "version": "1.8.0",
                     "configSnapshot": {"configMap": "to-2-config", "secret": "to-2-secret"}},
        "startedAt": "2026-01-01T00:00:00Z", "completedAt": "2026-01-01T00:05:00Z", "message": "done",
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "",
                        "lastTransitionTime": "2026-01-01T00:05:00Z"}],
    },
}


def test_full_instance_validates(instance_crd) -> None:
    obj, errors = _check(instance_crd, FULL_INSTANCE)
    assert errors == []
    assert obj["spec"]["resources"] == FULL_INSTANCE["spec"]["resources"]  # replaces the default whole


def test_full_migration_validates(migration_crd) -> None:
    _, errors = _check(migration_crd, FULL_MIGRATION)
    assert errors == []


def _with(obj: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    *parents, last = dotted.split(".")
    node = obj
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return obj


@pytest.mark.parametrize(("field", "value", "error"), [
    ("spec.version", "v3.11.2", "spec.version: should match"),
    ("spec.version", 3.11, "spec.version: expected string"),
    ("spec.image", "programzmh/chatnio:3.11.2", "spec.image: should match"),
    ("spec.replicas", -1, "spec.replicas: should be greater than or equal to 0"),
    ("spec.port", 70000, "spec.port: should be less than or equal to 65535"),
    ("spec.healthPath", "health", "spec.healthPath: should match"),
    ("spec.service.type", "Ingress", "spec.service.type: Unsupported value"),
    ("spec.database", {"port": 3306}, "spec.database.host: Required value"),
    ("spec.storage.size", "10 GB", "spec.storage.size: should match"),
    ("spec.storage.retain", "yes", "spec.storage.retain: expected boolean"),
    ("spec.config", {"A": 1}, "spec.config.A: expected string"),
    ("spec.resources", {"requests": {"memory": "lots"}}, "spec.resources.requests.memory: should match"),
    ("spec.replica", 2, "spec.replica: unknown field"),
    ("status.phase", "Running", "status.phase: Unsupported value"),
    ("status.conditions", [{"type": "Ready", "status": "Yes"}], "status.conditions[0].status: Unsupported"),
])
def test_invalid_instance_is_rejected(instance_crd, field: str, value: Any, error: str) -> None:
    _, errors = _check(instance_crd, _with(MINIMAL_INSTANCE, field, value))
    assert any(e.startswith(error) for e in errors), errors


@pytest.mark.parametrize(("field", "value", "error"), [
    ("spec.targetVersion", "2.0", "spec.targetVersion: should match"),
    ("spec.instanceRef", {}, "spec.instanceRef.name: Required value"),
    ("spec.rollback.policy", "Sometimes", "spec.rollback.policy: Unsupported value"),
    ("spec.rollback.mode", "Slow", "spec.rollback.mode: Unsupported value"),
    ("spec.backup.include", ["database", "redis"], "spec.backup.include[1]: Unsupported value"),
    ("spec.backup.include", ["database", "database"], "spec.backup.include: Duplicate value"),
    ("spec.validation.checks", ["smoke"], "spec.validation.checks[0]: Unsupported value"),
    ("spec.validation.timeoutSeconds", 0, "spec.validation.timeoutSeconds: should be greater than or equal to 1"),
    ("spec.validation.baseURL", "chat.example.com", "spec.validation.baseURL: should match"),
    ("spec.backoffLimit", 11, "spec.backoffLimit: should be less than or equal to 10"),
    ("spec.configMigration", {"rename": {"OLD": "new-name"}}, "spec.configMigration.rename.OLD: should match"),
    ("spec.dryRun", "true", "spec.dryRun: expected boolean"),
    ("status.phase", "Done", "status.phase: Unsupported value"),
    ("status.backup", {"artifacts": [{"name": "x", "sha256": "XYZ"}]}, "status.backup.artifacts[0].sha256"),
])
def test_invalid_migration_is_rejected(migration_crd, field: str, value: Any, error: str) -> None:
    _, errors = _check(migration_crd, _with(MINIMAL_MIGRATION, field, value))
    assert any(e.startswith(error) for e in errors), errors


@pytest.mark.parametrize("sample", ["10-coaiinstance.yaml", "upgrade-to-4.25.0.yaml"])
def test_the_real_app_demo_samples_pass_the_schema(instance_crd, migration_crd, sample: str) -> None:
    text = (REPO / "e2e" / "samples" / "real-app" / sample).read_text()
    text = text.replace("${MYSQL_HOST}", "10.244.0.1").replace("${MYSQL_PORT}", "3306")
    for doc in (d for d in yaml.safe_load_all(text) if d and d["kind"] != "Secret"):
        crd = instance_crd if doc["kind"] == constants.INSTANCE_KIND else migration_crd
        _, errors = _check(crd, {**doc, "metadata": {**doc["metadata"], "namespace": "coai-demo"}})
        assert errors == [], errors
