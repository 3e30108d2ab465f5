"""Building blocks of the CoaiMigration e2e scenarios: an instance on a real MariaDB database,
seeded data, a health endpoint for validation, and polling of a migration's phase."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from tests.mariadb import engine_env, query, table_checksums  # noqa: F401  (re-exported)

from coai_operator.engine.dbconfig import DbConfig
from coai_operator.instance.render import APP_UID
from e2e.conftest import POD_HOST_ADDRESS, Cluster
from e2e.helpers import wait_for
from e2e.instances import STANDIN_RESOURCES
from e2e.localcluster.appimages import STANDIN_IMAGE
from e2e.standin.app import Settings, serving

APP_SECRET = {"JWT_SECRET": "j" * 40, "OPENAI_KEY": "sk-test-openai"}
APP_CONFIG = {"LEGACY_AUTH_ENABLED": "true", "SITE_NAME": "e2e", "OLD_API_FORMAT": "1"}


@dataclass
class Deployed:
    cluster: Cluster
    namespace: str
    name: str
    db: DbConfig

    def get(self, kind: str, name: str | None = None) -> dict:
        out = self.cluster.kubectl("get", kind, name or self.name, "-n", self.namespace, "-o", "json").stdout
        return json.loads(out)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True):
        return self.cluster.kubectl(*args, "-n", self.namespace, input=input, check=check)

    def storage_dir(self) -> Path:
        """The local directory behind the instance's /storage PVC (local control plane only)."""
        pvc = wait_for(lambda: self.get("pvc", f"{self.name}-storage")["spec"].get("volumeName"), timeout=60,
                       message="storage PVC bound")
        pv = json.loads(self.cluster.kubectl("get", "pv", pvc, "-o", "json").stdout)
        return Path(pv["spec"]["local"]["path"])


def db_env(db: DbConfig) -> dict[str, str]:
    return {**os.environ, **engine_env(db)}


def engine(db: DbConfig, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "coai_operator.cli", "engine", *args], env=db_env(db),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def deploy_instance(cluster: Cluster, namespace: str, db: DbConfig, version: str = "1.8.0",
                    name: str = "chat", seed_files: int = 8) -> Deployed:
    """A CoaiInstance on `db`, Ready, with a seeded database (and files on its storage PVC)."""
    deployed = Deployed(cluster, namespace, name, db)
    secrets = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "coai-db"},
         "stringData": {"password": db.password}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "coai-app"}, "stringData": APP_SECRET},
    ]
    instance = {
        "apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "metadata": {"name": name},
        # The guide's 1.6 - 2.0 line has no public image: its stand-in app really runs instead.
        "spec": {"version": version, "image": STANDIN_IMAGE, "resources": STANDIN_RESOURCES, "healthPath": "/health",
                 "secretRef": {"name": "coai-app"},
                 "config": dict(APP_CONFIG),
                 "database": {"host": db.host, "port": db.port, "name": db.database, "user": db.user,
                              "passwordSecretRef": {"name": "coai-db"}}},
    }
    deployed.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([*secrets, instance]))
    wait_for(lambda: deployed.kubectl("wait", "--for=condition=Ready", f"coai/{name}", "--timeout=5s",
                                      check=False).returncode == 0, timeout=120, message=f"coai/{name} Ready")
    seed(deployed, version, users=40, conversations_per_user=3, files=seed_files)
    return deployed


def seed(deployed: Deployed, version: str, *, users: int, conversations_per_user: int, files: int) -> None:
    """Seeded rows, and files on the storage PVC owned by the app's uid, as the app writes them."""
    storage = deployed.storage_dir()
    engine(deployed.db, "seed-data", "--version", version, "--users", str(users), "--conversations-per-user",
           str(conversations_per_user), "--files", str(files), "--storage", str(storage), "--seed", "e2e")
    for path in [storage, *storage.rglob("*")]:
        os.chown(path, APP_UID, APP_UID, follow_symlinks=False)


def migration_manifest(name: str, target: str, instance: str = "chat", **spec: object) -> str:
    body = {"apiVersion": "coai.dev/v1alpha1", "kind": "CoaiMigration", "metadata": {"name": name},
            "spec": {"instanceRef": {"name": instance}, "targetVersion": target, **spec}}
    return yaml.safe_dump(body)


def wait_phase(deployed: Deployed, migration: str, phases: set[str], timeout: float = 240) -> dict:
    def reached() -> dict | None:
        obj = deployed.get("cmig", migration)
        return obj if (obj.get("status") or {}).get("phase") in phases else None

    try:
        return wait_for(reached, timeout=timeout, interval=1, message=f"cmig/{migration} in {sorted(phases)}")
    except AssertionError:
        status = deployed.get("cmig", migration).get("status")
        raise AssertionError(f"cmig/{migration} did not reach {sorted(phases)}: {json.dumps(status, indent=1)}") \
            from None






def file_digests(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@contextmanager
def health_endpoint(host: str = POD_HOST_ADDRESS) -> Iterator[str]:
    """The guide-line stand-in app (e2e/standin, the same code as its image) served from this
    process, without a database: for a validation that must reach a host address (where the
    validation Job's pod reaches host processes: the bridge address on the local real node)."""
    with tempfile.TemporaryDirectory(prefix="standin-") as storage, \
            serving(Settings(version="host", port=0, storage=Path(storage)), host) as url:
        yield url
