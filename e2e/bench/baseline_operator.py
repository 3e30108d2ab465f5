"""Benchmark fixture: the least a kopf operator can do for a CoaiInstance (the operator baseline).

On create it POSTs the same children coai-operator renders (PVCs, ConfigMap, Deployment, Service:
`coai_operator.instance.render`, so the bytes sent are identical) and nothing else: no reads, no
comparison, no status, no events, no drift check. kopf's own bookkeeping (the
last-handled-configuration annotation, progress storage) stays at kopf's defaults.

Run: `python -m kopf run --standalone -n NS -m e2e.bench.baseline_operator`
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from coai_operator.instance.render import render
from coai_operator.kube import Kube, KubeError


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    settings.posting.level = logging.WARNING  # as coai-operator: no Kubernetes Event per handler run
    logger.info("baseline operator watching coaiinstances.coai.dev")


@kopf.on.create("coai.dev", "v1alpha1", "coaiinstances")
def create_children(body: kopf.Body, spec: kopf.Spec, name: str, namespace: str, **_: Any) -> None:
    kube = Kube()
    for obj in render(dict(spec), name, namespace, owner=body).all():
        try:
            kube.create(obj)
        except KubeError as exc:
            if exc.status != 409:  # already there (a retried handler): fine
                raise
