"""Versioned migration data: compatibility table, baseline schema, hops, config rules.

`load_bundle()` reads the data shipped in this package (importlib.resources); `load_bundle(dir)`
also applies a user's bundle directory (see README.md for its format).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from coai_operator.bundles.config_migration import ConfigRules, merge_rules
from coai_operator.bundles.steps import STEP_KINDS, BundleError, Step, load_step, validate_step
from coai_operator.domain.errors import EngineError
from coai_operator.domain.versions import CompatTable, Hop, LineInfo, Version, plan_path

log = logging.getLogger(__name__)

__all__ = ["STEP_KINDS", "Baseline", "Bundle", "BundleError", "HopBundle", "Step", "load_bundle"]

_V = r"v?\d+\.\d+(?:\.\d+)?"
_HOP_FILE = re.compile(rf"^({_V})-to-({_V})(?:\.([a-z0-9][a-z0-9_-]*))?\.sql$")
_EXTRA_FILE = re.compile(rf"^({_V})-([a-z0-9][a-z0-9_-]*)\.sql$")


@dataclass(frozen=True)
class HopBundle:
    hop: Hop
    description: str
    steps: tuple[Step, ...]
    markers: tuple[str, ...] = ()
    config: ConfigRules = field(default_factory=ConfigRules)

    @property
    def version(self) -> Version:
        return self.hop.target

    @property
    def checksum(self) -> str:
        body = json.dumps([step.content() for step in self.steps], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()

    def step_names(self) -> list[str]:
        return [f"{self.version}/{step.id}" for step in self.steps]


@dataclass(frozen=True)
class Baseline:
    version: Version
    description: str
    sql: str
    markers: tuple[str, ...]

    def as_hop(self) -> HopBundle:
        """The baseline as a one-step hop onto itself, so installing it is resumable like a hop."""
        step = Step(id="schema", kind="sql", sql=self.sql, origin="bundle:baseline")
        return HopBundle(hop=Hop(self.version, self.version), description=self.description, steps=(step,),
                         markers=self.markers)

    @property
    def checksum(self) -> str:
        return self.as_hop().checksum


@dataclass(frozen=True)
class Bundle:
    table: CompatTable
    baseline: Baseline
    hops: Mapping[str, HopBundle]  # by Hop.id
    overrides: tuple[str, ...] = ()  # files applied from a bundle directory

    def hop(self, hop: Hop) -> HopBundle:
        try:
            return self.hops[hop.id]
        except KeyError:
            raise BundleError(f"the bundle has no hop {hop}") from None

    def hops_to(self, version: Version) -> list[HopBundle]:
        """The hops from the baseline up to `version`'s line, in order."""
        plan = plan_path(self.baseline.version, version, self.table)
        return [self.hop(h) for h in plan.hops]

    def markers(self) -> list[tuple[Version, tuple[str, ...]]]:
        """Schema fingerprints per version, oldest first (the baseline, then each hop)."""
        ordered = sorted(self.hops.values(), key=lambda hb: hb.version)
        return [(self.baseline.version, self.baseline.markers)] + [(hb.version, hb.markers) for hb in ordered]

    def config_rules(self, hops: Sequence[Hop], overrides: Mapping[str, Any] | None = None) -> list[ConfigRules]:
        """The env migration for a path: each hop's defaults in order, merged with user overrides."""
        return merge_rules([self.hop(h).config for h in hops], overrides)


def _read_package_text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _yaml(name: str) -> Any:
    return yaml.safe_load(_read_package_text(name))


def _version(value: Any, where: str) -> Version:
    try:
        return Version.parse(str(value))
    except EngineError as exc:
        raise BundleError(f"{where}: {exc}") from exc


def _load_table(data: Mapping[str, Any]) -> CompatTable:
    lines = []
    for row in data.get("lines") or []:
        where = f"compatibility.yaml line {row.get('version')}"
        version = _version(row["version"], where)
        support = str(row.get("support", "current"))
        if support not in ("current", "maintenance", "eol"):
            raise BundleError(f"{where}: support must be current, maintenance or eol")
        requires = row.get("requires_from")
        lines.append(
            LineInfo(
                version=version,
                support=support,
                released=str(row.get("released", "")),
                requires_from=_version(requires, where) if requires else None,
                note=str(row.get("note", "")),
            )
        )
    return CompatTable(tuple(lines))


def _load_hop(raw: Mapping[str, Any]) -> HopBundle:
    hop = Hop(_version(raw["from"], "hops.yaml"), _version(raw["to"], "hops.yaml"))
    where = f"hops.yaml hop {hop}"
    steps = tuple(load_step(s, where, _read_package_text) for s in raw.get("steps") or [])
    ids = [s.id for s in steps]
    if len(set(ids)) != len(ids):
        raise BundleError(f"{where}: duplicate step ids")
    try:
        config = ConfigRules.from_mapping(raw.get("config"))
    except ValueError as exc:
        raise BundleError(f"{where}: {exc}") from exc
    return HopBundle(
        hop=hop,
        description=str(raw.get("description", "")),
        steps=steps,
        markers=tuple(raw.get("markers") or ()),
        config=config,
    )


