"""instance.upgrade and instance.upgrade_state: Git owns the spec, status.upgrade says what is deployed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from coai_operator import constants
from coai_operator.bundles import load_bundle
from coai_operator.bundles.config_migration import ConfigRules
from coai_operator.instance import render as r
from coai_operator.instance import status as st
from coai_operator.instance import upgrade as up
from coai_operator.instance import upgrade_state as us
from coai_operator.instance.spec import with_defaults
from coai_operator.kube import KubeError
from tests.unit.fakekube import FakeKube

Obj = dict[str, Any]
TABLE = load_bundle().table
RULES_2_0 = [ConfigRules(rename={"JWT_SECRET": "SECRET"}, set={"RBAC_ENABLED": "true"}, remove=("OLD_API_FORMAT",))]


def instance(version: str = "2.0.0", *, deployed: str | None = "1.9.0", policy: str | None = None,
             status: Obj | None = None, config: Obj | None = None, upgrade_spec: Obj | None = None) -> Obj:
    spec: Obj = {"version": version, "database": {"host": "db"}, "config": config or {}}
    if policy or upgrade_spec:
        spec["upgrade"] = {**(upgrade_spec or {}), **({"policy": policy} if policy else {})}
    body_status: Obj = dict(status or {})
    if deployed:
        body_status.setdefault("version", deployed)
        body_status.setdefault("upgrade", {"version": deployed})
    return {"apiVersion": constants.API_VERSION, "kind": constants.INSTANCE_KIND,
            "metadata": {"name": "chat", "namespace": "ns", "uid": "uid-1", "resourceVersion": "42"},
            "spec": spec, "status": body_status}


def migration(target: str, *, name: str = "from-git", phase: str | None = None, instance_name: str = "chat",
              dry_run: bool = False, created: str = "2025-01-01T00:00:00Z") -> Obj:
    spec: Obj = {"instanceRef": {"name": instance_name}, "targetVersion": target}
    if dry_run:
        spec["dryRun"] = True
    return {"metadata": {"name": name, "creationTimestamp": created}, "spec": spec,
            "status": {"phase": phase} if phase else {}}


# --- decide: which version is deployed -----------------------------------------------------------

def test_a_new_instance_deploys_spec_version_and_records_it() -> None:
    d = up.decide(instance("1.9.0", deployed=None), TABLE, [])
    assert (d.version, d.record, d.pending) == ("1.9.0", True, None)


def test_an_unchanged_version_needs_nothing() -> None:
    d = up.decide(instance("1.9.0"), TABLE, [])
    assert (d.version, d.record, d.pending, d.create) == ("1.9.0", False, None, None)


def test_a_patch_release_is_an_image_change() -> None:
    d = up.decide(instance("1.9.4"), TABLE, [])
    assert (d.version, d.record, d.pending) == ("1.9.4", True, None)


def test_a_line_without_bundle_migrations_changes_the_image_but_never_backwards() -> None:
    d = up.decide(instance("2.2.0", deployed="2.1.0"), TABLE, [])
    assert (d.version, d.record, d.pending) == ("2.2.0", True, None)
    d = up.decide(instance("2.1.0", deployed="2.2.0"), TABLE, [])
    assert (d.version, d.pending, d.refused) == ("2.2.0", "Downgrade", True)
    d = up.decide(instance("3.11.2", deployed="2.0.0"), TABLE, [])  # off the bundle's table
    assert (d.version, d.pending, d.refused) == ("2.0.0", "UnknownVersion", True)


def test_the_real_line_upgrades_through_a_migration_never_backwards() -> None:
    """Upstream's missing fixes and the config.yaml backup run in a CoaiMigration (docs/real-app.md)."""
    d = up.decide(instance("4.25.0", deployed="3.10.5"), TABLE, [], pending_for=60)
    assert (d.version, d.pending, d.refused) == ("3.10.5", "Upgrading", False)
    assert d.path == ("3.10.5-to-3.11.1", "3.11.1-to-4.24.2", "4.24.2-to-4.25.0")
    assert d.create is not None and d.create["spec"]["targetVersion"] == "4.25.0"
    d = up.decide(instance("3.10.5", deployed="4.25.0"), TABLE, [])
    assert (d.version, d.pending, d.refused) == ("4.25.0", "Downgrade", True)
    d = up.decide(instance("3.12.0", deployed="3.11.1"), TABLE, [])  # not a known version of the line
    assert (d.version, d.pending, d.refused) == ("3.11.1", "UnknownVersion", True)


