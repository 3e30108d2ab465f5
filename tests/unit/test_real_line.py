"""The real 3.x/4.x line: planning, refusals, the Jobs it runs, root's password and its status."""

from __future__ import annotations

from typing import Any

import pytest

from coai_operator.bundles import load_bundle
from coai_operator.bundles.realline import has_userinfo, is_real, load_real_line, plan_real
from coai_operator.domain.errors import PlanError
from coai_operator.instance import adminpw
from coai_operator.instance import status as st
from coai_operator.instance.spec import image_ref, with_defaults
from coai_operator.migration import digest, jobs, planner
from coai_operator.migration.snapshot import Snapshot, snapshot_objects, take_snapshot

from .test_instance_status import ENDPOINT, NOW, cond, deployment
from .test_migration_planner import instance, migration

TABLE = load_bundle().table
Obj = dict[str, Any]


def test_the_line_holds_the_four_measured_versions() -> None:
    assert [str(v) for v in load_real_line().versions] == ["3.10.5", "3.11.1", "4.24.2", "4.25.0"]
    assert is_real("3.10.5") and is_real("4.25.0") and not is_real("2.0.0") and not is_real("latest")
    assert not has_userinfo("3.11.1") and has_userinfo("4.24.2")


def test_upgrade_and_back_along_the_line() -> None:
    up = planner.plan_migration(migration("4.25.0")["spec"], instance("3.10.5"), TABLE, "chat")
    assert up.path == ("3.10.5-to-3.11.1", "3.11.1-to-4.24.2", "4.24.2-to-4.25.0")
    assert up.steps == ("Preflight", "Backup", "MaintenanceOn", "ConfigMigration", "Migrate", "Rollout", "Validate")
    assert up.warnings == ()
    down = planner.plan_migration(migration("3.10.5")["spec"], instance("4.25.0"), TABLE, "chat")
    assert down.path == ("4.25.0-to-4.24.2", "4.24.2-to-3.11.1", "3.11.1-to-3.10.5")
    assert "downgrade" in down.warnings[0]
    assert plan_real("4.24.2", "4.25.0").hops == ("4.24.2-to-4.25.0",)


@pytest.mark.parametrize(("current", "target", "reason", "words"), [
    ("3.10.5", "latest", "FloatingTag", "pin a version"),
    ("3.10.5", "stable", "FloatingTag", "pin a version"),
    ("3.10.5", "3.12.0", "UnknownVersion", "known: 3.10.5, 3.11.1, 4.24.2, 4.25.0"),
    ("2.0.0", "3.10.5", "UnknownVersion", "no migration between the guide's 1.x-2.x line (2.0.0)"),
    ("4.25.0", "4.25.0", "AlreadyAtTarget", "already runs"),
])
def test_refusals_name_a_reason_and_what_to_do(current: str, target: str, reason: str, words: str) -> None:
    with pytest.raises(planner.PlanRefused) as refused:
        planner.plan_migration(migration(target)["spec"], instance(current), TABLE, "chat")
    assert refused.value.reason == reason
    assert words in str(refused.value)


def test_floating_tag_error_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="floating tag"):
        plan_real("latest", "4.25.0")


def test_the_guide_line_is_planned_as_before() -> None:
    plan = planner.plan_migration(migration("2.0.0")["spec"], instance("1.8.0"), TABLE, "chat")
    assert plan.path == ("1.8.0-to-1.9.0", "1.9.0-to-2.0.0")


# --- Jobs ----------------------------------------------------------------------------------------

def real_instance(version: str = "3.10.5", **spec: object) -> Obj:
    return instance(version, **spec)


def args(step: str, target: str = "4.25.0", **inst_spec: object) -> list[str]:
    return jobs.build_job(migration(target), real_instance(**inst_spec), step)["spec"]["template"]["spec"][
        "containers"][0]["args"]


def test_preflight_and_migrate_run_migrate_real_with_the_running_version() -> None:
    assert args(planner.PREFLIGHT) == ["engine", "migrate-real", "--target", "4.25.0", "--from", "3.10.5",
                                       "--plan-only"]
    assert args(planner.MIGRATE) == ["engine", "migrate-real", "--target", "4.25.0", "--from", "3.10.5"]
    assert args(planner.MIGRATE, target="2.0.0")[:2] == ["engine", "migrate"]  # the guide's line


