"""Five-field cron expressions (minute hour day-of-month month day-of-week) in a time zone. Pure.

Supports `*`, lists, ranges, steps (`*/15`, `1-5/2`), names (jan, mon) and the usual macros
(@hourly, @daily, @weekly, @monthly, @yearly). Day-of-month and day-of-week combine like cron:
when both are restricted, either may match.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
          "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
MONTHS = {n: i + 1 for i, n in enumerate(_MONTH_NAMES)}
DAYS = {n: i for i, n in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
FIELDS = ((0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, MONTHS), (0, 7, DAYS))


class CronError(ValueError):
    pass


def _values(part: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    out: set[int] = set()
    for item in part.lower().split(","):
        rng, _, step_s = item.partition("/")
        step = int(step_s) if step_s.isdigit() and int(step_s) > 0 else None
        if step_s and step is None:
            raise CronError(f"bad step in {item!r}")
        if rng == "*":
            start, end = low, high
        else:
            a, _, b = rng.partition("-")
            try:
                start = names[a] if a in names else int(a)
                end = (names[b] if b in names else int(b)) if b else (high if step else start)
            except ValueError as exc:
                raise CronError(f"{item!r} is not a number, range or name") from exc
        if not (low <= start <= high and low <= end <= high and start <= end):
            raise CronError(f"{item!r} is outside {low}-{high}")
        out.update(range(start, end + 1, step or 1))
    return out


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    dom_any: bool
    dow_any: bool
    zone: ZoneInfo

    @classmethod
    def parse(cls, expr: str, tz: str = "UTC") -> Cron:
        text = MACROS.get(expr.strip().lower(), expr.strip())
        parts = text.split()
        if len(parts) != 5:
            raise CronError(f"{expr!r} needs 5 fields (minute hour day-of-month month day-of-week)")
        try:
            zone = ZoneInfo(tz or "UTC")
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise CronError(f"unknown time zone {tz!r}") from exc
        sets = [_values(p, lo, hi, names) for p, (lo, hi, names) in zip(parts, FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(frozenset(sets[0]), frozenset(sets[1]), frozenset(sets[2]), frozenset(sets[3]), weekdays,
                   parts[2] == "*", parts[4] == "*", zone)

    def _day_matches(self, t: datetime) -> bool:
        dom, dow = t.day in self.days, (t.isoweekday() % 7) in self.weekdays
        if self.dom_any or self.dow_any:
            return dom and dow
        return dom or dow

    def next_after(self, after: datetime) -> datetime:
        """The first matching minute strictly after `after` (aware), returned in UTC."""
        t = after.astimezone(self.zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(366 * 24 * 60 * 5):
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
                continue
            if t.minute not in self.minutes:
                t += timedelta(minutes=1)
                continue
            return t.astimezone(ZoneInfo("UTC"))
        raise CronError("the expression never matches")
