"""Wake a migration's daemon when something it waits for changes, instead of on its next tick.

A step that waits (a Job, the migration's CoaiBackup, the instance's rollout) asks the daemon to
look again in a few seconds. The watches the operator already runs see the change first: their
handlers call `WAKEUPS.wake(namespace, migration)` and the daemon's sleep ends at once. The timed
look stays as the fallback (a missed event, an operator restart), so a wake-up only ever makes a
migration faster, never changes what it does.

One registry per kind that waits (the migrations: WAKEUPS; the running CoaiBackups:
BACKUP_WAKEUPS). One asyncio.Event per object, created by the daemon that waits on it and dropped
when it ends.
Handlers run on kopf's event loop (async handlers), the daemon too: no locking needed. A wake for a
migration whose daemon is not waiting (finished, or on another operator replica) is a no-op.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from coai_operator.migration.names import LABEL_MIGRATION

Key = tuple[str, str]


class Wakeups:
    def __init__(self) -> None:
        self._events: dict[Key, asyncio.Event] = {}

    def register(self, namespace: str, name: str) -> asyncio.Event:
        return self._events.setdefault((namespace, name), asyncio.Event())

    def forget(self, namespace: str, name: str) -> None:
        self._events.pop((namespace, name), None)

    def wake(self, namespace: str | None, name: str | None) -> bool:
        """True when a waiting daemon was woken."""
        event = self._events.get((str(namespace), str(name))) if namespace and name else None
        if event is None:
            return False
        event.set()
        return True

    def wake_labelled(self, body: Mapping[str, Any]) -> bool:
        """Wake the migration named by the object's coai.dev/migration label (its Jobs, its CoaiBackup)."""
        meta = body.get("metadata") or {}
        return self.wake(meta.get("namespace"), (meta.get("labels") or {}).get(LABEL_MIGRATION))

    def waiting(self) -> set[Key]:
        return set(self._events)

    def any_waiting(self) -> bool:
        return bool(self._events)


WAKEUPS = Wakeups()
BACKUP_WAKEUPS = Wakeups()


async def sleep_or_wake(stopped: Callable[[float], Awaitable[Any]], woken: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`, less when `woken` is set (then it is cleared, so the next wake counts);
    True when `stopped` says the daemon must end. `stopped` is kopf's `stopped.wait`."""
    async def stop_after() -> bool:
        return bool(await stopped(seconds))

    stop_task = asyncio.ensure_future(stop_after())
    wake_task = asyncio.ensure_future(woken.wait())
    try:
        done, _ = await asyncio.wait({stop_task, wake_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stop_task, wake_task):
            task.cancel()
    woken.clear()
    return stop_task in done and stop_task.result()
