"""kopf entry point: `kopf run -m coai_operator.main` (or `coai-operator run`).

Settings live here; the handlers live with their resource and are registered on import.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from coai_operator import constants
from coai_operator.backup import handlers as _backup_handlers  # noqa: F401  (registers handlers)
from coai_operator.instance import handlers as _instance_handlers  # noqa: F401  (registers handlers)
from coai_operator.metrics import METRICS, STEP_LABEL, serve
from coai_operator.migration import handlers as _migration_handlers  # registers handlers; its JOB_POD_SELECTOR


class QuietSuccesses(logging.Filter):
    """Drops kopf's "Timer 'restore' succeeded.", "Handler 'metrics' succeeded." and "Indexer 'x'
    succeeded." lines: one per object per timer tick or watch event (every 2 s for every
    CoaiRestore; on the bench, 2,421 lines for 100 new instances, with 1,318 of our own reconcile
    lines that say what was done). Failures and retries stay, at their levels."""

    KINDS = ("Timer '", "Handler '", "Indexer '")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        message = record.getMessage()
        return not (message.startswith(self.KINDS) and message.endswith("' succeeded."))


logging.getLogger("kopf.objects").addFilter(QuietSuccesses())


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base, built without deep-copying what it then throws away.

    kopf computes the essence (spec, labels, annotations) of every object on every event, for
    every watched kind, by deep-copying the whole body first, managedFields and status included,
    and then deleting them: a fifth of the operator's CPU at N=500 (docs/benchmarks.md). The same
    essence comes from a body that holds only what is kept. Kinds kopf only watches (on.event
    handlers: Jobs, the Jobs' pods) have no handler that reads the essence: theirs is empty.
    """

    WATCH_ONLY_KINDS = frozenset({"Job", "Pod"})

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        if extra_fields:  # fields of the status or metadata that a handler asked for: the real body
            return super().build(body=body, extra_fields=extra_fields)
        if body.get("kind") in self.WATCH_ONLY_KINDS:
            return kopf.BodyEssence()
        meta = body.get("metadata") or {}
        kept: dict[str, Any] = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        # labels and annotations are the metadata kopf keeps; ownerReferences name its storage key
        kept["metadata"] = {k: meta[k] for k in ("labels", "annotations", "ownerReferences") if k in meta}
        return super().build(body=kopf.Body(kept), extra_fields=extra_fields)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    settings.persistence.finalizer = f"{constants.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=constants.GROUP)
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(
        prefix=constants.GROUP, key="last-handled-configuration"
    )
    # Kubernetes Events for each action; kopf's own "Handler succeeded" chatter stays in the log.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = int(os.environ.get("COAI_WATCH_TIMEOUT", "300"))
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    settings.networking.request_timeout = 60
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    # Pods are watched only for the engine Jobs' exits (migration/handlers.job_pod_changed): the
    # apiserver sends only those, not every pod of the cluster.
    settings.watching.label_selectors["v1", "pods"] = _migration_handlers.JOB_POD_SELECTOR
    logger.info(
        "coai-operator watching %s.%s and %s.%s (%s)",
        constants.INSTANCE_PLURAL,
        constants.GROUP,
        constants.MIGRATION_PLURAL,
        constants.GROUP,
        constants.VERSION,
    )
    address = os.environ.get("COAI_METRICS_ADDRESS")
    if address:
        host, port = serve(address)
        logger.info("Prometheus metrics on http://%s:%d/metrics", host, port)


# Metrics follow the status the controllers wrote: one more handler on watches kopf already runs
# (Jobs: the engine steps' Jobs only, by their step label). async: no trip through kopf's thread
# pool, where reconciles wait on the API.
@kopf.on.event(constants.GROUP, constants.VERSION, constants.INSTANCE_PLURAL, id="metrics")
async def instance_metrics(type: str | None, body: kopf.Body, **_: Any) -> None:
    METRICS.observe_instance(type, body)


@kopf.on.event(constants.GROUP, constants.VERSION, constants.MIGRATION_PLURAL, id="metrics")
async def migration_metrics(type: str | None, body: kopf.Body, **_: Any) -> None:
    METRICS.observe_migration(type, body)


@kopf.on.event("batch", "v1", "jobs", labels={STEP_LABEL: kopf.PRESENT}, id="metrics")
async def job_metrics(type: str | None, body: kopf.Body, **_: Any) -> None:
    METRICS.observe_job(type, body)
