"""The chart's optional NetworkPolicy for the operator pod (templates/networkpolicy.yaml)."""

from __future__ import annotations

from tests.unit.test_chart import kinds, needs_helm
from tests.unit.test_chart import render as helm_template


@needs_helm
def test_off_by_default() -> None:
    assert kinds(helm_template(), "NetworkPolicy") == []


@needs_helm
def test_operator_policy_allows_only_health_api_server_dns_and_databases() -> None:
    docs = helm_template("networkPolicy.enabled=true", "networkPolicy.apiServer.cidrs={10.0.0.10/32}",
                         "networkPolicy.databases.ports={3306,3307}")
    [policy] = kinds(docs, "NetworkPolicy")
    [deployment] = kinds(docs, "Deployment")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]
    assert spec["egress"] == [
        {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}],
         "to": [{"ipBlock": {"cidr": "10.0.0.10/32"}}]},
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"ports": [{"protocol": "TCP", "port": 3306}, {"protocol": "TCP", "port": 3307}]},
    ]


@needs_helm
def test_health_peers_and_extra_egress() -> None:
    docs = helm_template("networkPolicy.enabled=true",
                         "networkPolicy.healthFrom[0].namespaceSelector.matchLabels.team=mon",
                         "networkPolicy.extraEgress[0].ports[0].port=3128")
    spec = kinds(docs, "NetworkPolicy")[0]["spec"]
    assert spec["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"team": "mon"}}}]
    assert spec["egress"][-1] == {"ports": [{"port": 3128}]}
