"""How the CoaiMigration handlers are registered with kopf: what decides finalizers, logs and delays."""

from __future__ import annotations

import logging

import kopf
import pytest

from coai_operator.migration import handlers
from tests.unit.migration_world import NS, World

FINISHED = {"metadata": {"name": "m", "namespace": NS}, "spec": {"instanceRef": {"name": "chat"}},
            "status": {"phase": "Succeeded", "steps": [{"name": "Preflight", "phase": "Succeeded"}]}}
RUNNING = {"metadata": {"name": "m", "namespace": NS}, "spec": {"instanceRef": {"name": "chat"}},
           "status": {"phase": "Migrating"}}


def migration_handlers(registry_part: str) -> list:
    registry = kopf.get_default_registry()
    part = getattr(registry, registry_part)
    return [h for resource, hs in part._handlers_by_resource.items() if resource.plural == "coaimigrations"
            for h in hs] if hasattr(part, "_handlers_by_resource") else \
        [h for h in part.get_all_handlers() if "migration" in str(h.id)]


def _matches(handler, body: dict) -> bool:
    return handler.when is None or bool(handler.when(body=kopf.Body(body), spec=body["spec"], status=body["status"],
                                                     meta=body["metadata"]))


def test_bug6_no_handler_keeps_a_finalizer_on_a_finished_migration() -> None:
    blocking = [h for h in migration_handlers("_spawning") + migration_handlers("_changing")
                if h.requires_finalizer and _matches(h, FINISHED)]
    assert blocking == [], [str(h.id) for h in blocking]


def test_bug6_a_running_migration_is_held_until_it_rolled_back() -> None:
    deletion = [h for h in migration_handlers("_changing") if h.requires_finalizer and _matches(h, RUNNING)]
    assert deletion, "deleting a running migration must wait for its rollback"


def test_bug7_no_timer_logs_a_line_per_tick() -> None:
    timers = [h for h in migration_handlers("_spawning") if type(h).__name__ == "TimerHandler"]
    assert timers == []


def test_bug7_a_tick_that_changes_nothing_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    world = World().setup()
    world.results["migrate"] = "pending"
    world.run_until_step("Migrate")
    world.tick()
    caplog.set_level(logging.DEBUG, logger="quiet")
    for _ in range(3):
        handlers.advance_once(NS, "to-2", logging.getLogger("quiet"), kube=world.kube)
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


def test_bug5_the_loop_honours_the_delay_the_machine_asks_for() -> None:
    import asyncio

    delays = iter([0.0, 2.0, 5.0, None])
    waits: list[float] = []

    async def step() -> float | None:
        return next(delays)

    async def wait(seconds: float) -> bool:
        waits.append(seconds)
        return len(waits) > 3

    asyncio.run(handlers.drive(step, wait))
    assert waits == [handlers.MIN_DELAY, 2.0, 5.0, handlers.IDLE_SECONDS]
