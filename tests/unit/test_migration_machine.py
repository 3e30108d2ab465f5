"""The CoaiMigration state machine on the in-memory API: every transition and failure branch."""

from __future__ import annotations

from tests.unit.migration_world import World


def test_happy_path_runs_every_step_and_releases_the_lock() -> None:
    world = World().setup(storageMigration={"enabled": True})
    status = world.run()
    assert status["phase"] == "Succeeded", status
    assert list(world.steps().items()) == [(s, "Succeeded") for s in (
        "Preflight", "Backup", "MaintenanceOn", "ConfigMigration", "Migrate", "StorageMigration", "Rollout",
        "Validate")]
    instance = world.get("CoaiInstance", "chat")
    assert instance["spec"]["version"] == "2.0.0" and instance["status"]["schemaVersion"] == "2.0.0"
    assert not instance["status"].get("activeMigration")
    assert world.ran == ["plan", "backup", "migrate", "migrate-storage", "validate"]


def test_failed_migrate_rolls_back_automatically() -> None:
    world = World().setup()
    world.results["migrate"] = {"ok": False, "error": "no_such_table"}
    status = world.run()
    assert status["phase"] == "RolledBack", status
    assert world.steps()["Migrate"] == "Failed"
    assert world.steps()["RollbackRestore"] == "Succeeded"
    instance = world.get("CoaiInstance", "chat")
    assert instance["spec"]["version"] == "1.8.0"
    assert instance["spec"]["config"] == {"LEGACY_AUTH_ENABLED": "true", "OLD_API_FORMAT": "1"}
    assert world.get("Secret", "coai-app")["data"] == {"JWT_SECRET": "ampq", "OPENAI_KEY": "c2s="}
    assert not instance["status"].get("activeMigration")