def test_an_instance_from_before_status_upgrade_uses_status_version() -> None:
    body = instance("2.0.0", deployed=None, status={"version": "1.9.0"})
    d = up.decide(body, TABLE, [], pending_for=60)
    assert d.version == "1.9.0" and d.pending == "Upgrading"


def test_a_line_change_keeps_the_old_version_and_waits_the_grace_before_creating() -> None:
    d = up.decide(instance("2.0.0"), TABLE, [], pending_for=None)
    assert d.version == "1.9.0" and not d.record
    assert d.pending == "Upgrading" and not d.refused and d.create is None
    assert d.path == ("1.9.0-to-2.0.0",)
    assert "chat-upgrade-2-0-0" in d.message
    d = up.decide(instance("2.0.0"), TABLE, [], pending_for=up.AUTOMATIC_GRACE_SECONDS - 1)
    assert d.create is None


def test_automatic_creates_a_deterministic_migration_with_the_instance_defaults() -> None:
    body = instance("2.0.0", upgrade_spec={"migration": {"backup": {"enabled": True}, "targetVersion": "9.9.9",
                                                          "rollback": {"mode": "Graceful"}}})
    d = up.decide(body, TABLE, [], pending_for=up.AUTOMATIC_GRACE_SECONDS)
    assert d.create is not None and d.version == "1.9.0"
    assert d.create["metadata"]["name"] == "chat-upgrade-2-0-0"
    assert d.create["metadata"]["namespace"] == "ns"
    assert d.create["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert d.create["spec"] == {"backup": {"enabled": True}, "rollback": {"mode": "Graceful"},
                                "instanceRef": {"name": "chat"}, "targetVersion": "2.0.0"}
    again = up.decide(body, TABLE, [], pending_for=up.AUTOMATIC_GRACE_SECONDS)
    assert again.create == d.create  # same name every time: a 409 means "already created"


def test_automatic_is_the_default_policy() -> None:
    assert up.policy({}) == up.AUTOMATIC == up.DEFAULT_POLICY


def test_manual_says_what_to_apply_and_creates_nothing() -> None:
    d = up.decide(instance("2.0.0", policy="Manual"), TABLE, [], pending_for=3600)
    assert d.version == "1.9.0" and d.pending == "AwaitingMigration" and d.create is None and not d.refused
    assert "targetVersion 2.0.0" in d.message and "instanceRef.name chat" in d.message


@pytest.mark.parametrize("policy", ["Manual", "Automatic"])
def test_a_matching_migration_from_git_is_picked_up(policy: str) -> None:
    others = [migration("2.0.0", name="other-instance", instance_name="other"),
              migration("2.0.0", name="dry", dry_run=True), migration("1.9.4", name="old-target")]
    d = up.decide(instance("2.0.0", policy=policy), TABLE, [*others, migration("2.0.0", phase="Migrating")],
                  pending_for=3600)
    assert d.pending == "Upgrading" and d.create is None and d.version == "1.9.0"
    assert "CoaiMigration from-git is Migrating" in d.message


@pytest.mark.parametrize("phase", ["Failed", "RolledBack"])
def test_a_failed_migration_is_reported_not_retried(phase: str) -> None:
    d = up.decide(instance("2.0.0"), TABLE, [migration("2.0.0", name="chat-upgrade-2-0-0", phase=phase)],
                  pending_for=3600)
    assert d.pending == "UpgradeFailed" and d.refused and d.create is None and d.version == "1.9.0"
    assert phase in d.message and "Revert spec.version to 1.9.0" in d.message


def test_the_newest_matching_migration_counts() -> None:
    old = migration("2.0.0", name="first", phase="RolledBack", created="2025-01-01T00:00:00Z")
    new = migration("2.0.0", name="second", phase="Pending", created="2025-01-02T00:00:00Z")
    assert up.decide(instance("2.0.0"), TABLE, [old, new]).pending == "Upgrading"


@pytest.mark.parametrize(("version", "reason"), [("1.8.0", "Downgrade"), ("1.9.0-rc1", "UnknownVersion"),
                                                  ("7.0.0", "UnknownVersion")])
def test_downgrades_and_unknown_versions_are_refused_and_nothing_rolls(version: str, reason: str) -> None:
    d = up.decide(instance(version, deployed="1.9.2"), TABLE, [], pending_for=3600)
    assert (d.version, d.pending, d.refused, d.create, d.record) == ("1.9.2", reason, True, None, False)
    assert "1.9.2 keeps running" in d.message


def test_a_path_the_table_forbids_is_refused() -> None:
    d = up.decide(instance("2.0.0", deployed="1.7.0"), TABLE, [], pending_for=3600)
    assert d.pending == "UnsupportedPath" and d.refused and d.version == "1.7.0"


