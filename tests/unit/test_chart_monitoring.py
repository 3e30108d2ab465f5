"""The chart's monitoring objects (metrics Service, ServiceMonitor, PrometheusRule): off by default,
rendered with `helm template`, their values checked by values.schema.json, and every metric an
alert queries exported by the operator."""

from __future__ import annotations

import pytest

from coai_operator.metrics import Metrics, exported_names
from tests.unit.promql import metric_names
from tests.unit.test_chart import assert_schema_rejects, kinds, needs_helm, render

ALERTS = {"CoaiInstanceDegraded", "CoaiMigrationStuck", "CoaiBackupTooOld", "CoaiBackupFailed"}


@needs_helm
def test_monitoring_objects_are_off_by_default() -> None:
    assert not {"Service", "ServiceMonitor", "PrometheusRule"} & {d["kind"] for d in render()}


@needs_helm
def test_service_monitor_scrapes_the_metrics_port_of_the_operator_pods() -> None:
    docs = render("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom",
                  "metrics.serviceMonitor.interval=15s", namespace="ops")
    (monitor,), (service,) = kinds(docs, "ServiceMonitor"), kinds(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()  # it selects the Service
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s",
                        "honorLabels": True}
    assert service["spec"]["ports"][0]["name"] == "metrics"
    pod = kinds(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert service["spec"]["selector"].items() <= kinds(docs, "Deployment")[0]["spec"]["template"][
        "metadata"]["labels"].items()
    assert {"name": "metrics", "containerPort": 9102, "protocol": "TCP"} in pod["containers"][0]["ports"]


@needs_helm
def test_prometheus_rule_has_the_four_alerts_on_exported_metrics() -> None:
    docs = render("metrics.prometheusRule.enabled=true", "metrics.prometheusRule.migrationDeadlineSeconds=600",
                  "metrics.prometheusRule.backupMaxAgeSeconds=3600", "metrics.prometheusRule.severity=critical")
    (rule,) = kinds(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == ALERTS
    exported = exported_names(Metrics())
    for name, alert in alerts.items():
        used = metric_names(alert["expr"])
        assert used and used <= exported, f"{name}: {used - exported} not exported"
        assert alert["labels"] == {"severity": "critical"}
        assert "{{ $labels.namespace }}" in alert["annotations"]["summary"]
    assert alerts["CoaiMigrationStuck"]["expr"].endswith("> 600")
    assert alerts["CoaiBackupTooOld"]["expr"].endswith("> 3600")
    assert alerts["CoaiInstanceDegraded"]["for"] == "10m"


BAD_VALUES = {
    "interval is a duration": ("metrics.serviceMonitor.interval=often", "/metrics/serviceMonitor/interval"),
    "deadline is a number": ("metrics.prometheusRule.migrationDeadlineSeconds=soon",
                             "/metrics/prometheusRule/migrationDeadlineSeconds"),
    "severity": ("metrics.prometheusRule.severity=page", "/metrics/prometheusRule/severity"),
    "typos are not ignored": ("metrics.prometheusRule.enable=true", "enable"),
}


@needs_helm
@pytest.mark.parametrize(("value", "where"), list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_values_schema_rejects(value: str, where: str) -> None:
    assert_schema_rejects(value, where)
