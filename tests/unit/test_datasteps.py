"""The pure part of a `daily` step: whole days per batch, resumable after the last day done."""

from __future__ import annotations

import datetime

import pytest

from coai_operator.bundles import Step
from coai_operator.domain.errors import MigrationError
from coai_operator.engine.datasteps import copy_statement, day_key, day_ranges

STEP = Step(id="agg", kind="daily", sql="SELECT 1", write="INSERT")
D0, D1, D2, D3 = (datetime.date(2026, 1, 29), datetime.date(2026, 1, 30), datetime.date(2026, 1, 31),
                  datetime.date(2026, 2, 1))
DAYS = [(D2, 2), (D3, 1), (D1, 2)]  # (day, rows that day), in any order


def test_days_never_split_and_come_in_day_order() -> None:
    assert day_ranges(DAYS, STEP, None, batch_size=3) == [(D0, D2), (D2, D3)]
    assert day_ranges(DAYS, STEP, None, batch_size=100) == [(D0, D3)]


def test_a_batch_of_one_row_is_one_day_per_batch() -> None:
    assert day_ranges(DAYS, STEP, None, batch_size=1) == [(D0, D1), (D1, D2), (D2, D3)]


def test_resume_starts_after_the_last_day_written() -> None:
    assert day_ranges(DAYS, STEP, 20260130, batch_size=100) == [(D1, D3)]
    assert day_ranges(DAYS, STEP, 20260131, batch_size=1) == [(D2, D3)]
    assert day_ranges(DAYS, STEP, 20260201, batch_size=100) == []
    assert day_ranges([], STEP, None, batch_size=100) == []


@pytest.mark.parametrize("value", [None, "2026-01-30", 20260130])
def test_the_first_column_must_be_a_date(value: object) -> None:
    with pytest.raises(MigrationError, match="must be a DATE"):
        day_key(value, STEP)


def test_the_write_copies_one_day_range_from_the_aggregate() -> None:
    write = ("INSERT INTO analytics_daily (day, n) VALUES (%s, %s)\n"
             "ON DUPLICATE KEY UPDATE n = VALUES(n)")
    assert copy_statement(write, "coai_agg", "DATE(c.created_at)") == (
        "INSERT INTO analytics_daily (day, n) SELECT * FROM `coai_agg` WHERE `DATE(c.created_at)` > %s"
        " AND `DATE(c.created_at)` <= %s\nON DUPLICATE KEY UPDATE n = VALUES(n)")
    assert "`50%%`" in copy_statement(write, "t", "50%")  # a literal % survives the parameters
