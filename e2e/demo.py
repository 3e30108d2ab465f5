"""`make demo`: the operator's main job on an embedded default.

Starts the local control plane and a private MariaDB, installs the CRDs, applies the demo
samples (e2e/samples/demo/*.yaml, with the database address filled in) and runs the operator in
the foreground. Ctrl-C stops the operator, the control plane and MariaDB and removes their state.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import string
import subprocess
import sys
import tempfile
from pathlib import Path

from e2e.localcluster.cluster import LocalCluster
from e2e.localcluster.mariadb import LocalMariaDB

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "e2e" / "samples" / "demo"
# --line real: the real CoAI app (3.x/4.x); needs the real node, which runs its image.
REAL_SAMPLES = REPO / "e2e" / "samples" / "real-app"
UPGRADE = REAL_SAMPLES / "upgrade-to-4.25.0.yaml"
NAMESPACE = "coai-demo"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def prepare_database(db: LocalMariaDB, version: str) -> None:
    db.create_database("chatnio")
    env = {**os.environ, **db.env("chatnio")}
    seed = [sys.executable, "-m", "coai_operator.cli", "engine", "seed-data", "--version", version,
            "--users", "200", "--conversations-per-user", "3"]
    subprocess.run(seed, env=env, check=True, stdout=subprocess.DEVNULL)
    say(f"database chatnio seeded at CoAI {version} (200 users, 600 conversations)")


def apply_samples(cluster: LocalCluster, db: LocalMariaDB, samples: Path = SAMPLES) -> None:
    cluster.kubectl("create", "namespace", NAMESPACE)
    # The password goes from memory to a Secret through stdin, never argv.
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: coai-db}\ntype: Opaque\n"
        f"stringData: {{password: {db.password!r}}}\n"))
    values = {"MYSQL_HOST": db.host, "MYSQL_PORT": str(db.port), "NAMESPACE": NAMESPACE}
    for sample in sorted(samples.glob("[0-9]*.yaml")):
        manifest = string.Template(sample.read_text()).safe_substitute(values)
        cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=manifest)
        say(f"applied {sample.relative_to(REPO)}")


def upgrade_when_ready(cluster: LocalCluster, timeout: int = 600) -> None:
    """The real line's second half: once 3.10.5 is Ready, the CoaiMigration to 4.25.0."""
    done = cluster.kubectl("wait", "--for=condition=Ready", f"--timeout={timeout}s", "coai/chat", "-n", NAMESPACE,
                           check=False, timeout=timeout + 30)
    if done.returncode != 0:
        say(f"coai/chat is not Ready after {timeout}s: kubectl describe coai chat -n {NAMESPACE}; no upgrade applied")
        return
    say("CoAI 3.10.5 Ready. Open it: kubectl port-forward -n coai-demo svc/chat 8080:80, then "
        "http://127.0.0.1:8080, user root, password from Secret coai-admin")
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(UPGRADE))
    # What a person commits to Git with the migration: the version the instance is meant to run
    # (without it the migration still upgrades, and the instance reports the old spec.version as
    # a refused downgrade until Git catches up: docs/gitops.md).
    cluster.kubectl("patch", "coai", "chat", "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"version":"4.25.0"}}')
    say(f"applied {UPGRADE.relative_to(REPO)} and spec.version 4.25.0: kubectl get coai,cmig -n {NAMESPACE} -w")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=Path(tempfile.gettempdir()) / "coai-demo")
    parser.add_argument("--from-version", default="1.8.0", help="CoAI version the demo database starts at")
    parser.add_argument("--no-samples", action="store_true", help="only the control plane, MariaDB and CRDs")
    parser.add_argument("--line", choices=["guide", "real"], default="real",
                        help="real: the real app at 3.10.5, upgraded to 4.25.0 once Ready "
                             "(e2e/samples/real-app/, docs/real-app.md); guide: the migration guide's "
                             "1.8 -> 2.0 on its stand-in app")
    args = parser.parse_args()
    shutil.rmtree(args.state_dir, ignore_errors=True)
    cluster = LocalCluster(state_dir=args.state_dir / "cluster")
    db = LocalMariaDB(state_dir=args.state_dir / "mariadb")
    operator: subprocess.Popen | None = None
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        cluster.start()
        say(f"cluster (control plane + node) up in {cluster.startup_seconds:.1f}s")
        db.start()
        say(f"MariaDB on 127.0.0.1 and {db.host} (for pods), port {db.port}")
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                        "crd/coaiinstances.coai.dev", "crd/coaimigrations.coai.dev")
        say("CRDs installed")
        real = not args.no_samples and args.line == "real"
        if real:
            db.create_database("chatnio")  # the real app creates its own schema at start
            apply_samples(cluster, db, REAL_SAMPLES)
        elif not args.no_samples:
            prepare_database(db, args.from_version)
            apply_samples(cluster, db)
        say(f"in another shell: export KUBECONFIG={cluster.kubeconfig}; "
            f"kubectl get coai,cmig -n {NAMESPACE} -w")
        say("running the operator in the foreground (Ctrl-C to stop and clean up)")
        operator = subprocess.Popen([sys.executable, "-m", "coai_operator.cli", "run", "--all-namespaces"],
                                    env={**cluster.env(), "PYTHONUNBUFFERED": "1"}, cwd=REPO)
        if real:
            upgrade_when_ready(cluster)
        return operator.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if operator and operator.poll() is None:
            operator.terminate()
            operator.wait(timeout=30)
        db.stop()
        cluster.stop()
        shutil.rmtree(args.state_dir, ignore_errors=True)
        say("stopped; state removed")


if __name__ == "__main__":
    sys.exit(main())
