"""instance.reconcile.owner_of: which CoaiInstance a child event belongs to (pure)."""

from __future__ import annotations

from coai_operator import constants
from coai_operator.instance.reconcile import owner_of


def test_owner_of_children() -> None:
    ref = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "name": "chat", "uid": "u"}
    assert owner_of({"metadata": {"ownerReferences": [ref]}}, "Deployment") == "chat"
    labels = {constants.LABEL_MANAGED_BY: "coai-operator", constants.LABEL_INSTANCE: "chat",
              constants.LABEL_COMPONENT: "storage"}
    assert owner_of({"metadata": {"labels": labels}}, "PersistentVolumeClaim") == "chat"
    assert owner_of({"metadata": {"labels": {**labels, constants.LABEL_COMPONENT: "backup"}}},
                    "PersistentVolumeClaim") is None
    assert owner_of({"metadata": {"labels": labels}}, "ConfigMap") is None