def test_validation_talks_to_the_api_under_its_prefix_and_logs_in_with_the_admin_secret() -> None:
    job = jobs.build_job(migration("4.25.0"), real_instance(admin={"passwordSecretRef": {"name": "coai-admin"}}),
                         planner.VALIDATE)
    c = job["spec"]["template"]["spec"]["containers"][0]
    a = c["args"]
    assert a[a.index("--health-path") + 1] == "/api/"
    assert a[a.index("--api-prefix") + 1] == "/api"
    assert a[a.index("--chat-path") + 1] == "/api/v1/chat/completions"
    assert a[a.index("--expect-version") + 1] == "4.25.0"
    env = {e["name"]: e for e in c["env"]}
    assert env["COAI_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "coai-admin", "key": "password", "optional": True}
    plain = args(planner.VALIDATE, config={"SERVE_STATIC": "false"})
    assert plain[plain.index("--health-path") + 1] == "/" and plain[plain.index("--api-prefix") + 1] == ""


# --- root's password ---------------------------------------------------------------------------------

BODY: Obj = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance",
             "metadata": {"name": "chat", "namespace": "ns", "uid": "uid-1"}}


class FakeKube:
    """Records create calls; get answers from a dict (pure unit test of the Job bookkeeping)."""

    def __init__(self, objects: dict[str, Obj] | None = None) -> None:
        self.objects = objects or {}
        self.created: list[Obj] = []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        return self.objects.get(name)

    def create(self, obj: Obj) -> Obj:
        self.created.append(obj)
        self.objects[obj["metadata"]["name"]] = obj
        return obj


ADMIN_SPEC = with_defaults({"version": "3.10.5", "database": {"host": "db"},
                            "admin": {"passwordSecretRef": {"name": "coai-admin"}}})


def test_the_admin_job_starts_only_once_the_app_runs_and_takes_the_password_by_reference() -> None:
    kube = FakeKube()
    assert adminpw.ensure(kube, BODY, ADMIN_SPEC, ENDPOINT, rollout_complete=False).done is False
    assert kube.created == []
    state = adminpw.ensure(kube, BODY, ADMIN_SPEC, ENDPOINT, rollout_complete=True)
    assert state.configured and not state.done
    (job,) = kube.created
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["engine", "admin-password", "--base-url", ENDPOINT, "--api-prefix", "/api"]
    assert c["env"][0] == {"name": "COAI_ADMIN_PASSWORD",
                           "valueFrom": {"secretKeyRef": {"name": "coai-admin", "key": "password"}}}
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert adminpw.ensure(kube, BODY, ADMIN_SPEC, ENDPOINT, rollout_complete=True).done
    assert len(kube.created) == 1


def test_a_failed_admin_job_says_what_to_do() -> None:
    name = adminpw.job_name(BODY, ADMIN_SPEC)
    kube = FakeKube({name: {"status": {"conditions": [{"type": "Failed", "status": "True",
                                                       "message": "BackoffLimitExceeded"}]}}})
    state = adminpw.ensure(kube, BODY, ADMIN_SPEC, ENDPOINT, rollout_complete=True)
    assert state.failed and "delete it to retry" in state.failed


def test_the_guide_line_has_no_root_user() -> None:
    spec = with_defaults({"version": "2.0.0", "database": {"host": "db"}})
    assert adminpw.ensure(FakeKube(), BODY, spec, ENDPOINT, rollout_complete=True) == adminpw.NOT_APPLICABLE


def compute(admin: adminpw.AdminState) -> Obj:
    return st.compute(current=None, generation=4, endpoint=ENDPOINT, deployment=deployment(version="3.10.5"),
                      now=NOW, admin=admin)


def test_not_ready_until_root_has_the_secret_password() -> None:
    pending = compute(adminpw.AdminState(applies=True, configured=True, message="Job x sets root's password"))
    assert pending["phase"] == "Progressing"
    assert cond(pending, "Ready")["status"] == "False"
    assert cond(pending, "Ready")["reason"] == "SettingAdminPassword"
    done = compute(adminpw.AdminState(applies=True, configured=True, done=True))
    assert done["phase"] == "Ready" and cond(done, "DefaultAdminPassword")["status"] == "False"
    failed = compute(adminpw.AdminState(applies=True, configured=True, failed="Job x could not set it"))
    assert failed["phase"] == "Degraded" and cond(failed, "Degraded")["reason"] == "AdminPasswordFailed"


def test_without_the_secret_a_warning_condition_says_the_default_is_live() -> None:
    status = compute(adminpw.AdminState(applies=True, configured=False))
    assert status["phase"] == "Ready"
    warning = cond(status, "DefaultAdminPassword")
    assert warning["status"] == "True" and "public default password" in warning["message"]
    assert "chatnio123456" not in warning["message"]


# --- image digests ---------------------------------------------------------------------------------

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(("image_id", "expected"), [
    (f"docker.io/programzmh/chatnio@{DIGEST}", DIGEST),
    (f"programzmh/chatnio:3.10.5@{DIGEST}", DIGEST),
    (DIGEST, None),  # a bare image ID cannot be pulled by digest
    ("", None),
    (None, None),
])
def test_only_a_repository_digest_is_pinned(image_id: str | None, expected: str | None) -> None:
    assert digest.repo_digest(image_id) == expected


