"""Which backups a schedule keeps: by count and by daily / weekly / monthly tiers. Pure.

Rules, in order:
- a pinned backup (a migration may still roll back to it) is never pruned;
- a backup that has not finished is never pruned (it is not in the candidate list at all);
- of the good backups (Completed), keep the newest `keepLast`, plus the newest of each of the
  last `daily` days, `weekly` ISO weeks and `monthly` months that have a good backup;
- never fewer than one good backup, whatever the policy says and however many newer ones failed;
- failed backups are pruned, except the newest one when it is newer than every good backup
  (its reason stays visible until a good backup follows).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Candidate:
    name: str
    created: datetime
    good: bool
    pinned: bool = False


@dataclass(frozen=True)
class Policy:
    keep_last: int = 7
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    @classmethod
    def from_spec(cls, spec: dict | None) -> Policy:
        spec = spec or {}
        return cls(int(spec.get("keepLast", 7)), int(spec.get("daily", 0)), int(spec.get("weekly", 0)),
                   int(spec.get("monthly", 0)))


def _tier(good: list[Candidate], count: int, bucket: Callable[[datetime], tuple]) -> set[str]:
    kept: set[str] = set()
    seen: set[tuple] = set()
    for c in good:  # newest first
        key = bucket(c.created)
        if key in seen:
            continue
        if len(seen) >= count:
            break
        seen.add(key)
        kept.add(c.name)
    return kept


def plan(candidates: Iterable[Candidate], policy: Policy) -> tuple[list[str], list[str]]:
    """(keep, prune), both newest first."""
    items = sorted(candidates, key=lambda c: (c.created, c.name), reverse=True)
    good = [c for c in items if c.good]
    keep = {c.name for c in good[: max(policy.keep_last, 0)]}
    keep |= _tier(good, policy.daily, lambda t: (t.year, t.month, t.day))
    keep |= _tier(good, policy.weekly, lambda t: tuple(t.isocalendar()[:2]))
    keep |= _tier(good, policy.monthly, lambda t: (t.year, t.month))
    if good and not keep & {c.name for c in good}:
        keep.add(good[0].name)
    failed = [c for c in items if not c.good]
    if failed and (not good or failed[0].created > good[0].created):
        keep.add(failed[0].name)
    keep |= {c.name for c in items if c.pinned}
    return [c.name for c in items if c.name in keep], [c.name for c in items if c.name not in keep]
