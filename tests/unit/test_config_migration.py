"""Config/env migration: the seed's migrate-config.sh as pure functions."""

from __future__ import annotations

import pytest

from coai_operator.bundles import load_bundle
from coai_operator.bundles.config_migration import (
    ConfigRules,
    ConfigRulesError,
    is_secret_key,
    merge_rules,
    migrate_config_and_secret,
    migrate_env,
)
from coai_operator.domain.versions import plan_path

BUNDLE = load_bundle()
V2 = BUNDLE.hops["1.9.0-to-2.0.0"].config

OLD_ENV = {
    "JWT_SECRET": "s3cret-value-that-is-long-enough-xx",
    "OPENAI_KEY": "sk-old",
    "LEGACY_AUTH_ENABLED": "true",
    "OLD_API_FORMAT": "1",
    "MYSQL_HOST": "db",
    "API_VERSION": "v1",
}


def test_seed_2_0_migration() -> None:
    env, changes = migrate_env(OLD_ENV, V2)
    assert env == {
        "SECRET": "s3cret-value-that-is-long-enough-xx",
        "OPENAI_API_KEY": "sk-old",
        "MYSQL_HOST": "db",
        "RBAC_ENABLED": "true",
        "MFA_ENABLED": "false",
        "API_VERSION": "v2",
        "HEALTH_CHECK_ENABLED": "true",
        "METRICS_ENABLED": "true",
        "JWT_ALGORITHM": "RS256",
        "JWT_PUBLIC_KEY_FILE": "/certs/public.pem",
        "JWT_PRIVATE_KEY_FILE": "/certs/private.pem",
    }
    assert [(c.op, c.key) for c in changes] == [
        ("rename", "JWT_SECRET"), ("rename", "OPENAI_KEY"),
        ("remove", "LEGACY_AUTH_ENABLED"), ("remove", "OLD_API_FORMAT"),
        ("set", "RBAC_ENABLED"), ("set", "MFA_ENABLED"), ("set", "API_VERSION"),
        ("set", "HEALTH_CHECK_ENABLED"),
        ("set", "JWT_ALGORITHM"), ("set", "JWT_PUBLIC_KEY_FILE"), ("set", "JWT_PRIVATE_KEY_FILE"),
        ("set", "METRICS_ENABLED"),
    ]
    api = next(c for c in changes if c.key == "API_VERSION")
    assert (api.old_value, api.new_value) == ("v1", "v2")


def test_input_is_not_modified_and_rerun_is_a_noop() -> None:
    original = dict(OLD_ENV)
    env, _ = migrate_env(OLD_ENV, V2)
    assert original == OLD_ENV
    again, changes = migrate_env(env, V2)
    assert again == env and changes == []


def test_changes_never_carry_secret_values() -> None:
    env = {**OLD_ENV, "SECRET": "already-there"}
    _, changes = migrate_env(env, V2)
    text = repr([c.to_dict() for c in changes])
    assert "s3cret" not in text and "sk-old" not in text and "already-there" not in text
    drop = next(c for c in changes if c.key == "JWT_SECRET")
    assert drop.op == "drop" and drop.secret and "already set" in drop.note


def test_rename_onto_an_existing_key_keeps_the_new_value() -> None:
    env, _ = migrate_env({"JWT_SECRET": "old", "SECRET": "new"}, V2)
    assert env["SECRET"] == "new" and "JWT_SECRET" not in env


def test_path_rules_apply_in_hop_order() -> None:
    hops = plan_path("1.6.0", "2.0.0", BUNDLE.table).hops
    rules = BUNDLE.config_rules(hops)
    assert len(rules) == 2  # 1.9 and 2.0 have config changes
    env, _ = migrate_env({"JWT_SECRET": "x"}, rules)
    assert env["FILE_PROCESSING_ENGINE"] == "v2" and env["OCR_LANGUAGES"] == "eng,fra,deu,spa"
    assert env["SECRET"] == "x" and env["RBAC_ENABLED"] == "true"