def test_a_migration_that_still_writes_the_spec_is_followed() -> None:
    body = instance("2.0.0", status={"activeMigration": "legacy"})
    assert up.legacy_migration(body["status"])
    d = up.decide(body, TABLE, [])
    assert (d.version, d.record, d.pending) == ("2.0.0", True, None)
    body["status"]["upgrade"]["migration"] = "legacy"  # it works through status.upgrade
    assert not up.legacy_migration(body["status"])
    assert up.decide(body, TABLE, [], pending_for=60).version == "1.9.0"


# --- effective spec: what is rendered ------------------------------------------------------------

def test_effective_spec_renders_the_deployed_version_never_the_requested_one() -> None:
    body = instance("2.0.0")
    rendered = r.render(with_defaults(up.effective_spec(body["spec"], body["status"], "1.9.0")), "chat", "ns", body)
    assert rendered.deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.9.0")
    assert body["spec"]["version"] == "2.0.0"  # the input is not modified


def test_the_key_pair_a_migration_generated_is_mounted_unless_git_names_one() -> None:
    body = instance("2.0.0", status={"upgrade": {"version": "2.0.0", "migration": "m",
                                                 "certs": {"secretRef": {"name": "chat-jwt-keys"}}}})
    rendered = r.render(with_defaults(up.effective_spec(body["spec"], body["status"], "2.0.0")), "chat", "ns", body)
    volumes = rendered.deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "certs", "secret": {"secretName": "chat-jwt-keys", "defaultMode": 0o440}} in volumes
    body["spec"]["certs"] = {"secretRef": {"name": "mine"}}
    assert up.effective_spec(body["spec"], body["status"], "2.0.0")["certs"] == {"secretRef": {"name": "mine"}}


def test_maintenance_held_by_a_migration_wins_over_git() -> None:
    body = instance("2.0.0", status={"upgrade": {"version": "1.9.0", "migration": "m",
                                                 "maintenance": {"migration": "m", "message": "upgrading"}}})
    body["spec"]["maintenance"] = {"enabled": False}
    eff = up.effective_spec(body["spec"], body["status"], "1.9.0")
    assert eff["maintenance"] == {"enabled": True, "message": "upgrading"}
    rendered = r.render(with_defaults(eff), "chat", "ns", body)
    assert rendered.deployment["spec"]["replicas"] == 0


def test_config_rules_apply_to_the_rendered_env_so_old_names_keep_working() -> None:
    rules = [rule.to_dict() for rule in RULES_2_0]
    body = instance("2.0.0", config={"JWT_SECRET": "x", "OLD_API_FORMAT": True, "DEBUG": False},
                    status={"upgrade": {"version": "2.0.0", "migration": "m", "configRules": rules}})
    eff = up.effective_spec(body["spec"], body["status"], "2.0.0")
    assert eff["config"] == {"SECRET": "x", "RBAC_ENABLED": "true", "DEBUG": "false"}
    data = r.render(with_defaults(eff), "chat", "ns", body).configmap["data"]
    assert "JWT_SECRET" not in data and data["SECRET"] == "x" and data["RBAC_ENABLED"] == "true"
    assert body["spec"]["config"]["JWT_SECRET"] == "x"


def test_git_config_changes_say_what_to_rename_without_secret_values() -> None:
    changes = up.git_config_changes({"JWT_SECRET": "hunter2", "OLD_API_FORMAT": "1"}, RULES_2_0)
    assert changes == ["rename JWT_SECRET to SECRET", "remove OLD_API_FORMAT", "set RBAC_ENABLED=true"]
    assert not any("hunter2" in c for c in changes)
    assert up.git_config_changes({"SECRET": "x", "RBAC_ENABLED": "true"}, RULES_2_0) == []


def test_status_fields_report_then_forget_the_rules_once_git_has_caught_up() -> None:
    rules = [rule.to_dict() for rule in RULES_2_0]
    status = {"upgrade": {"version": "2.0.0", "configRules": rules}}
    d = up.Decision("2.0.0")
    assert up.status_fields(d, {"config": {"JWT_SECRET": "x"}}, status) == {
        "gitConfigChanges": ["rename JWT_SECRET to SECRET", "set RBAC_ENABLED=true"]}
    caught_up = {"config": {"SECRET": "x", "RBAC_ENABLED": "true"}}
    assert up.status_fields(d, caught_up, {**status, "gitConfigChanges": ["x"]}) == {
        "upgrade": {"configRules": None}, "gitConfigChanges": None}
    # never while a migration holds the instance: it may still be setting them
    assert up.status_fields(d, caught_up, {**status, "activeMigration": "m"}) == {}


