"""Versions, the compatibility table and the upgrade planner (pure: no I/O).

Schema changes happen per release line (1.6.x, 1.7.x ...): every line has one schema version
(X.Y.0) and the bundle holds one hop between consecutive lines. A patch release has the schema of
its line, so 1.9.0 -> 1.9.4 needs no migration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from coai_operator.domain.errors import PlanError

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?$")

SUPPORT_STATUSES = ("current", "maintenance", "eol")


class UnknownVersionError(PlanError):
    reason = "UnknownVersion"


class DowngradeError(PlanError):
    reason = "Downgrade"


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str | Version) -> Version:
        """`2.0.1`, `v2.0.1` (image tag style) or `2.0` (= 2.0.0)."""
        if isinstance(text, Version):
            return text
        match = _VERSION_RE.match(str(text).strip())
        if not match:
            raise UnknownVersionError(f"{text!r} is not a version: expected X.Y.Z, e.g. 2.0.0")
        major, minor, patch = match.groups()
        return cls(int(major), int(minor), int(patch or 0))

    @property
    def line(self) -> tuple[int, int]:
        return (self.major, self.minor)

    @property
    def line_name(self) -> str:
        return f"{self.major}.{self.minor}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class LineInfo:
    """One row of the compatibility table (a release line such as 2.0.x)."""

    version: Version  # the line's schema version, X.Y.0
    support: str  # current | maintenance | eol
    released: str = ""
    requires_from: Version | None = None  # lowest line the seed documents an upgrade from
    note: str = ""

    @property
    def line(self) -> tuple[int, int]:
        return self.version.line

    @property
    def eol(self) -> bool:
        return self.support == "eol"


@dataclass(frozen=True)
class CompatTable:
    lines: tuple[LineInfo, ...]  # ordered oldest first

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.lines, key=lambda info: info.version))
        object.__setattr__(self, "lines", ordered)

    def get(self, version: Version) -> LineInfo | None:
        return next((info for info in self.lines if info.line == version.line), None)

    def known(self) -> str:
        if not self.lines:
            return "none"
        return f"{self.lines[0].version.line_name}.x to {self.lines[-1].version.line_name}.x"


@dataclass(frozen=True)
class Hop:
    """One schema step between consecutive release lines."""

    source: Version
    target: Version

    @property
    def id(self) -> str:
        return f"{self.source}-to-{self.target}"

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}"


@dataclass(frozen=True)
class Plan:
    current: Version
    target: Version
    schema_current: Version
    schema_target: Version
    hops: tuple[Hop, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def noop(self) -> bool:
        return not self.hops

    def to_dict(self) -> dict[str, object]:
        return {
            "current": str(self.current),
            "target": str(self.target),
            "schema_current": str(self.schema_current),
            "schema_target": str(self.schema_target),
            "path": [hop.id for hop in self.hops],
            "noop": self.noop,
            "warnings": list(self.warnings),
        }


def plan_path(
    current: Version | str, target: Version | str, table: CompatTable, *, direct: bool = False
) -> Plan:
    """The hops that take a schema at `current` to `target`, or PlanError saying why not.

    The engine walks the chain one line at a time, so each line's "requires from" is checked
    against the schema version at the moment of that hop (1.6 -> 2.0 passes through 1.8 before
    the 2.0 hop). With `direct=True` the requirement of the target line must hold for `current`
    itself, which is the seed's table read literally ("v2.0.x: from v1.8+"); use it to check
    the version of the *deployed app* when it must be upgraded in one jump.
    """
    cur, tgt = Version.parse(current), Version.parse(target)
    cur_info, tgt_info = table.get(cur), table.get(tgt)
    if cur_info is None:
        raise UnknownVersionError(
            f"current version {cur} is not in the compatibility table (known: {table.known()});"
            " migrate it by hand to a known version or restore a backup"
        )
    if tgt_info is None:
        raise UnknownVersionError(f"target version {tgt} is not in the compatibility table (known: {table.known()})")
    if tgt < cur:
        raise DowngradeError(
            f"target {tgt} is older than the current {cur}: downgrades are not migrations;"
            " roll back by restoring the pre-upgrade backup"
        )

    warnings: list[str] = []
    if cur_info.eol:
        warnings.append(f"source {cur.line_name}.x is end of life{_released(cur_info)}: upgrade off it")
    if tgt_info.eol:
        warnings.append(f"target {tgt.line_name}.x is end of life{_released(tgt_info)}: consider a newer target")

    if direct and tgt_info.requires_from is not None and cur.line < tgt_info.requires_from.line:
        raise PlanError(
            f"{tgt.line_name}.x can only be upgraded to from {tgt_info.requires_from.line_name} or newer"
            f" (current {cur}); upgrade to {tgt_info.requires_from.line_name}.x first"
        )

    hops: list[Hop] = []
    between = [info for info in table.lines if cur.line < info.line <= tgt.line]
    position = cur_info.version
    for info in between:
        if info.requires_from is not None and position.line < info.requires_from.line:
            # Only reachable with a table that skips lines; the bundled one never does.
            raise PlanError(
                f"no supported path from {cur} to {tgt}: {info.version.line_name}.x needs"
                f" {info.requires_from.line_name} or newer, the chain reaches it from {position}"
            )
        hops.append(Hop(position, info.version))
        position = info.version
    return Plan(
        current=cur,
        target=tgt,
        schema_current=cur_info.version,
        schema_target=tgt_info.version,
        hops=tuple(hops),
        warnings=tuple(warnings),
    )


def _released(info: LineInfo) -> str:
    return f" (released {info.released})" if info.released else ""