def test_user_overrides_win() -> None:
    rules = merge_rules([V2], {
        "rename": {"OPENAI_KEY": "", "JWT_SECRET": "APP_SECRET"},
        "set": {"MFA_ENABLED": True, "METRICS_ENABLED": None, "EXTRA": 5},
        "remove": ["HEALTH_CHECK_ENABLED", "MYSQL_HOST"],
    })
    env, _ = migrate_env(OLD_ENV, rules)
    assert env["APP_SECRET"] == OLD_ENV["JWT_SECRET"] and "SECRET" not in env
    assert env["OPENAI_KEY"] == "sk-old" and "OPENAI_API_KEY" not in env  # rename cancelled
    assert env["MFA_ENABLED"] == "true"  # bool -> env string
    assert "METRICS_ENABLED" not in env  # bundle setting cancelled
    assert "HEALTH_CHECK_ENABLED" not in env and "MYSQL_HOST" not in env
    assert env["EXTRA"] == "5"


def test_user_set_keeps_a_key_the_bundle_removes() -> None:
    env, _ = migrate_env(OLD_ENV, merge_rules([V2], {"set": {"OLD_API_FORMAT": "2"}}))
    assert env["OLD_API_FORMAT"] == "2"


def test_no_overrides_is_the_bundle() -> None:
    assert merge_rules([V2], None) == [V2]
    assert merge_rules([ConfigRules()], {}) == []


@pytest.mark.parametrize("overrides", [
    {"rename": {"BAD NAME": "X"}},
    {"set": {"K": ["list"]}},
    {"delete": ["K"]},
])
def test_invalid_overrides(overrides: dict) -> None:
    with pytest.raises(ConfigRulesError):
        merge_rules([V2], overrides)


def test_from_mapping_normalizes_yaml_values() -> None:
    rules = ConfigRules.from_mapping({"set": {"A": True, "B": 90, "C": "x"}, "remove": ["D"]})
    assert rules.set == {"A": "true", "B": "90", "C": "x"} and rules.remove == ("D",)
    with pytest.raises(ConfigRulesError, match="unknown"):
        ConfigRules.from_mapping({"sett": {}})


@pytest.mark.parametrize(("key", "secret"), [
    ("SECRET", True), ("JWT_SECRET", True), ("OPENAI_API_KEY", True), ("OPENAI_KEY", True),
    ("REDIS_PASSWORD", True), ("GITHUB_TOKEN", True), ("API_VERSION", False), ("MYSQL_HOST", False),
    ("RBAC_ENABLED", False),
])
def test_is_secret_key(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_configmap_and_secret_keep_their_sides() -> None:
    config = {"MYSQL_HOST": "db", "LEGACY_AUTH_ENABLED": "true", "API_VERSION": "v1"}
    secret = {"JWT_SECRET": "jwt", "OPENAI_KEY": "sk"}
    result = migrate_config_and_secret(config, secret, V2)
    assert result.secret == {"SECRET": "jwt", "OPENAI_API_KEY": "sk"}
    assert result.config == {"MYSQL_HOST": "db", "API_VERSION": "v2", "RBAC_ENABLED": "true",
                             "MFA_ENABLED": "false", "HEALTH_CHECK_ENABLED": "true", "METRICS_ENABLED": "true",
                             "JWT_ALGORITHM": "RS256", "JWT_PUBLIC_KEY_FILE": "/certs/public.pem",
                             "JWT_PRIVATE_KEY_FILE": "/certs/private.pem"}
    assert result.config_changed and result.secret_changed


def test_new_secret_keys_go_to_the_secret() -> None:
    result = migrate_config_and_secret({}, {}, ConfigRules(set={"WEBHOOK_SECRET": "w", "PLAIN": "p"}))
    assert result.secret == {"WEBHOOK_SECRET": "w"} and result.config == {"PLAIN": "p"}
    assert not [c for c in result.changes if c.new_value == "w"]
