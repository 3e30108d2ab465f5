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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=Path(tempfile.gettempdir()) / "coai-demo")
    parser.add_argument("--from-version", default="1.8.0", help="CoAI version the demo database starts at")
    parser.add_argument("--no-samples", action="store_true", help="only the control plane, MariaDB and CRDs")
    parser.add_argument("--line", choices=["guide", "real"], default="guide",
                        help="guide: the migration guide's 1.8 -> 2.0 on its stand-in; real: the real app "
                             "3.10.5, then apply e2e/samples/real-app/upgrade-to-4.25.0.yaml (docs/real-app.md)")
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
        if not args.no_samples and args.line == "real":
            db.create_database("chatnio")  # the real app creates its own schema at start
            apply_samples(cluster, db, REAL_SAMPLES)
            say("then: kubectl port-forward -n coai-demo svc/chat 8080:80, open http://127.0.0.1:8080, "
                "log in as root (password in Secret coai-admin), and apply "
                "e2e/samples/real-app/upgrade-to-4.25.0.yaml")
        elif not args.no_samples:
            prepare_database(db, args.from_version)
            apply_samples(cluster, db)
        say(f"in another shell: export KUBECONFIG={cluster.kubeconfig}; "
            f"kubectl get coai,cmig -n {NAMESPACE} -w")
        say("running the operator in the foreground (Ctrl-C to stop and clean up)")
        operator = subprocess.Popen([sys.executable, "-m", "coai_operator.cli", "run", "--all-namespaces"],
                                    env={**cluster.env(), "PYTHONUNBUFFERED": "1"}, cwd=REPO)
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
