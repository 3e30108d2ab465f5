"""kubectl coai backup / backups against the in-memory API (fakekube) and a fixed clock."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coai_operator import constants
from coai_operator.plugin import backups, cli, view
from tests.unit.fakekube import FakeKube

NOW = view.parse_time("2026-12-01T09:00:00Z") or 0.0
NS = "apps"


def put(kube: FakeKube, kind: str, name: str, **fields: Any) -> dict[str, Any]:
    return kube.put({"apiVersion": constants.API_VERSION, "kind": kind,
                     "metadata": {"name": name, "namespace": NS, **fields.pop("metadata", {})}, **fields})


@pytest.fixture
def kube() -> FakeKube:
    kube = FakeKube()
    put(kube, constants.INSTANCE_KIND, "chat", spec={"version": "2.0.0"})
    put(kube, "CoaiBackupLocation", "offsite", spec={"s3": {"bucket": "b"}})
    return kube


def run(kube: FakeKube, *argv: str, waiter: backups.Waiter | None = None) -> cli.Result:
    return cli.run(cli.build_parser().parse_args(["-n", NS, *argv]), kube, NOW, waiter)  # type: ignore[arg-type]


def test_backup_creates_a_coaibackup_of_the_instance(kube: FakeKube) -> None:
    result = run(kube, "backup", "chat", "--location", "offsite")
    created = kube.get(constants.API_VERSION, "CoaiBackup", NS, "chat-20261201-090000")
    assert created is not None and result.document["metadata"]["name"] == "chat-20261201-090000"
    assert created["spec"] == {"instanceRef": {"name": "chat"}, "locationRef": {"name": "offsite"}}
    labels = created["metadata"]["labels"]
    assert labels[constants.LABEL_INSTANCE] == "chat" and constants.LABEL_MANAGED_BY not in labels
    assert result.text.startswith("coaibackup.coai.dev/chat-20261201-090000 created for chat (location offsite)\n")
    assert result.code == 0 and kube.writes() == [("create", "CoaiBackup", "chat-20261201-090000")]

    default = run(kube, "backup", "chat", "--name", "by-hand")
    assert "(the namespace's default location)" in default.text
    stored = kube.get(constants.API_VERSION, "CoaiBackup", NS, "by-hand")
    assert stored is not None and "locationRef" not in stored["spec"]


@pytest.mark.parametrize(("argv", "words"), [
    (("backup", "nope"), "CoaiInstance nope not found in namespace apps"),
    (("backup", "chat", "--location", "nowhere"), "CoaiBackupLocation nowhere not found"),
])
def test_backup_refuses_what_does_not_exist(kube: FakeKube, argv: tuple[str, ...], words: str) -> None:
    with pytest.raises(cli.PluginError, match=words):
        run(kube, *argv)
    assert kube.writes() == []


def test_backup_with_a_taken_name_says_what_to_do(kube: FakeKube) -> None:
    run(kube, "backup", "chat", "--name", "b1")
    with pytest.raises(cli.PluginError, match="already exists; pass another --name"):
        run(kube, "backup", "chat", "--name", "b1")


class Controller:
    """Stands in for the backup controller between polls: each `sleep` moves the backup on."""

    def __init__(self, kube: FakeKube, statuses: list[dict[str, Any]]) -> None:
        self.kube, self.statuses, self.t, self.slept = kube, iter(statuses), 0.0, 0

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.slept += 1
        status = next(self.statuses, None)
        if status is not None:
            (key,) = [k for k in self.kube.objects if k[0] == "CoaiBackup"]
            self.kube.patch(constants.API_VERSION, "CoaiBackup", NS, key[2], {"status": status}, subresource="status")

    def waiter(self) -> backups.Waiter:
        return backups.Waiter(self.kube, sleep=self.sleep, clock=lambda: self.t)  # type: ignore[arg-type]


DONE = {"phase": "Completed", "bytes": 3 << 20, "where": "s3://b/apps/chat-20261201-090000", "verified": True,
        "completionTime": "2026-12-01T09:01:00Z"}


def test_wait_polls_to_the_final_phase(kube: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    controller = Controller(kube, [{"phase": "Running"}, {"phase": "Running"}, DONE])
    result = run(kube, "backup", "chat", "--wait", waiter=controller.waiter())
    assert result.code == 0 and controller.slept == 3
    assert result.document["status"]["phase"] == "Completed"
    assert result.text == "CoaiBackup chat-20261201-090000: Completed, 3.0 MiB at s3://b/apps/chat-20261201-090000," \
                          " verified\n"
    progress = capsys.readouterr().err.splitlines()
    assert progress[1:] == ["coaibackup/chat-20261201-090000: Pending", "coaibackup/chat-20261201-090000: Running",
                            "coaibackup/chat-20261201-090000: Completed"]


def test_wait_on_a_failed_backup_exits_1_with_its_message(kube: FakeKube) -> None:
    controller = Controller(kube, [{"phase": "Failed", "message": "InsufficientSpace: 2 GiB needed, 1 GiB free"}])
    result = run(kube, "backup", "chat", "--wait", waiter=controller.waiter())
    assert result.code == 1
    assert result.text == "CoaiBackup chat-20261201-090000: Failed: InsufficientSpace: 2 GiB needed, 1 GiB free\n"


def test_wait_gives_up_at_its_deadline_and_says_the_backup_goes_on(kube: FakeKube) -> None:
    controller = Controller(kube, [{"phase": "Running"}] * 100)
    with pytest.raises(cli.PluginError, match="still Running after 10s; it goes on without this command"):
        run(kube, "backup", "chat", "--wait", "--timeout", "10", waiter=controller.waiter())
    assert controller.slept == 5  # 2 s polls up to the 10 s deadline


def add_backups(kube: FakeKube) -> None:
    put(kube, "CoaiBackup", "chat-pre", metadata={"creationTimestamp": "2026-12-01T06:00:00Z", "ownerReferences": [
        {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiMigration", "name": "chat-to-2-0-0", "uid": "m-1"}]},
        spec={"instanceRef": {"name": "chat"}, "pinned": True},
        status={**DONE, "completionTime": "2026-12-01T06:10:00Z", "where": "pvc://backups/apps/chat-pre"})
    put(kube, "CoaiBackup", "chat-new", metadata={"creationTimestamp": "2026-12-01T08:59:30Z"},
        spec={"instanceRef": {"name": "chat"}}, status={"phase": "Running"})
    put(kube, "CoaiBackup", "other", spec={"instanceRef": {"name": "other"}})


def test_backups_lists_the_instances_backups_newest_first(kube: FakeKube) -> None:
    add_backups(kube)
    result = run(kube, "backups", "chat")
    assert result.text == (
        "NAME      PHASE      SIZE     AGE    WHERE                        PINNED\n"
        "chat-new  Running    -        30s    -\n"
        "chat-pre  Completed  3.0 MiB  2h50m  pvc://backups/apps/chat-pre  by chat-to-2-0-0\n")
    assert [b["name"] for b in result.document] == ["chat-new", "chat-pre"]
    assert json.loads(json.dumps(result.document))[1]["pinned"] is True
    assert run(kube, "backups", "nope").text == "no CoaiBackup of nope; take one with: kubectl coai backup nope\n"


def test_backups_without_the_crd(kube: FakeKube) -> None:
    kube.fail("list", "CoaiBackup", status=404)
    result = run(kube, "backups", "chat")
    assert result.document is None and "no CoaiBackup resource in this cluster" in result.text


def test_backup_arguments_parse_after_the_command() -> None:
    args = cli.build_parser().parse_args(["backup", "chat", "--wait", "-n", "apps", "--location", "offsite"])
    assert (args.instance, args.wait, args.sub_namespace, args.location, args.timeout) == (
        "chat", True, "apps", "offsite", backups.DEFAULT_WAIT_SECONDS)
