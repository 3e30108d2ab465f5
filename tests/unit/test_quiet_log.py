"""kopf's per-tick and per-event success lines are dropped; everything else the operator logs stays."""

from __future__ import annotations

import logging

from coai_operator.main import QuietSuccesses


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


def test_success_lines_are_dropped_and_the_rest_kept() -> None:
    quiet = QuietSuccesses()
    assert not quiet.filter(record("Timer 'backup' succeeded."))
    assert not quiet.filter(record("Handler 'metrics' succeeded."))
    assert not quiet.filter(record("Indexer 'coai_instances' succeeded."))
    assert quiet.filter(record("Timer 'backup' failed with an exception. Will retry.", logging.ERROR))
    assert quiet.filter(record("Handler 'child-deployments' failed temporarily: x", logging.ERROR))
    assert quiet.filter(record("Handler 'metrics' succeeded.", logging.WARNING))
    assert quiet.filter(record("JobCreated: Migrate: started Job chat-to-4-25-migrate-d6f8e"))


def test_the_filter_is_on_kopfs_object_logger() -> None:
    assert any(isinstance(f, QuietSuccesses) for f in logging.getLogger("kopf.objects").filters)
