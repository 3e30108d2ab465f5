"""Config/env migration between versions: pure functions, no I/O.

Each hop of the bundle declares `{rename, set, remove}` (the seed's migrate-config.sh as data).
A migration's rules are the rule sets of the hops on its path, in order, merged with the user's
`spec.configMigration` overrides by `merge_rules`. `migrate_env` applies them to one env dict;
`migrate_config_and_secret` applies them to an instance's ConfigMap + Secret pair and keeps
every key on the side it belongs to.

Within one rule set the order is rename, then remove, then set. Renaming onto a key that is
already present keeps the present value and drops the old key (the new name is what the new
version reads). Changes never carry the values of secret keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Keys that hold credentials. The 2.0 renames JWT_SECRET -> SECRET and OPENAI_KEY -> OPENAI_API_KEY
# both move secrets: they live in the instance's Secret, never in its ConfigMap.
SECRET_KEYS = frozenset(
    {"SECRET", "JWT_SECRET", "OPENAI_API_KEY", "OPENAI_KEY", "MYSQL_PASSWORD", "REDIS_PASSWORD", "ADMIN_API_KEY"}
)
_SECRET_SUFFIXES = ("_SECRET", "_PASSWORD", "_TOKEN", "_API_KEY", "_KEY", "_PRIVATE_KEY")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class ConfigRulesError(ValueError):
    pass


def is_secret_key(key: str) -> bool:
    """Whether an env key holds a credential (its value is never shown, it belongs in a Secret)."""
    upper = key.upper()
    return upper in SECRET_KEYS or upper.endswith(_SECRET_SUFFIXES)


def _env_value(key: str, value: Any) -> str:
    # YAML turns `true` into a bool and `90` into an int; env values are strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ConfigRulesError(f"config value for {key} must be a string, number or boolean, not {type(value).__name__}")


def _check_name(key: object) -> str:
    if not isinstance(key, str) or not _ENV_NAME.match(key):
        raise ConfigRulesError(f"{key!r} is not a valid environment variable name")
    return key


@dataclass(frozen=True)
class ConfigRules:
    rename: Mapping[str, str] = field(default_factory=dict)
    set: Mapping[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> ConfigRules:
        """Bundle data (`hops.yaml`): plain names and values only."""
        data = data or {}
        unknown = set(data) - {"rename", "set", "remove"}
        if unknown:
            raise ConfigRulesError(f"unknown config rule field(s): {', '.join(sorted(unknown))}")
        rename = {_check_name(k): _check_name(v) for k, v in (data.get("rename") or {}).items()}
        values = {_check_name(k): _env_value(k, v) for k, v in (data.get("set") or {}).items()}
        remove = tuple(_check_name(k) for k in (data.get("remove") or []))
        return cls(rename=rename, set=values, remove=remove)

    def is_empty(self) -> bool:
        return not (self.rename or self.set or self.remove)

    def to_dict(self) -> dict[str, Any]:
        return {"rename": dict(self.rename), "set": dict(self.set), "remove": list(self.remove)}


@dataclass(frozen=True)
class ConfigChange:
    op: str  # rename | set | remove | drop
    key: str
    new_key: str | None = None
    old_value: str | None = None  # None for secret keys
    new_value: str | None = None
    secret: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


def merge_rules(path_rules: Sequence[ConfigRules], overrides: Mapping[str, Any] | None) -> list[ConfigRules]:
    """The rule sets of a path, adjusted by the user's `{rename, set, remove}` overrides.

    Overrides win: `rename: {OLD: NEW}` replaces the bundle's rename of OLD, `rename: {OLD: ""}`
    cancels it; `set: {K: V}` forces K=V, `set: {K: null}` cancels the bundle's setting of K;
    `remove: [K]` removes K (and cancels the bundle's setting of it). The user's own rules run
    after all the hops' rules.
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - {"rename", "set", "remove"}
    if unknown:
        raise ConfigRulesError(f"unknown configMigration field(s): {', '.join(sorted(unknown))}")
    o_rename: dict[str, str | None] = {
        _check_name(k): (None if v in (None, "") else _check_name(v))
        for k, v in (overrides.get("rename") or {}).items()
    }
    o_set: dict[str, str | None] = {
        _check_name(k): (None if v is None else _env_value(k, v)) for k, v in (overrides.get("set") or {}).items()
    }
    o_remove = [_check_name(k) for k in (overrides.get("remove") or [])]

    merged: list[ConfigRules] = []
    for rules in path_rules:
        merged.append(
            ConfigRules(
                rename={k: v for k, v in rules.rename.items() if k not in o_rename},
                set={k: v for k, v in rules.set.items() if k not in o_set and k not in o_remove},
                remove=tuple(k for k in rules.remove if k not in o_set),
            )
        )
    user = ConfigRules(
        rename={k: v for k, v in o_rename.items() if v is not None},
        set={k: v for k, v in o_set.items() if v is not None},
        remove=tuple(k for k in o_remove if k not in o_set or o_set[k] is None),
    )
    if not user.is_empty():
        merged.append(user)
    return [rules for rules in merged if not rules.is_empty()]


def migrate_env(
    env: Mapping[str, str], rules: ConfigRules | Sequence[ConfigRules]
) -> tuple[dict[str, str], list[ConfigChange]]:
    """Apply rule sets in order to a copy of `env`; return it and what changed.

    Idempotent: applying the same rules to the result changes nothing.
    """
    rule_sets = [rules] if isinstance(rules, ConfigRules) else list(rules)
    result = dict(env)
    changes: list[ConfigChange] = []
    for rs in rule_sets:
        for old, new in rs.rename.items():
            if old == new or old not in result:
                continue
            secret = is_secret_key(old) or is_secret_key(new)
            value = result.pop(old)
            if new in result:
                changes.append(ConfigChange("drop", old, new_key=new, secret=secret,
                                            old_value=None if secret else value,
                                            note=f"{new} is already set; kept its value"))
            else:
                result[new] = value
                changes.append(ConfigChange("rename", old, new_key=new, secret=secret))
        for key in rs.remove:
            if key in result:
                secret = is_secret_key(key)
                value = result.pop(key)
                changes.append(ConfigChange("remove", key, secret=secret, old_value=None if secret else value))
        for key, value in rs.set.items():
            if result.get(key) == value:
                continue
            secret = is_secret_key(key)
            previous = result.get(key)
            result[key] = value
            changes.append(ConfigChange("set", key, secret=secret,
                                        old_value=None if secret else previous,
                                        new_value=None if secret else value))
    return result, changes


@dataclass(frozen=True)
class ConfigMigration:
    config: dict[str, str]  # new ConfigMap data
    secret: dict[str, str]  # new Secret data (string values, not base64)
    changes: list[ConfigChange]

    @property
    def config_changed(self) -> bool:
        return any(not c.secret for c in self.changes)

    @property
    def secret_changed(self) -> bool:
        return any(c.secret for c in self.changes)


def migrate_config_and_secret(
    config: Mapping[str, str], secret: Mapping[str, str], rules: ConfigRules | Sequence[ConfigRules]
) -> ConfigMigration:
    """Migrate an instance's ConfigMap and Secret together, as one env.

    A renamed key stays on the side its old name was on (JWT_SECRET in the Secret becomes SECRET
    in the Secret); a key added by `set` goes to the Secret if `is_secret_key`, else the ConfigMap.
    A key present on both sides is taken from the Secret (that is what envFrom order gives the app
    when the Secret comes last).
    """
    origin: dict[str, str] = {k: "config" for k in config}
    origin.update({k: "secret" for k in secret})
    env, changes = migrate_env({**config, **secret}, rules)
    for change in changes:
        if change.op == "rename" and change.new_key is not None:
            origin[change.new_key] = origin.get(change.key, "config")
    new_config: dict[str, str] = {}
    new_secret: dict[str, str] = {}
    for key, value in env.items():
        side = origin.get(key) or ("secret" if is_secret_key(key) else "config")
        (new_secret if side == "secret" else new_config)[key] = value
    return ConfigMigration(config=new_config, secret=new_secret, changes=changes)
