"""Progress rows and crash points shared by the step runners (see runner.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal

import pymysql

from coai_operator.bundles import HopBundle, Step
from coai_operator.engine.schema_state import PROGRESS_TABLE

log = logging.getLogger(__name__)

CRASH_ENV = "COAI_ENGINE_CRASH_AFTER"
PROGRESS_LOG_SECONDS = 10.0


def crash_point(name: str) -> None:
    log.debug("crash point %s", name)
    if os.environ.get(CRASH_ENV) == name:
        log.warning("%s=%s: killing this process now", CRASH_ENV, name)
        os.kill(os.getpid(), signal.SIGKILL)


def work_checksum(step: Step, position: int | None) -> str:
    """What a progress row vouches for: the statements of an sql step done so far, or the whole
    step otherwise. A re-run may continue only if this still matches (a user may fix a statement
    that failed, not one that already ran)."""
    if step.kind == "sql":
        body: object = [step.kind, step.statements()[: int(position or 0)]]
    else:
        body = step.content()
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def save_progress(cur: pymysql.cursors.Cursor, hop: HopBundle, step: Step, position: int | None, done: bool) -> None:
    cur.execute(
        f"INSERT INTO {PROGRESS_TABLE} (version, step, position, done, checksum) VALUES (%s, %s, %s, %s, %s)"
        " ON DUPLICATE KEY UPDATE position = VALUES(position), done = VALUES(done), checksum = VALUES(checksum)",
        (str(hop.version), step.id, position, int(done), work_checksum(step, position)),
    )
