"""The pure planner: compatibility table, hops, refusals."""

from __future__ import annotations

import pytest

from coai_operator.bundles import load_bundle
from coai_operator.domain.errors import PlanError
from coai_operator.domain.versions import (
    CompatTable,
    DowngradeError,
    Hop,
    LineInfo,
    UnknownVersionError,
    Version,
    plan_path,
)

TABLE = load_bundle().table


def v(text: str) -> Version:
    return Version.parse(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("2.0.1", Version(2, 0, 1)), ("v2.0.1", Version(2, 0, 1)), ("1.9", Version(1, 9, 0)), (" 1.6.0 ", Version(1, 6, 0)),
])
def test_parse(text: str, expected: Version) -> None:
    assert Version.parse(text) == expected
    assert str(expected).count(".") == 2


@pytest.mark.parametrize("text", ["", "2", "2.0.0-rc1", "latest", "1.x"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(UnknownVersionError):
        Version.parse(text)


def test_versions_order_numerically() -> None:
    assert v("1.10.0") > v("1.9.0") > v("1.8.12")


def test_table_matches_the_seed() -> None:
    lines = {info.version.line_name: info for info in TABLE.lines}
    assert list(lines) == ["1.6", "1.7", "1.8", "1.9", "2.0"]
    assert lines["2.0"].requires_from == v("1.8") and lines["2.0"].support == "current"
    assert lines["1.9"].requires_from == v("1.8") and lines["1.9"].support == "maintenance"
    assert lines["1.8"].requires_from == v("1.6")
    assert lines["1.6"].eol and lines["1.7"].eol and not lines["1.8"].eol


def test_full_chain_from_1_6() -> None:
    plan = plan_path("1.6.0", "2.0.0", TABLE)
    assert [h.id for h in plan.hops] == ["1.6.0-to-1.7.0", "1.7.0-to-1.8.0", "1.8.0-to-1.9.0", "1.9.0-to-2.0.0"]
    assert plan.warnings == ("source 1.6.x is end of life (released 2023-Q2): upgrade off it",)
    assert not plan.noop
    assert plan.to_dict()["path"][0] == "1.6.0-to-1.7.0"


def test_patch_versions_use_their_line() -> None:
    plan = plan_path("1.8.3", "2.0.5", TABLE)
    assert (plan.schema_current, plan.schema_target) == (v("1.8.0"), v("2.0.0"))
    assert plan.hops == (Hop(v("1.8.0"), v("1.9.0")), Hop(v("1.9.0"), v("2.0.0")))
    assert plan.warnings == ()


@pytest.mark.parametrize(("current", "target"), [("2.0.0", "2.0.0"), ("1.9.0", "1.9.4"), ("1.7.0", "1.7.2")])
def test_same_line_is_a_noop(current: str, target: str) -> None:
    plan = plan_path(current, target, TABLE)
    assert plan.noop and plan.hops == ()


def test_eol_target_warns() -> None:
    plan = plan_path("1.6.0", "1.7.0", TABLE)
    assert any("target 1.7.x is end of life" in w for w in plan.warnings)


def test_downgrade_is_refused() -> None:
    with pytest.raises(DowngradeError, match="downgrade"):
        plan_path("2.0.0", "1.9.0", TABLE)
    with pytest.raises(DowngradeError):
        plan_path("2.0.3", "2.0.1", TABLE)


@pytest.mark.parametrize(("current", "target", "words"), [
    ("1.5.0", "2.0.0", "current version 1.5.0"),
    ("3.11.2", "2.0.0", "current version 3.11.2"),
    ("1.6.0", "2.1.0", "target version 2.1.0"),
])
def test_unknown_versions_are_refused(current: str, target: str, words: str) -> None:
    with pytest.raises(UnknownVersionError, match=words):
        plan_path(current, target, TABLE)


def test_direct_mode_reads_the_table_literally() -> None:
    with pytest.raises(PlanError, match=r"upgrade to 1\.8\.x first"):
        plan_path("1.7.0", "2.0.0", TABLE, direct=True)
    assert len(plan_path("1.8.0", "2.0.0", TABLE, direct=True).hops) == 2
    assert len(plan_path("1.6.0", "1.8.0", TABLE, direct=True).hops) == 2


def test_a_table_with_a_gap_refuses_the_chain() -> None:
    table = CompatTable((
        LineInfo(v("1.0"), "eol"),
        LineInfo(v("3.0"), "current", requires_from=v("2.0")),
    ))
    with pytest.raises(PlanError, match="no supported path"):
        plan_path("1.0.0", "3.0.0", table)
