"""`python -m e2e.bench all|engine|operator [--scale S] [--out FILE]`: run, print a table, write JSON.

Every figure is printed next to a baseline measured in the same run (ratio = ours / baseline).
Benchmarks report; they never fail on a missed target (exit code 0 unless the harness itself broke).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from e2e.bench.common import REPO, Report, log, machine, markdown_table

RESULTS = REPO / "e2e" / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["all", "engine", "operator"], nargs="?", default="all")
    parser.add_argument("--scale", type=float, default=0.02,
                        help="dataset scale: 1.0 = 1M users, 5M conversations, 100k files (engine) and a "
                             "100k-user database (CoaiMigration e2e); default 0.02")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench-results.json",
                        help="JSON results file (default e2e/bench/results/bench-results.json, git-ignored)")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    parser.add_argument("--repeat", type=int, default=3, help="engine backup/restore: best of N, interleaved")
    parser.add_argument("--sample-files", type=int, default=200,
                        help="files the seed's per-file storage loop runs on (reported per file)")
    parser.add_argument("--batch-size", type=int, help="engine migrate --batch-size (default: the engine's)")
    parser.add_argument("--instances", default="10,100",
                        help="operator: comma list of N CoaiInstances created at once (default 10,100)")
    parser.add_argument("--big", action="store_true", help="operator: also N=500")
    parser.add_argument("--idle-seconds", type=float, default=60,
                        help="operator: quiet window after all are Ready, for idle requests/min and resync writes")
    parser.add_argument("--resync-seconds", type=float, default=30,
                        help="operator: COAI_RESYNC_SECONDS (drift check period) during the benchmark")
    parser.add_argument("--migration-users", type=int,
                        help="CoaiMigration e2e: users in the 1.9 database (default 100000 * scale)")
    parser.add_argument("--profile-operator", nargs="?", const="wall", choices=["wall", "cpu", "mem"],
                        help="operator: one more coai-operator run at the largest N under a profiler, not a "
                             "measured run: wall (e2e/bench/sampler.py: where a reconcile's time goes) or cpu "
                             "(e2e/bench/cpuprofile.py: cProfile in every thread) or mem (e2e/bench/memprofile.py: "
                             "tracemalloc at the peak)")
    parser.add_argument("--profile-only", action="store_true", help="operator: only the profiled run")
    parser.add_argument("--replicas", type=int, default=0,
                        help="operator: spec.replicas of the N instances (0: no app pods on the real node)")
    parser.add_argument("--skip-migration", action="store_true", help="operator: skip the CoaiMigration e2e")
    parser.add_argument("--workdir", type=Path, help="keep state here instead of a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report(meta={"command": " ".join(["python -m e2e.bench", *(argv or sys.argv[1:])]),
                          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
                          "scale": args.scale})
    started = time.monotonic()
    if args.what in ("all", "engine"):
        from e2e.bench import engine_bench

        engine_bench.run(report, scale=args.scale, workdir=args.workdir and args.workdir / "engine",
                         repeat=args.repeat, sample_files=args.sample_files, batch_size=args.batch_size,
                         keep=args.keep)
    if args.what in ("all", "operator"):
        from e2e.bench import operator_bench

        sizes = [int(n) for n in args.instances.split(",") if n.strip()]
        if args.big and 500 not in sizes:
            sizes.append(500)
        operator_bench.run(report, sizes=sizes, idle_seconds=args.idle_seconds,
                           resync_seconds=args.resync_seconds, scale=args.scale,
                           migration_users=args.migration_users, migration=not args.skip_migration,
                           workdir=args.workdir and args.workdir / "operator", keep=args.keep,
                           profile=args.profile_operator, profile_only=args.profile_only, replicas=args.replicas)
    report.meta["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report.write(args.out)
    print(report.table())
    if report.errors:
        print("\nerrors (the affected figures are missing):", *report.errors, sep="\n  ")
    misses = [r for r in report.rows if r.met is False]
    print(f"\n{len(report.rows)} figures, {len(misses)} missed target(s); {report.meta['seconds']}s; JSON: {args.out}")
    if args.markdown:
        args.markdown.write_text(markdown_table(report.rows) + "\n")
    log(json.dumps({"out": str(args.out), "misses": [r.name for r in misses]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
