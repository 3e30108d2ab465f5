"""The local cluster really works: controllers, scheduler, the real node, storage, GC."""

from __future__ import annotations

import json
import textwrap

from coai_operator import __version__
from coai_operator.constants import OPERATOR_IMAGE
from e2e.conftest import Cluster, OperatorProcess
from e2e.helpers import wait_for


def job_manifest(name: str, command: list[str], volumes: str = "", mounts: str = "", env: str = "") -> str:
    return textwrap.dedent(f"""\
        apiVersion: batch/v1
        kind: Job
        metadata: {{name: {name}}}
        spec:
          backoffLimit: 0
          template:
            spec:
              restartPolicy: Never
              # The image runs as 65532; volumes are root-owned like fresh disks, fsGroup opens them.
              securityContext: {{fsGroup: 65532}}
              containers:
              - name: main
                image: {OPERATOR_IMAGE}
                command: {json.dumps(command)}
        """) + textwrap.indent(textwrap.dedent(env + mounts), " " * 8) + textwrap.indent(
        textwrap.dedent(volumes), " " * 6)


def job_condition(cluster: Cluster, namespace: str, name: str) -> str:
    out = cluster.kubectl("get", "job", name, "-n", namespace, "-o",
                          "jsonpath={range .status.conditions[?(@.status=='True')]}{.type} {end}").stdout
    return "Failed" if "Failed" in out else ("Complete" if "Complete" in out else "")


def terminated(cluster: Cluster, namespace: str, job: str) -> dict:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", f"job-name={job}", "-o", "json").stdout)
    return pods["items"][0]["status"]["containerStatuses"][0]["state"]["terminated"]


def test_deployment_gets_a_replicaset_and_ready_pods(cluster: Cluster, namespace: str) -> None:
    # The operator image serving files: a real process on a real port, Ready by a real probe.
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": OPERATOR_IMAGE, "command": [
                "python3", "-m", "http.server", "8080"],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]}}}}))
    wait_for(lambda: cluster.kubectl("get", "deploy", "web", "-n", namespace, "-o",
                                     "jsonpath={.status.availableReplicas}").stdout == "2",
             timeout=120, message="deployment web has 2 available replicas")
    rs = cluster.kubectl("get", "rs", "-n", namespace, "-l", "app=web", "-o", "name").stdout.split()
    assert len(rs) == 1
    ready = cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=web", "-o",
                            "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}").stdout.split()
    assert ready == ["True", "True"]


def test_job_with_the_operator_image_runs_this_package(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=job_manifest("version", ["coai-operator", "version"]))
    wait_for(lambda: job_condition(cluster, namespace, "version"), timeout=60, message="job version finished")
    assert job_condition(cluster, namespace, "version") == "Complete"
    logs = cluster.kubectl("logs", "-n", namespace, "job/version").stdout
    assert json.loads(logs.strip().splitlines()[-1])["version"] == __version__


def test_failing_job_ends_failed_with_its_exit_code(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=job_manifest("broken", ["coai-operator", "no-such-command"]))
    wait_for(lambda: job_condition(cluster, namespace, "broken"), timeout=60, message="job broken finished")
    assert job_condition(cluster, namespace, "broken") == "Failed"
    assert terminated(cluster, namespace, "broken")["exitCode"] == 2


def test_env_is_resolved_from_secrets_configmaps_and_fields(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "secret", "generic", "db", "-n", namespace, "--from-literal=password=s3cr3t")
    cluster.kubectl("create", "configmap", "env", "-n", namespace, "--from-literal=MYSQL_HOST=db.example")
    env = """\
        env:
        - {name: PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}
        - {name: POD_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        envFrom:
        - configMapRef: {name: env}
        """
    script = 'printf "%s|%s|%s" "$PASSWORD" "$POD_NS" "$MYSQL_HOST" > /dev/termination-log'
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=job_manifest("env", ["sh", "-c", script], env=env))
    wait_for(lambda: job_condition(cluster, namespace, "env") == "Complete", timeout=60, message="job env completes")
    assert terminated(cluster, namespace, "env")["message"] == f"s3cr3t|{namespace}|db.example"


def test_a_file_written_to_a_pvc_is_read_by_a_second_job(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=textwrap.dedent("""\
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata: {name: shared}
        spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
        """))
    mounts = "volumeMounts: [{name: data, mountPath: /backup}]\n"
    volumes = "volumes: [{name: data, persistentVolumeClaim: {claimName: shared}}]\n"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=job_manifest(
        "writer", ["sh", "-c", f"echo payload-{namespace} > /backup/file.txt"], volumes=volumes, mounts=mounts))
    wait_for(lambda: job_condition(cluster, namespace, "writer") == "Complete", timeout=60, message="writer done")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=job_manifest(
        "reader", ["sh", "-c", "cat /backup/file.txt > /dev/termination-log"], volumes=volumes, mounts=mounts))
    wait_for(lambda: job_condition(cluster, namespace, "reader") == "Complete", timeout=60, message="reader done")
    assert terminated(cluster, namespace, "reader")["message"].strip() == f"payload-{namespace}"


def test_deleting_an_owner_deletes_what_it_owns(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = cluster.kubectl("get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=textwrap.dedent(f"""\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: owned
          ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: owner, uid: {uid}}}]
        """))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(lambda: cluster.kubectl("get", "configmap", "owned", "-n", namespace, check=False).returncode != 0,
             timeout=60, message="the garbage collector deletes the owned ConfigMap")


def test_operator_starts_and_watches_both_resources(operator: OperatorProcess) -> None:
    wait_for(lambda: "coaiinstances.coai.dev" in operator.log_text(), timeout=30, message="startup log")
    text = operator.log_text()
    assert "coai-operator watching coaiinstances.coai.dev and coaimigrations.coai.dev" in text
    assert "Traceback" not in text
