"""The Grafana dashboard (monitoring/grafana/coai-operator.json) queries only what the operator exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from coai_operator.metrics import Metrics, exported_names
from tests.unit.promql import metric_names

DASHBOARD = Path(__file__).resolve().parents[2] / "monitoring" / "grafana" / "coai-operator.json"
VARIABLE = re.compile(r"\$(?!__)(\w+)")


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queries(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    return exprs + [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    exported = exported_names(Metrics(process=True))
    used = {name for expr in queries(dashboard()) for name in metric_names(expr)}
    assert used, "the dashboard queries no coai_ metric"
    assert used <= exported, f"not exported by the operator: {sorted(used - exported)}"


def test_every_coai_metric_is_on_the_dashboard() -> None:
    used = {name for expr in queries(dashboard()) for name in metric_names(expr)}
    names = exported_names(Metrics())
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in names if n.startswith("coai_")}
    assert all(any(u.startswith(f) for u in used) for f in families), sorted(
        f for f in families if not any(u.startswith(f) for u in used))


def test_panels_have_unique_ids_a_datasource_and_known_variables() -> None:
    dash = dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dash["templating"]["list"]}
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert set(VARIABLE.findall(target["expr"])) <= variables, target["expr"]
    assert dash["uid"] == "coai-operator"


def test_metric_names_skip_labels_matchers_and_grouping() -> None:
    expr = 'max by (namespace, coai_instance) (coai_a{coai_instance=~"x"}) unless on (coai_instance) coai_b_total'
    assert metric_names(expr) == {"coai_a", "coai_b_total"}
    assert metric_names("label_values(coai_c, coai_instance)") == {"coai_c"}