def test_status_fields_record_the_deployed_version() -> None:
    assert up.status_fields(up.Decision("1.9.4", record=True), {}, {"upgrade": {"version": "1.9.0"}}) == {
        "upgrade": {"version": "1.9.4"}}
    assert up.status_fields(up.Decision("1.9.0", record=True), {}, {"upgrade": {"version": "1.9.0"}}) == {}


def test_migration_names_are_dns_names() -> None:
    assert up.migration_name("chat", "2.0.0-rc.1") == "chat-upgrade-2-0-0-rc-1"


# --- status conditions ---------------------------------------------------------------------------

def _conds(**kwargs: Any) -> dict[str, Obj]:
    status = st.compute(current={}, generation=3, endpoint="e", deployment=None, now="2025-01-01T00:00:00Z",
                        **kwargs)
    return {c["type"]: c for c in status["conditions"]}


def test_an_upgrade_under_way_is_in_progress_for_kstatus() -> None:
    conds = _conds(upgrade=st.UpgradeView("Upgrading", "1.9.0 -> 2.0.0 needs a migration"))
    assert conds["UpgradePending"]["status"] == "True" and conds["UpgradePending"]["reason"] == "Upgrading"
    assert conds["Reconciling"]["status"] == "True" and conds["Stalled"]["status"] == "False"


def test_a_refused_upgrade_is_failed_for_kstatus() -> None:
    conds = _conds(upgrade=st.UpgradeView("Downgrade", "refused", refused=True))
    assert conds["Stalled"]["status"] == "True" and conds["Stalled"]["reason"] == "Downgrade"
    assert conds["UpgradePending"]["status"] == "True"


def test_no_pending_upgrade() -> None:
    conds = _conds()
    assert conds["UpgradePending"]["status"] == "False" and conds["UpgradePending"]["reason"] == "UpToDate"


# --- upgrade_state: the migration's writes ------------------------------------------------------

class RecordingKube:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def patch(self, *args: Any, **kwargs: Any) -> Obj:
        self.calls.append((args, kwargs))
        return {"patched": True}


def test_hold_and_release_maintenance() -> None:
    body = instance("2.0.0")
    held = us.hold_maintenance_patch(body, "m", "upgrading")
    assert held == {"upgrade": {"maintenance": {"migration": "m", "message": "upgrading"}, "migration": "m"}}
    assert us.release_maintenance_patch(body, "m") is None
    body["status"]["upgrade"].update(held["upgrade"])
    assert us.hold_maintenance_patch(body, "m", "upgrading") is None  # idempotent
    assert us.release_maintenance_patch(body, "m") == {"upgrade": {"maintenance": None}}


def test_deployed_version_and_config_rules() -> None:
    body = instance("2.0.0")
    assert us.deployed_version_patch(body, "m", "1.9.0") is None
    assert us.deployed_version_patch(body, "m", "2.0.0") == {"upgrade": {"version": "2.0.0", "migration": "m"}}
    patch = us.config_rules_patch(body, "m", RULES_2_0)
    assert patch == {"upgrade": {"configRules": [RULES_2_0[0].to_dict()], "migration": "m"}}
    assert us.config_rules_patch(body, "m", []) is None
    body["status"]["upgrade"]["configRules"] = [RULES_2_0[0].to_dict()]
    assert us.config_rules_patch(body, "m", []) == {"upgrade": {"configRules": None, "migration": "m"}}


def test_merge_and_write_use_a_resource_version_precondition(monkeypatch: pytest.MonkeyPatch) -> None:
    woken: list[tuple[str, str]] = []
    monkeypatch.setattr(us.reconcile, "reconcile_named", lambda ns, name, *_, **__: woken.append((ns, name)))
    body = instance("2.0.0")
    patch = us.merge(us.deployed_version_patch(body, "m", "2.0.0"), None,
                     us.hold_maintenance_patch(body, "m", "x"))
    assert patch == {"upgrade": {"version": "2.0.0", "migration": "m",
                                 "maintenance": {"migration": "m", "message": "x"}}}
    kube = RecordingKube()
    assert us.write(kube, body, patch) == {"patched": True}  # type: ignore[arg-type]
    (args, kwargs), = kube.calls
    assert args[:4] == (constants.API_VERSION, constants.INSTANCE_KIND, "ns", "chat")
    assert args[4] == {"metadata": {"resourceVersion": "42"}, "status": patch}
    assert kwargs == {"subresource": "status"}
    assert woken == [("ns", "chat")]  # the instance controller renders the new status at once
    assert us.write(kube, body, None) == body and len(kube.calls) == 1 and len(woken) == 1
    us.write(kube, body, patch, wake=False)
    assert len(woken) == 1


