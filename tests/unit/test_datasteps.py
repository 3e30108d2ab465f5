"""The pure part of a `daily` step: whole days per batch, resumable after the last day done."""

from __future__ import annotations

import datetime

import pytest

from coai_operator.bundles import Step
from coai_operator.domain.errors import MigrationError
from coai_operator.engine.datasteps import day_batches, day_key

STEP = Step(id="agg", kind="daily", sql="SELECT 1", write="INSERT")
D1, D2, D3 = datetime.date(2026, 1, 30), datetime.date(2026, 1, 31), datetime.date(2026, 2, 1)
ROWS = [(D2, "a", 1), (D1, "a", 2), (D3, "a", 3), (D1, "b", 4), (D2, "b", 5)]


def test_days_never_split_and_come_in_day_order() -> None:
    batches = list(day_batches(ROWS, STEP, None, batch_size=3))
    assert [key for key, _ in batches] == [20260131, 20260201]
    assert [[row[2] for row in rows] for _, rows in batches] == [[2, 4, 1, 5], [3]]


def test_batch_of_one_row_is_one_day_per_batch() -> None:
    batches = list(day_batches(ROWS, STEP, None, batch_size=1))
    assert [(key, len(rows)) for key, rows in batches] == [(20260130, 2), (20260131, 2), (20260201, 1)]


def test_resume_skips_the_days_already_written() -> None:
    batches = list(day_batches(ROWS, STEP, 20260130, batch_size=100))
    assert batches == [(20260201, [(D2, "a", 1), (D2, "b", 5), (D3, "a", 3)])]
    assert list(day_batches(ROWS, STEP, 20260201, batch_size=100)) == []
    assert list(day_batches([], STEP, None, batch_size=100)) == []


@pytest.mark.parametrize("value", [None, "2026-01-30", 20260130])
def test_the_first_column_must_be_a_date(value: object) -> None:
    with pytest.raises(MigrationError, match="must be a DATE"):
        day_key(value, STEP)
