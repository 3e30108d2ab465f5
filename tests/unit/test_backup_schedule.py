"""Cron parsing/next times and the retention plan (count, tiers, pins, never below one good)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from coai_operator.backup.cron import Cron, CronError
from coai_operator.backup.retention import Candidate, Policy, plan

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), [
    ("*/15 * * * *", "UTC", T0, datetime(2026, 3, 2, 12, 15, tzinfo=UTC)),
    ("0 3 * * *", "UTC", T0, datetime(2026, 3, 3, 3, 0, tzinfo=UTC)),
    ("@daily", "UTC", T0, datetime(2026, 3, 3, 0, 0, tzinfo=UTC)),
    ("30 2 * * sun", "UTC", T0, datetime(2026, 3, 8, 2, 30, tzinfo=UTC)),
    ("0 0 1 jan-mar/2 *", "UTC", T0, datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
    ("0 3 * * *", "Europe/Berlin", T0, datetime(2026, 3, 3, 2, 0, tzinfo=UTC)),  # 03:00 CET
    ("0 0 13 * 5", "UTC", T0, datetime(2026, 3, 6, 0, 0, tzinfo=UTC)),  # dom OR dow when both restricted
])
def test_next_run(expr: str, tz: str, after: datetime, expected: datetime) -> None:
    assert Cron.parse(expr, tz).next_after(after) == expected


@pytest.mark.parametrize(("expr", "tz", "message"), [
    ("* * * *", "UTC", "5 fields"), ("61 * * * *", "UTC", "outside"), ("a * * * *", "UTC", "not a number"),
    ("*/0 * * * *", "UTC", "bad step"), ("0 0 * * *", "Mars/Olympus", "time zone"),
])
def test_bad_cron_named(expr: str, tz: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        Cron.parse(expr, tz)


def _c(name: str, hours_ago: float, good: bool = True, pinned: bool = False) -> Candidate:
    return Candidate(name, T0 - timedelta(hours=hours_ago), good, pinned)


def test_keep_last_n_good() -> None:
    items = [_c(f"b{i}", i) for i in range(6)]
    keep, prune = plan(items, Policy(keep_last=3))
    assert keep == ["b0", "b1", "b2"] and prune == ["b3", "b4", "b5"]


def test_never_below_one_good_when_newer_ones_failed() -> None:
    items = [_c("f0", 0, good=False), _c("f1", 1, good=False), _c("g2", 2), _c("g3", 3)]
    keep, prune = plan(items, Policy(keep_last=0))
    assert keep == ["f0", "g2"] and prune == ["f1", "g3"]


def test_failed_older_than_a_good_backup_is_pruned() -> None:
    keep, prune = plan([_c("g0", 0), _c("f1", 1, good=False)], Policy(keep_last=5))
    assert keep == ["g0"] and prune == ["f1"]


def test_pinned_never_pruned() -> None:
    items = [_c("b0", 0), _c("b1", 1), _c("old-pinned", 500, pinned=True)]
    keep, prune = plan(items, Policy(keep_last=1))
    assert keep == ["b0", "old-pinned"] and prune == ["b1"]


def test_daily_weekly_monthly_tiers() -> None:
    # one backup every 12 hours for 70 days
    items = [_c(f"b{i:03d}", 12 * i) for i in range(140)]
    keep, _ = plan(items, Policy(keep_last=2, daily=3, weekly=2, monthly=3))
    kept = {c.name: c.created for c in items if c.name in keep}
    assert {"b000", "b001"} <= set(kept)  # keepLast
    days = {t.date() for t in kept.values()}
    assert {T0.date(), (T0 - timedelta(days=1)).date(), (T0 - timedelta(days=2)).date()} <= days
    assert {(2026, 3), (2026, 2), (2026, 1)} <= {(t.year, t.month) for t in kept.values()}
    assert len(keep) <= 2 + 3 + 2 + 3


def test_tiers_keep_newest_of_each_period() -> None:
    items = [_c("mon-noon", 0), _c("mon-morning", 4), _c("sun", 24)]
    keep, prune = plan(items, Policy(keep_last=0, daily=2))
    assert keep == ["mon-noon", "sun"] and prune == ["mon-morning"]
