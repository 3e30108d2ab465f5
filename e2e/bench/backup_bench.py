"""Backup/restore to S3 (versitygw on loopback) vs the plain pipeline with the same client.

`python -m e2e.bench.backup_bench [--scales 0.2,1] [--repeat 2]`. Per scale (1.0 = 1M users,
5M conversations, `engine seed-data` at 1.6):

- backup   `engine backup --dir s3://... --include database` (dump, row count, gzip -1, stream
           multipart, re-read + verify) vs `mariadb-dump | gzip -1 | upload` where the upload is
           the same MinIO client with the same part size (tests/s3.py starts versitygw);
- restore  `engine restore` (sha256 pass, drop, streamed load, row counts) vs download to a file
           + `gunzip -c | mariadb`, both into a fresh database;
- memory   peak RSS (VmHWM) of the backup process at each scale: streaming means it does not
           grow with the database.
Reports only: never fails on a missed target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.s3 import S3Server

from e2e.bench.common import PYTHON, REPO, Report, log, peak_rss_kib, run_timed
from e2e.localcluster.mariadb import LocalMariaDB

UPLOAD = """
import sys, minio
c = minio.Minio(sys.argv[1], access_key=sys.argv[2], secret_key=__import__('os').environ['S3_SECRET'], secure=False)
c.put_object(sys.argv[3], sys.argv[4], sys.stdin.buffer, -1, part_size=8 << 20)
"""
DOWNLOAD = """
import sys, minio
c = minio.Minio(sys.argv[1], access_key=sys.argv[2], secret_key=__import__('os').environ['S3_SECRET'], secure=False)
c.fget_object(sys.argv[3], sys.argv[4], sys.argv[5])
"""


def _engine_with_rss(args: list[str], env: dict[str, str]) -> tuple[float, int, dict]:
    """Run the engine, sampling VmHWM of the process (the dump tool is a separate process)."""
    started = time.monotonic()
    proc = subprocess.Popen([PYTHON, "-m", "coai_operator.cli", "engine", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], peak_rss_kib(proc.pid) or 0)
            time.sleep(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out = proc.communicate()[0].decode()
    seconds = time.monotonic() - started
    watcher.join()
    result = json.loads(out.strip().splitlines()[-1])
    if proc.returncode != 0:
        raise RuntimeError(f"engine {args[0]} failed: {result}")
    return seconds, peak[0], result


def run(report: Report, scales: list[float], repeat: int, workdir: Path, restore: bool = True) -> None:
    db = LocalMariaDB(workdir / "mariadb", host="127.0.0.1").start()  # no pods here: no node bridge needed
    s3 = S3Server(workdir / "s3" / "data").start()
    try:
        bucket = s3.make_bucket()
        netloc = f"{s3.host}:{s3.port}"
        for scale in scales:
            users = max(10, round(1_000_000 * scale))
            name = f"bench_{str(scale).replace('.', '_')}"
            db.create_database(name)
            env = {**os.environ, **db.env(name), **s3.env(), "S3_SECRET": s3.secret_key}
            log(f"seeding {users} users at scale {scale}")
            run_timed([PYTHON, "-m", "coai_operator.cli", "engine", "seed-data", "--version", "1.6.0",
                       "--users", str(users)], env=env)
            ours, base, rss = [], [], []
            raw = 0
            for i in range(repeat):
                seconds, peak, result = _engine_with_rss(
                    ["backup", "--dir", f"s3://{bucket}/ours/{name}-{i}", "--include", "database"], env)
                ours.append(seconds)
                rss.append(peak)
                raw = result["database"]["rawBytes"]
                opts = workdir / "client.cnf"
                opts.write_text(f"[client]\nhost=127.0.0.1\nport={db.port}\nuser={db.user}\n"
                                f"password=\"{db.password}\"\nprotocol=TCP\n")
                script = (f"mariadb-dump --defaults-extra-file={opts} --single-transaction --routines --triggers "
                          f"{name} | gzip -1 | {PYTHON} -c \"$UPLOAD\" {netloc} {s3.access_key} {bucket} "
                          f"base/{name}-{i}.sql.gz")
                base.append(run_timed(["bash", "-o", "pipefail", "-c", script], env={**env, "UPLOAD": UPLOAD}).seconds)
            report.add("backup-s3", f"backup to S3, scale {scale} ({raw / 1e6:.0f} MB dump)", min(ours), "s",
                       baseline=min(base), baseline_name="mariadb-dump | gzip -1 | upload (same client)",
                       target="<= 1.2")
            report.add("backup-s3", f"backup process peak RSS, scale {scale}", max(rss) / 1024, "MiB")
            if not restore:
                continue
            ours_r, base_r = [], []
            for i in range(repeat):
                target = f"{name}_r{i}"
                db.create_database(target)
                seconds, _, _ = _engine_with_rss(["restore", "--dir", f"s3://{bucket}/ours/{name}-{i}",
                                                  "--include", "database"], {**env, "MYSQL_DB": target})
                ours_r.append(seconds)
                baseline_db = f"{name}_b{i}"
                db.create_database(baseline_db)
                dump = workdir / "download.sql.gz"
                script = (f"{PYTHON} -c \"$DOWNLOAD\" {netloc} {s3.access_key} {bucket} base/{name}-{i}.sql.gz {dump}"
                          f" && gunzip -c {dump} | mariadb --defaults-extra-file={opts} {baseline_db}")
                base_r.append(run_timed(["bash", "-o", "pipefail", "-c", script],
                                        env={**env, "DOWNLOAD": DOWNLOAD}).seconds)
                dump.unlink(missing_ok=True)
            report.add("restore-s3", f"restore from S3, scale {scale}", min(ours_r), "s", baseline=min(base_r),
                       baseline_name="download + gunzip | mariadb", target="<= 1.2")
    finally:
        s3.stop()
        db.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench.backup_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="0.2,1", help="comma list of dataset scales (default 0.2,1)")
    parser.add_argument("--repeat", type=int, default=2, help="best of N per figure (default 2)")
    parser.add_argument("--skip-restore", action="store_true", help="backup figures only (the RSS question)")
    parser.add_argument("--out", type=Path, default=REPO / "e2e" / "bench" / "results" / "backup-bench.json")
    args = parser.parse_args(argv)
    report = Report(meta={"command": "python -m e2e.bench.backup_bench " + " ".join(argv or sys.argv[1:])})
    workdir = Path(tempfile.mkdtemp(prefix="coai-backup-bench-"))
    try:
        run(report, [float(s) for s in args.scales.split(",")], args.repeat, workdir, restore=not args.skip_restore)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report.table())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
