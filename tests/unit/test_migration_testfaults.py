"""The fault-matrix test hooks are inert unless the operator runs with COAI_TEST_FAULTS=1."""

from __future__ import annotations

import pytest

from coai_operator.migration import jobs, testfaults
from tests.unit.test_migration_planner import instance, migration


def annotated(value: str) -> dict:
    mig = migration()
    mig["metadata"]["annotations"] = {testfaults.ANNOTATION: value}
    return mig


def test_without_the_switch_an_annotation_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(testfaults.ENABLED, raising=False)
    assert jobs.build_job(annotated("Migrate=never-starts"), instance(), "Migrate") == \
        jobs.build_job(migration(), instance(), "Migrate")


def test_with_the_switch_each_fault_lands_on_its_step_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(testfaults.ENABLED, "1")
    mig = annotated("Validate=engine-fails,Migrate=never-starts")
    migrate = jobs.build_job(mig, instance(), "Migrate")["spec"]["template"]["spec"]
    validate = jobs.build_job(mig, instance(), "Validate")["spec"]["template"]["spec"]
    restore = jobs.build_job(mig, instance(), "RollbackRestore")["spec"]["template"]["spec"]
    assert migrate["nodeSelector"] == {testfaults.NO_NODE_LABEL: "true"}
    assert any(e["name"] == "COAI_ENGINE_FAIL" for e in validate["containers"][0]["env"])
    assert "nodeSelector" not in restore and not any(e["name"] == "COAI_ENGINE_FAIL"
                                                    for e in restore["containers"][0]["env"])
    assert testfaults.api_error(annotated("Rollout=api-error"), "Rollout")
    assert not testfaults.api_error(annotated("Rollout=api-error"), "Rollout")  # once per process
