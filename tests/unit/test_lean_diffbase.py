"""main.LeanDiffBaseStorage builds exactly kopf's essence of a CoaiInstance, from less."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from coai_operator import constants
from coai_operator.main import LeanDiffBaseStorage


def instance() -> dict[str, Any]:
    return {
        "apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance",
        "metadata": {
            "name": "chat", "namespace": "apps", "uid": "u1", "resourceVersion": "42", "generation": 3,
            "labels": {"team": "chat"},
            "annotations": {"example.com/owner": "platform",
                            "kubectl.kubernetes.io/last-applied-configuration": "{}",
                            f"{constants.GROUP}/last-handled-configuration": "{\"spec\": {}}",
                            "other.kopf.dev/last-handled-configuration": "{}"},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:version": {}}}}] * 20,
        },
        "spec": {"version": "1.9.0", "replicas": 2, "config": {"SERVE_STATIC": "true"}, "empty": {}},
        "status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}] * 7},
    }


def storages() -> tuple[kopf.AnnotationsDiffBaseStorage, LeanDiffBaseStorage]:
    args = {"prefix": constants.GROUP, "key": "last-handled-configuration"}
    return kopf.AnnotationsDiffBaseStorage(**args), LeanDiffBaseStorage(**args)


@pytest.mark.parametrize("extra_fields", [None, ["status.phase"], ["metadata.generation"]])
def test_same_essence_as_kopf(extra_fields: list[str] | None) -> None:
    theirs, ours = storages()
    body = kopf.Body(instance())
    expected = theirs.build(body=body, extra_fields=extra_fields)
    assert ours.build(body=body, extra_fields=extra_fields) == expected
    assert "managedFields" not in str(expected) and expected["spec"]["version"] == "1.9.0"


def test_the_essence_shares_nothing_with_the_body() -> None:
    _, ours = storages()
    raw = instance()
    essence = ours.build(body=kopf.Body(raw))
    before = copy.deepcopy(raw)
    essence["spec"]["config"]["SERVE_STATIC"] = "false"
    essence["metadata"]["labels"]["team"] = "x"
    assert raw == before


def child(kind: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x", "namespace": "apps"},
            "spec": {"replicas": 1}, "status": {"readyReplicas": 1}}


def test_kinds_only_watched_get_an_empty_essence_and_none_of_them_has_a_handler_that_reads_it() -> None:
    _, ours = storages()
    for kind in LeanDiffBaseStorage.WATCH_ONLY_KINDS:
        assert ours.build(body=kopf.Body(child(kind))) == {}
    assert ours.build(body=kopf.Body(child("CoaiBackup")))["spec"] == {"replicas": 1}

    # Only changing (create/update/delete/resume) and spawning (daemon/timer) handlers read it.
    registry = kopf.get_default_registry()
    readers = [h.selector for reg in (registry._changing, registry._spawning) for h in reg.get_all_handlers()]
    assert readers, "the handlers were not registered: the check below would pass for nothing"
    plurals = {"jobs", "pods"}
    assert len(plurals) == len(LeanDiffBaseStorage.WATCH_ONLY_KINDS)
    assert all(s.group == constants.GROUP and s.any_name not in plurals for s in readers)