def test_a_conflicting_write_is_rebuilt_from_a_fresh_read() -> None:
    """Another writer (the instance controller's conditions) changed the status between our read and
    our write: the 409 makes write_rebuilt read again and build the patch from what it finds."""
    kube = FakeKube()
    read = kube.put({**instance("2.0.0"), "apiVersion": constants.API_VERSION, "kind": constants.INSTANCE_KIND})
    kube.patch(constants.API_VERSION, constants.INSTANCE_KIND, "ns", "chat",
               {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}, subresource="status")
    seen: list[str] = []

    def build(inst: dict[str, Any]) -> dict[str, Any] | None:
        seen.append(inst["metadata"]["resourceVersion"])
        return us.hold_maintenance_patch(inst, "m", "upgrading")

    written, changed = us.write_rebuilt(kube, read, build, wake=False)  # type: ignore[arg-type]
    assert changed and len(seen) == 2 and seen[0] != seen[1]
    assert written["status"]["upgrade"]["maintenance"] == {"migration": "m", "message": "upgrading"}
    assert written["status"]["conditions"] == [{"type": "Ready", "status": "False"}]  # the other write kept
    again, changed = us.write_rebuilt(kube, written, build, wake=False)  # type: ignore[arg-type]
    assert not changed and again["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]


def test_conflicts_that_never_end_give_up_with_the_409() -> None:
    kube = FakeKube()
    read = kube.put({**instance("2.0.0"), "apiVersion": constants.API_VERSION, "kind": constants.INSTANCE_KIND})
    kube.fail("patch/status", constants.INSTANCE_KIND, status=409, times=us.WRITE_ATTEMPTS)
    with pytest.raises(KubeError) as raised:
        us.write_rebuilt(kube, read, lambda i: us.hold_maintenance_patch(i, "m", "x"), wake=False)  # type: ignore[arg-type]
    assert raised.value.status == 409
    assert len(kube.writes("patch/status")) == us.WRITE_ATTEMPTS
    kube.fail("patch/status", constants.INSTANCE_KIND, status=409)

    def deleted_meanwhile(inst: dict[str, Any]) -> dict[str, Any] | None:
        kube.objects.clear()
        return us.hold_maintenance_patch(inst, "m", "x")

    with pytest.raises(KubeError) as gone:
        us.write_rebuilt(kube, read, deleted_meanwhile, wake=False)  # type: ignore[arg-type]
    assert gone.value.status == 404 and "ns/chat was deleted" in gone.value.message


def test_a_status_written_by_upgrade_state_drives_the_render() -> None:
    """End to end through the pure parts: the migration's writes, then what the instance renders."""
    body = instance("2.0.0", config={"JWT_SECRET": "x"})
    live = copy.deepcopy(body)
    patch = us.merge(us.hold_maintenance_patch(live, "m", "up"), us.config_rules_patch(live, "m", RULES_2_0))
    live["status"]["upgrade"].update(patch["upgrade"])
    live["status"]["activeMigration"] = "m"
    d = up.decide(live, TABLE, [migration("2.0.0", name="m", phase="Migrating")], pending_for=60)
    assert d.version == "1.9.0" and d.pending == "Upgrading"
    eff = with_defaults(up.effective_spec(live["spec"], live["status"], d.version))
    assert r.render(eff, "chat", "ns", live).deployment["spec"]["replicas"] == 0
    patch = us.merge(us.deployed_version_patch(live, "m", "2.0.0"), us.release_maintenance_patch(live, "m"))
    live["status"]["upgrade"].update(patch["upgrade"])
    live["status"]["upgrade"].pop("maintenance")
    d = up.decide(live, TABLE, [])
    assert (d.version, d.pending) == ("2.0.0", None)
    rendered = r.render(with_defaults(up.effective_spec(live["spec"], live["status"], d.version)), "chat", "ns", live)
    assert rendered.deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":2.0.0")
    assert rendered.deployment["spec"]["replicas"] == 1
    assert "SECRET" in rendered.configmap["data"] and "JWT_SECRET" not in rendered.configmap["data"]


def test_the_lock_and_the_claim_are_one_write() -> None:
    body = instance("2.0.0")
    body["status"].update(us.lock_patch("m"))
    assert body["status"]["activeMigration"] == "m"
    body["status"]["upgrade"] = {"version": "1.9.0", "migration": "m"}
    assert not up.legacy_migration(body["status"])
    assert up.decide(body, TABLE, [migration("2.0.0", name="m", phase="Planning")], pending_for=60).version == "1.9.0"