def test_the_running_digest_comes_from_a_ready_coai_container() -> None:
    class Pods:
        def list(self, api_version: str, kind: str, namespace: str, label_selector: str = "") -> list[Obj]:
            assert "app.kubernetes.io/instance=chat" in label_selector
            return [{"status": {"containerStatuses": [
                {"name": "coai", "ready": False, "imageID": "x@sha256:" + "f" * 64},
            ]}}, {"status": {"containerStatuses": [
                {"name": "sidecar", "ready": True, "imageID": "y@sha256:" + "e" * 64},
                {"name": "coai", "ready": True, "imageID": f"docker.io/programzmh/chatnio@{DIGEST}"},
            ]}}]

    assert digest.running_digest(Pods(), "ns", "chat") == DIGEST


def test_the_snapshot_keeps_the_digest_and_the_image_reference_pins_it() -> None:
    snap = take_snapshot(real_instance(), "3.10.5", None, DIGEST)
    configmap, _ = snapshot_objects(migration("4.25.0"), snap)
    assert Snapshot.from_objects(configmap, None).image_digest == DIGEST
    pinned = with_defaults({"version": "3.10.5", "database": {"host": "db"}, "imageDigest": DIGEST})
    assert image_ref(pinned) == f"programzmh/chatnio:3.10.5@{DIGEST}"


def test_the_real_line_migrates_only_the_users_config_rules() -> None:
    from coai_operator.migration.context import Ctx
    from coai_operator.migration.opsteps import config_rules

    ctx = Ctx(kube=None, migration=migration("4.25.0", configMigration={"set": {"SITE_NAME": "x"}}),  # type: ignore[arg-type]
              instance=real_instance(), status={"path": ["3.10.5-to-3.11.1", "3.11.1-to-4.24.2"]})
    rules = config_rules(ctx)
    assert [r.set for r in rules if r.set] == [{"SITE_NAME": "x"}]


def test_no_admin_job_while_the_app_is_scaled_down() -> None:
    from coai_operator.instance.reconcile import _admin_state

    kube = FakeKube()
    stopped = deployment(version="3.10.5", replicas=0, updated=0, ready=0, available=0, total=0)
    assert not _admin_state(kube, BODY, ADMIN_SPEC, stopped, "chat", "ns").done  # type: ignore[arg-type]
    assert kube.created == []
    _admin_state(kube, BODY, ADMIN_SPEC, deployment(version="3.10.5"), "chat", "ns")  # type: ignore[arg-type]
    assert len(kube.created) == 1


class SpecKube:
    """get/patch/list of the objects a rollback's config step touches (merge patches, in memory)."""

    def __init__(self, *objects: Obj) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        return self.objects.get((kind, name))

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str = "") -> list[Obj]:
        return [o for (k, _), o in self.objects.items() if k == kind]

    def patch(self, api_version: str, kind: str, namespace: str, name: str, patch: Obj, **_: Any) -> Obj:
        obj = self.objects[(kind, name)]

        def merge(into: Obj, changes: Obj) -> None:
            for key, value in changes.items():
                if value is None:
                    into.pop(key, None)
                elif isinstance(value, dict) and isinstance(into.get(key), dict):
                    merge(into[key], value)
                else:
                    into[key] = value
        merge(obj, {k: v for k, v in patch.items() if k != "metadata"})
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"].get("resourceVersion") or 1) + 1)
        return obj


def test_a_rollback_pins_the_recorded_digest_and_the_next_rollout_removes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from coai_operator.instance import upgrade_state as us
    from coai_operator.migration.context import Ctx

    monkeypatch.setattr(us.reconcile, "reconcile_named", lambda *_, **__: None)  # no operator to wake here
    from coai_operator.migration.opsteps import rollback_config, rollout

    inst = real_instance("4.25.0")
    inst["spec"]["version"] = "4.25.0"
    inst["metadata"]["resourceVersion"] = "1"
    snap = take_snapshot(real_instance(), "3.10.5", None, DIGEST)
    configmap, _ = snapshot_objects(migration("4.25.0"), snap)
    configmap = {**configmap, "kind": "ConfigMap"}
    kube = SpecKube({**inst, "kind": "CoaiInstance"}, configmap)
    ctx = Ctx(kube=kube, migration=migration("4.25.0"), instance=inst, status={})  # type: ignore[arg-type]
    assert rollback_config(ctx).state == "done"
    instance = kube.objects[("CoaiInstance", "chat")]
    upgrade = instance["status"]["upgrade"]  # never the spec: Git owns it
    assert (upgrade["version"], upgrade["imageDigest"]) == ("3.10.5", DIGEST)
    assert "imageDigest" not in instance["spec"]

    ctx = Ctx(kube=kube, migration=migration("4.25.0"), instance=kube.objects[("CoaiInstance", "chat")],
              status={"steps": []})  # type: ignore[arg-type]
    rollout(ctx)
    assert "imageDigest" not in upgrade and upgrade["version"] == "4.25.0"
