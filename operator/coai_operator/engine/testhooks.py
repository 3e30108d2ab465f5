"""Fault-injection hooks for the crash/resume tests. Inert unless their variable is set.

- `COAI_ENGINE_CRASH_AFTER=<n>`: SIGKILL this process once `n` units of work are done
  (migrate-storage: files copied; backup: dump chunks written), so a test can prove that a
  re-run after a crash at that point completes correctly.
- `COAI_ENGINE_PAUSE_CLIENT_SECONDS=<s>`: hold a running client tool (the dump of a backup, the
  load of a restore) for `s` seconds after its first chunk, so a test can inspect the child
  processes (their argv and environment) while they run.
- `COAI_ENGINE_FAIL=<message>`: the command fails at once with that error, before touching
  anything (the fault-matrix e2e puts it on one step's Job through the operator's test hooks).
"""

from __future__ import annotations

import logging
import os
import signal
import time

CRASH_AFTER = "COAI_ENGINE_CRASH_AFTER"
PAUSE_CLIENT = "COAI_ENGINE_PAUSE_CLIENT_SECONDS"
FAIL = "COAI_ENGINE_FAIL"

log = logging.getLogger(__name__)


def crash_point(done: int) -> None:
    limit = os.environ.get(CRASH_AFTER)
    if limit and done >= int(limit):
        log.warning("%s=%s reached: killing this process (test hook)", CRASH_AFTER, limit)
        os.kill(os.getpid(), signal.SIGKILL)


def pause_client() -> None:
    seconds = os.environ.get(PAUSE_CLIENT)
    if seconds:
        time.sleep(float(seconds))


def injected_failure() -> str | None:
    return os.environ.get(FAIL) or None