def load_bundle(bundle_dir: str | Path | None = None) -> Bundle:
    """The shipped bundle, with a user's bundle directory applied when one is given."""
    bundle = _shipped_bundle()
    return bundle if bundle_dir is None else apply_bundle_dir(bundle, Path(bundle_dir))


@functools.cache
def _shipped_bundle() -> Bundle:
    # Read once per process: parsing the YAML and splitting the SQL was 85 % of a CoaiInstance
    # reconcile's CPU (every reconcile asks for the compatibility table). Immutable, so sharing is safe.
    table = _load_table(_yaml("compatibility.yaml"))
    data = _yaml("hops.yaml")
    base = data["baseline"]
    baseline = Baseline(
        version=_version(base["version"], "hops.yaml baseline"),
        description=str(base.get("description", "baseline schema")),
        sql=_read_package_text(base["file"]),
        markers=tuple(base.get("markers") or ()),
    )
    hops = {hb.hop.id: hb for hb in (_load_hop(raw) for raw in data.get("hops") or [])}
    _check_chain(table, baseline, hops)
    return Bundle(table=table, baseline=baseline, hops=MappingProxyType(hops))


def _check_chain(table: CompatTable, baseline: Baseline, hops: Mapping[str, HopBundle]) -> None:
    if table.get(baseline.version) is None:
        raise BundleError(f"baseline {baseline.version} is not in the compatibility table")
    expected = plan_path(baseline.version, table.lines[-1].version, table).hops
    missing = [str(h) for h in expected if h.id not in hops]
    if missing:
        raise BundleError(f"hops.yaml lacks hop(s) {', '.join(missing)}")
    extra = sorted(set(hops) - {h.id for h in expected})
    if extra:
        raise BundleError(f"hops.yaml has hop(s) not between consecutive lines: {', '.join(extra)}")


def apply_bundle_dir(bundle: Bundle, directory: Path) -> Bundle:
    """Apply override and extra SQL files from a directory (e.g. a mounted ConfigMap).

    `<from>-to-<to>.sql` replaces the hop's `schema` step, `<from>-to-<to>.<step>.sql` replaces
    that step's SQL, `<to>-<name>.sql` adds a `sql` step named <name> after the hop's own steps
    (extras run in file-name order). Anything else ending in .sql is an error; dotfiles (the
    ConfigMap mount's ..data links) and other files are ignored.
    """
    if not directory.is_dir():
        raise BundleError(f"--bundle-dir {directory} is not a directory")
    hops = dict(bundle.hops)
    by_target = {hb.version: hop_id for hop_id, hb in hops.items()}
    extras: dict[str, list[Step]] = {}
    applied: list[str] = []
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        name = path.name
        if name.startswith(".") or not path.is_file():
            continue
        if not name.endswith(".sql"):
            log.warning("bundle dir: ignoring %s (not a .sql file)", name)
            continue
        sql = path.read_text(encoding="utf-8")
        origin = f"bundle-dir:{name}"
        if match := _HOP_FILE.match(name):
            hop = Hop(_version(match[1], name), _version(match[2], name))
            if hop.id not in hops:
                raise BundleError(f"bundle dir file {name}: there is no hop {hop} (hops: {', '.join(hops)})")
            step_id = match[3] or "schema"
            hb = hops[hop.id]
            if step_id not in {s.id for s in hb.steps}:
                known = ", ".join(s.id for s in hb.steps)
                raise BundleError(f"bundle dir file {name}: hop {hop} has no step {step_id!r} (steps: {known})")
            steps = tuple(replace(s, sql=sql, origin=origin) if s.id == step_id else s for s in hb.steps)
            for s in steps:
                validate_step(s, f"bundle dir file {name}")
            hops[hop.id] = replace(hb, steps=steps)
        elif (match := _EXTRA_FILE.match(name)) and not match[2].startswith("to-"):
            version = _version(match[1], name)
            if version not in by_target:
                raise BundleError(f"bundle dir file {name}: no hop ends at {version}")
            step = Step(id=match[2], kind="sql", sql=sql, origin=origin)
            validate_step(step, f"bundle dir file {name}")
            extras.setdefault(by_target[version], []).append(step)
        else:
            raise BundleError(
                f"bundle dir file {name}: expected <from>-to-<to>.sql, <from>-to-<to>.<step>.sql"
                " or <version>-<name>.sql"
            )
        applied.append(name)
    for hop_id, steps in extras.items():
        hb = hops[hop_id]
        taken = {s.id for s in hb.steps}
        clash = [s.id for s in steps if s.id in taken]
        if clash:
            raise BundleError(f"bundle dir: extra step name(s) {', '.join(clash)} clash with hop {hb.hop}'s steps")
        hops[hop_id] = replace(hb, steps=hb.steps + tuple(steps))
    if applied:
        log.info("bundle dir %s: applied %s", directory, ", ".join(applied))
    return replace(bundle, hops=hops, overrides=bundle.overrides + tuple(applied))
