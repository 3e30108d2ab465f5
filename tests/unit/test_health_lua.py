"""The Argo CD health checks (gitops/argocd/health/coai.dev/<Kind>/health.lua) in a real Lua runtime.

Argo CD runs gopher-lua (Lua 5.1) and hands the script the object as decoded JSON, where every
number is a float64; Lua 5.1 with floats is that case. Lua 5.4 with integers catches scripts that
only work by accident of number formatting.

Samples and expected results are in Argo CD's own test format (health_test.yaml + testdata/), so
the checks could be contributed upstream as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

lupa = pytest.importorskip("lupa")
from lupa import lua51, lua54  # noqa: E402

from coai_operator.instance import status as instance_status  # noqa: E402
from coai_operator.instance.spec import Problem  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HEALTH = REPO / "gitops" / "argocd" / "health" / "coai.dev"
CRDS = REPO / "crds"
KINDS = ("CoaiInstance", "CoaiMigration")
RUNTIMES = {"lua5.1-floats": (lua51, True), "lua5.4-ints": (lua54, False)}


def _floats(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


def run_health(kind: str, obj: dict[str, Any], runtime: str = "lua5.1-floats") -> dict[str, str]:
    module, as_floats = RUNTIMES[runtime]
    lua = module.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(_floats(obj) if as_floats else obj, recursive=True)
    result = lua.execute((HEALTH / kind / "health.lua").read_text())
    return {"status": result["status"], "message": result["message"]}


def cases() -> list[Any]:
    out = []
    for kind in KINDS:
        spec = yaml.safe_load((HEALTH / kind / "health_test.yaml").read_text())
        for test in spec["tests"]:
            for runtime in RUNTIMES:
                name = Path(test["inputPath"]).stem
                out.append(pytest.param(kind, test, runtime, id=f"{kind}-{name}-{runtime}"))
    return out


@pytest.mark.parametrize(("kind", "test", "runtime"), cases())
def test_sample_gets_the_expected_health(kind: str, test: dict[str, Any], runtime: str) -> None:
    obj = yaml.safe_load((HEALTH / kind / test["inputPath"]).read_text())
    assert run_health(kind, obj, runtime) == test["healthStatus"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_sample_file_is_in_the_test_list(kind: str) -> None:
    listed = {t["inputPath"] for t in yaml.safe_load((HEALTH / kind / "health_test.yaml").read_text())["tests"]}
    on_disk = {f"testdata/{p.name}" for p in (HEALTH / kind / "testdata").glob("*.yaml")}
    assert listed == on_disk


@pytest.mark.parametrize("kind", KINDS)
def test_all_four_argo_health_states_are_covered(kind: str) -> None:
    tests = yaml.safe_load((HEALTH / kind / "health_test.yaml").read_text())["tests"]
    wanted = {"Healthy", "Progressing", "Degraded"} | ({"Suspended"} if kind == "CoaiInstance" else set())
    assert wanted <= {t["healthStatus"]["status"] for t in tests}


def _phase_enum(kind: str) -> list[str]:
    crd = yaml.safe_load((CRDS / f"{kind.lower()}s.coai.dev.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return list(schema["properties"]["status"]["properties"]["phase"]["enum"])


EXPECTED_INSTANCE = {"Pending": "Progressing", "Progressing": "Progressing", "Ready": "Healthy",
                     "Degraded": "Degraded", "Maintenance": "Suspended", "Migrating": "Progressing"}
EXPECTED_MIGRATION = {"Pending": "Progressing", "Planning": "Progressing", "BackingUp": "Progressing",
                      "Migrating": "Progressing", "Validating": "Progressing", "RollingBack": "Progressing",
                      "Succeeded": "Healthy", "Failed": "Degraded", "RolledBack": "Degraded"}


@pytest.mark.parametrize(("kind", "expected"), [("CoaiInstance", EXPECTED_INSTANCE),
                                                ("CoaiMigration", EXPECTED_MIGRATION)])
def test_every_phase_of_the_crd_has_a_decided_health(kind: str, expected: dict[str, str]) -> None:
    """A phase added to the CRD without a decision here fails (the script would answer Unknown)."""
    assert set(_phase_enum(kind)) == set(expected)
    for phase, health in expected.items():
        obj = {"metadata": {"name": "x", "generation": 1},
               "spec": {"targetVersion": "4.25.0", "instanceRef": {"name": "coai"}},
               "status": {"phase": phase, "observedGeneration": 1}}
        assert run_health(kind, obj)["status"] == health, phase


def _deployment(replicas: int, ready: int, *, observed: bool = True, deadline: bool = False) -> dict[str, Any]:
    conditions = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}] if deadline else []
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": replicas, "template": {
            "metadata": {"labels": {"app.kubernetes.io/version": "3.11.2"}},
            "spec": {"containers": [{"image": "programzmh/chatnio:3.11.2"}]}}},
        "status": {"observedGeneration": 2 if observed else 1, "replicas": replicas, "updatedReplicas": replicas,
                   "readyReplicas": ready, "availableReplicas": ready, "conditions": conditions},
    }


@pytest.mark.parametrize(("scenario", "kwargs", "expected"), [
    ("no Deployment yet", {"deployment": None}, "Progressing"),
    ("rolling out", {"deployment": _deployment(1, 0, observed=False)}, "Progressing"),
    ("all pods ready", {"deployment": _deployment(1, 1)}, "Healthy"),
    ("rollout stuck", {"deployment": _deployment(1, 0, deadline=True)}, "Degraded"),
    ("maintenance", {"deployment": _deployment(0, 0), "maintenance": True}, "Suspended"),
    ("missing Secret", {"deployment": None, "problem": Problem("SecretNotFound", "no Secret")},
     "Degraded"),
    ("upgrade pending", {"deployment": _deployment(1, 1), "upgrade": instance_status.UpgradeView(
        "Upgrading", "3.11.2 -> 4.0.0 needs a migration")}, "Progressing"),
    ("upgrade refused", {"deployment": _deployment(1, 1), "upgrade": instance_status.UpgradeView(
        "Downgrade", "spec.version 3.10.5 is refused", refused=True)}, "Degraded"),
])
def test_health_of_what_the_instance_controller_writes(scenario: str, kwargs: dict[str, Any], expected: str) -> None:
    """The status the instance controller computes (instance/status.py), not a hand-written sample."""
    status = instance_status.compute(current={}, generation=3, endpoint="http://coai.coai.svc:80", **kwargs)
    obj = {"metadata": {"name": "coai", "generation": 3}, "spec": {"version": "3.11.2"}, "status": status}
    for runtime in RUNTIMES:
        assert run_health("CoaiInstance", obj, runtime)["status"] == expected, (scenario, runtime, status)
