"""A migration's daemon wakes when its Job, CoaiBackup or rollout changes, not on the next tick."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from coai_operator.migration import handlers
from coai_operator.migration.names import LABEL_MIGRATION
from coai_operator.migration.wakeup import Wakeups, sleep_or_wake


class Stopped:
    """kopf's `stopped.wait(timeout)`: resolves after the timeout, or at once when stopped."""

    def __init__(self) -> None:
        self.flag = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.flag.wait(), timeout)
        except TimeoutError:
            return False
        return True


def drive_with_events(daemon: Callable[..., Awaitable[None]], body: dict, changed: Callable[..., Awaitable[None]],
                      event: dict, ticks: list[float]) -> None:
    """Run `daemon` for `body` while `changed(body=event)` fires every 50 ms; stop it after 3 ticks."""
    async def scenario() -> None:
        stopped = Stopped()

        async def events() -> None:
            while len(ticks) < 3:
                await asyncio.sleep(0.05)
                await changed(body=event)
            stopped.flag.set()  # finished: kopf stops the daemon

        task = asyncio.get_running_loop().create_task(events())
        await asyncio.wait_for(daemon(body=body, stopped=stopped, logger=None), timeout=20)
        await task

    asyncio.run(scenario())


def labelled(namespace: str, migration: str) -> dict:
    return {"metadata": {"namespace": namespace, "name": "job-1", "labels": {LABEL_MIGRATION: migration}}}


def test_a_wake_ends_the_sleep_at_once_and_is_consumed() -> None:
    async def scenario() -> tuple[float, bool, float]:
        wakeups, stopped = Wakeups(), Stopped()
        woken = wakeups.register("ns", "to-2")
        asyncio.get_running_loop().call_later(0.05, wakeups.wake_labelled, labelled("ns", "to-2"))
        started = time.monotonic()
        stop = await sleep_or_wake(stopped.wait, woken, 30)
        first = time.monotonic() - started
        started = time.monotonic()
        await sleep_or_wake(stopped.wait, woken, 0.2)  # consumed: this one sleeps its full time
        return first, stop, time.monotonic() - started

    first, stop, second = asyncio.run(scenario())
    assert first < 5 and stop is False
    assert second >= 0.19


def test_a_wake_that_came_during_the_tick_is_not_lost() -> None:
    async def scenario() -> float:
        wakeups, stopped = Wakeups(), Stopped()
        woken = wakeups.register("ns", "to-2")
        assert wakeups.wake("ns", "to-2")  # the Job finished while the tick was reading it
        started = time.monotonic()
        await sleep_or_wake(stopped.wait, woken, 30)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 5


def test_stopping_ends_the_sleep_and_says_so() -> None:
    async def scenario() -> bool:
        stopped = Stopped()
        woken = Wakeups().register("ns", "to-2")
        asyncio.get_running_loop().call_later(0.05, stopped.flag.set)
        return await sleep_or_wake(stopped.wait, woken, 30)

    assert asyncio.run(scenario()) is True


def test_the_timed_look_stays_when_nothing_wakes() -> None:
    async def scenario() -> tuple[bool, float]:
        woken = Wakeups().register("ns", "to-2")
        started = time.monotonic()
        stop = await sleep_or_wake(Stopped().wait, woken, 0.2)
        return stop, time.monotonic() - started

    stop, slept = asyncio.run(scenario())
    assert stop is False and slept >= 0.19


def test_wakes_reach_only_the_named_waiting_migration() -> None:
    wakeups = Wakeups()
    woken = wakeups.register("ns", "to-2")
    assert not wakeups.wake_labelled(labelled("other-ns", "to-2"))
    assert not wakeups.wake_labelled(labelled("ns", "to-3"))
    assert not wakeups.wake_labelled({"metadata": {"namespace": "ns", "labels": {}}})
    assert not woken.is_set()
    wakeups.forget("ns", "to-2")
    assert not wakeups.wake("ns", "to-2") and wakeups.waiting() == set()


def test_the_daemon_ticks_again_as_soon_as_its_job_changes(monkeypatch) -> None:
    """The machine asks for a 30 s look; the Job's watch event brings the next tick in well under that."""
    ticks: list[float] = []

    def advance_once(namespace: str, name: str, logger: object) -> float | None:
        ticks.append(time.monotonic())
        return 30.0 if len(ticks) < 3 else None

    monkeypatch.setattr(handlers, "advance_once", advance_once)

    drive_with_events(handlers.migration_daemon, {"metadata": {"namespace": "ns", "name": "to-2"}},
                      handlers.job_changed, labelled("ns", "to-2"), ticks)
    # (A wake that lands after the last tick brings one more look at a finished migration: harmless.)
    assert len(ticks) >= 3
    assert ticks[2] - ticks[0] < 10  # two 30 s looks would take a minute
    assert handlers.WAKEUPS.waiting() == set()  # the daemon's event is dropped when it ends
