"""The metric names a PromQL expression reads (label names, matchers and grouping clauses left out)."""

from __future__ import annotations

import re

_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_LABEL_VALUES = re.compile(r"label_values\(([^,)]*)(?:,[^)]*)?\)")
_METRIC = re.compile(r"\b(?:coai|process|python)_[a-z0-9_]+\b")


def metric_names(expr: str) -> set[str]:
    expr = _LABEL_VALUES.sub(r"\1", expr)
    expr = _MATCHERS.sub("", _GROUPING.sub("", expr))
    return set(_METRIC.findall(expr))
