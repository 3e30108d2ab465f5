"""The real node's pure parts: the pause image archive, the provisioner's PV, the CNI config."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

from e2e.localcluster import network, pause, provisioner


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_pause_archive_is_an_oci_layout_named_for_containerd() -> None:
    files = _members(pause.oci_archive(b"\x7fELF-binary", pause.PAUSE_IMAGE))
    index = json.loads(files["index.json"])
    (descriptor,) = index["manifests"]
    assert descriptor["annotations"]["io.containerd.image.name"] == pause.PAUSE_IMAGE
    manifest = json.loads(files[f"blobs/sha256/{descriptor['digest'].removeprefix('sha256:')}"])
    for blob in [manifest["config"], *manifest["layers"]]:  # every digest matches its content
        data = files[f"blobs/sha256/{blob['digest'].removeprefix('sha256:')}"]
        assert hashlib.sha256(data).hexdigest() == blob["digest"].removeprefix("sha256:")
        assert len(data) == blob["size"]
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'].removeprefix('sha256:')}"])
    assert config["config"]["Entrypoint"] == ["/pause"]
    layer = _members(files[f"blobs/sha256/{manifest['layers'][0]['digest'].removeprefix('sha256:')}"])
    assert layer == {"pause": b"\x7fELF-binary"}
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]  # uncompressed layer


def test_provisioned_volume_is_local_and_pinned_to_the_node() -> None:
    pvc = SimpleNamespace(
        metadata=SimpleNamespace(uid="u1", namespace="ns", name="data"),
        spec=SimpleNamespace(resources=SimpleNamespace(requests={"storage": "2Gi"}), access_modes=None,
                             storage_class_name="local", volume_mode=None))
    body = provisioner.pv_body(pvc, Path("/v/pvc-u1"), "node-a")
    spec = body["spec"]
    assert spec["local"] == {"path": "/v/pvc-u1"} and "hostPath" not in spec
    term = spec["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term == {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]}
    assert spec["claimRef"]["uid"] == "u1" and spec["capacity"] == {"storage": "2Gi"}
    assert spec["accessModes"] == ["ReadWriteOnce"]


def test_cni_config_never_makes_the_bridge_a_host_wide_gateway(tmp_path: Path) -> None:
    config = network.cni_config(tmp_path / "ipam")
    bridge = config["plugins"][0]
    # isGateway would switch on forwarding for the whole host; the harness does it per bridge.
    assert bridge["isGateway"] is False and bridge["ipMasq"] is False
    assert bridge["ipam"]["dataDir"] == str(tmp_path / "ipam")  # not /var/lib/cni
    assert bridge["ipam"]["routes"] == [{"dst": "0.0.0.0/0", "gw": network.GATEWAY}]


def test_a_node_that_never_got_the_lock_leaves_the_host_alone(monkeypatch, tmp_path: Path) -> None:
    """Its start() was interrupted while another cluster held the node: that cluster's bridge,
    chains, pods and host record must survive this one's stop()."""
    from e2e.localcluster import node

    calls: list[str] = []
    monkeypatch.setattr(network, "restore_host", lambda: calls.append("restore_host"))
    monkeypatch.setattr(network, "kill_pod_processes", lambda: calls.append("kill_pod_processes"))
    monkeypatch.setattr(network, "unmount_under", lambda *_: calls.append("unmount_under"))
    monkeypatch.setattr(network, "kill_processes_naming", lambda *_: calls.append("kill_processes_naming"))
    cluster = SimpleNamespace(state_dir=tmp_path, stop_process=lambda name: calls.append(name))
    node.LocalNode(cluster).stop()  # type: ignore[arg-type]
    assert calls == []


def test_leftover_processes_naming_the_socket_are_killed_and_no_other(tmp_path: Path) -> None:
    sock = tmp_path / "containerd.sock"
    idle = [sys.executable, "-c", "import time; time.sleep(300)", "-address"]
    ours = subprocess.Popen([*idle, str(sock)])
    other = subprocess.Popen([*idle, str(tmp_path / "other.sock")])
    try:
        assert network.kill_processes_naming(f"-address {sock}") == [ours.pid]
        assert ours.wait(timeout=10) == -9
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
