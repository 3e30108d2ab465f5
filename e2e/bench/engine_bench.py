"""Engine benchmarks on a real MariaDB (a private server started for the run).

Dataset: `engine seed-data` at 1.6 — full size 1M users, 5M conversations (5 per user), 100k
files; `--scale` multiplies all three. Each figure has a baseline measured in the same run:

- backup       `engine backup --include database` vs `mariadb-dump --single-transaction
               --routines --triggers | gzip` (the seed's backup-system.sh, compressed); plus the
               same with storage vs dump|gzip + `tar -czf`, and our zstd option.
- restore      `engine restore` (verify sha256 + full decode, drop, load, count rows) vs
               `mariadb DB < dump.sql`, both into a fresh database.
- migrate      `engine migrate --target 2.0.0` (1.6 → 2.0, batched data steps) vs the seed's
               single unbatched statements (schema steps identical), each data step side by side;
               then a second pass on fresh copies with lock probes (see lockprobe.py).
- storage      `engine migrate-storage` vs the seed's migrate-storage.sh loop (one `mariadb`
               process per file, run on a sample, credentials in an option file) and vs `cp -r`
               and `cp -r` + `sync`, on a tree of at least STORAGE_MIN_FILES files.
"""

from __future__ import annotations

import os
import pstats
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coai_operator.bundles import load_bundle
from coai_operator.domain.versions import Version
from coai_operator.engine.dbconfig import DbConfig, connect, option_file
from e2e.bench import backfill_bench, dbstate
from e2e.bench.backfill_bench import ONE_RANGE_SQL
from e2e.bench.common import PYTHON, Report, Timed, log, run_timed
from e2e.bench.lockprobe import TrxPoller, WriterProbe, attribute
from e2e.localcluster.mariadb import LocalMariaDB

FULL_USERS, CONVERSATIONS_PER_USER, FULL_FILES = 1_000_000, 5, 100_000
TARGET = "2.0.0"
POLL_INTERVAL = 0.15

# The statements the migration guide shows for each data step (seed: "Data Migration" and
# migrate-user-roles.sh), run as they are written: one statement, one transaction, whole table.
SEED_SQL = {
    "user-roles": """
        INSERT INTO user_roles (user_id, role_id)
        SELECT u.id, r.id
        FROM users u, roles r
        WHERE r.name = CASE WHEN u.is_admin = 1 THEN 'admin' ELSE 'user' END
        AND NOT EXISTS (SELECT 1 FROM user_roles ur WHERE ur.user_id = u.id)""",
    "preferences": """
        UPDATE users SET
          preferences = JSON_OBJECT(
            'theme', COALESCE(JSON_EXTRACT(preferences, '$.theme'), 'auto'),
            'language', COALESCE(JSON_EXTRACT(preferences, '$.language'), 'en'),
            'default_model', COALESCE(JSON_EXTRACT(preferences, '$.default_model'), 'gpt-3.5-turbo'),
            'temperature', COALESCE(JSON_EXTRACT(preferences, '$.temperature'), 0.7),
            'max_tokens', COALESCE(JSON_EXTRACT(preferences, '$.max_tokens'), 2048)
          )
        WHERE preferences IS NOT NULL""",
    "conversation-metadata": """
        UPDATE conversations SET
          metadata = JSON_OBJECT(
            'model', model_name,
            'token_count', total_tokens,
            'created_at', created_at,
            'updated_at', updated_at
          )
        WHERE metadata IS NULL""",
}

# The seed's migrate-storage.sh, verbatim except: paths, a sample limit, and the `mysql -h -u -p`
# line, which takes the credentials from an option file instead of argv.
SEED_STORAGE_LOOP = r"""
OLD_STORAGE="$1"
NEW_STORAGE="$2"
mkdir -p $NEW_STORAGE/{uploads,processed,cache,temp}
find $OLD_STORAGE -type f | head -n "$SAMPLE" | while read file; do
  basename=$(basename "$file")
  extension="${basename##*.}"
  new_name=$(echo "$basename" | sha256sum | cut -d' ' -f1)
  new_path="$NEW_STORAGE/uploads/${new_name}.${extension}"
  cp "$file" "$new_path"
  mariadb --defaults-extra-file="$CLIENT_CNF" "$DB" \
    -e "UPDATE files SET file_path='uploads/${new_name}.${extension}' WHERE original_name='$basename';"
done
"""

DATA_KINDS = ("batched", "daily")

DUMP_FLAGS = "--single-transaction --routines --triggers"
STEP_DONE = re.compile(r"hop (.+?) step (\S+): done in ([\d.]+)s")
SCANNED = re.compile(r"hop (.+?) step (\S+): (\d+) rows aggregated in ([\d.]+)s")  # a daily step's read


@dataclass
class Sizes:
    users: int
    files: int

    @property
    def conversations(self) -> int:
        return self.users * CONVERSATIONS_PER_USER

    @classmethod
    def at(cls, scale: float) -> Sizes:
        return cls(max(10, round(FULL_USERS * scale)), max(10, round(FULL_FILES * scale)))


# Below this many files the storage step's fixed costs (interpreter start, imports, connection:
# ~0.25 s) outweigh a `cp -r` + `sync` of the whole tree, so a ratio would not measure its rate.
STORAGE_MIN_FILES = 20_000
CRASH_POINT = re.compile(r"crash point (\d+\.\d+\.\d+)/([^/\s]+)/(\d+)/committed")
HOP_LINE = re.compile(r"hop (\S+) -> (\S+): ")


def batch_transactions(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Longest transaction per batched step, from `engine -v` output: a batch's transaction runs
    at most from the previous commit (or the step's start) to its own `.../<n>/committed` line."""
    longest: dict[str, float] = {}
    hops: dict[str, str] = {}  # target version -> "a -> b"
    last = lines[0][0] if lines else 0.0
    for moment, line in lines:
        hop = HOP_LINE.search(line)
        if hop:
            hops[hop.group(2)] = f"{hop.group(1)} -> {hop.group(2)}"
        m = CRASH_POINT.search(line)
        if m:
            name = f"{hops.get(m.group(1), m.group(1))}:{m.group(2)}"
            longest[name] = max(longest.get(name, 0.0), moment - last)
        # a daily step's aggregate scan is a plain SELECT (a consistent read): it holds no rows
        if m or STEP_DONE.search(line) or "committed" in line or line.endswith("/scanned"):
            last = moment
    return longest


class Bench:
    def __init__(self, report: Report, workdir: Path, scale: float, repeat: int, sample_files: int,
                 batch_size: int | None) -> None:
        self.report = report
        self.work = workdir
        self.scale = scale
        self.repeat = repeat
        self.sample = sample_files
        self.batch_size = batch_size
        self.sizes = Sizes.at(scale)
        self.db: LocalMariaDB | None = None
        self.storage = workdir / "storage"
        self.details: dict[str, Any] = report.details.setdefault("engine", {})

    # --- plumbing -------------------------------------------------------------------------
    def cfg(self, database: str) -> DbConfig:
        assert self.db is not None
        return DbConfig(host="127.0.0.1", port=self.db.port, user=self.db.user, password=self.db.password,
                        database=database)

    def env(self, database: str) -> dict[str, str]:
        assert self.db is not None
        return {**os.environ, **self.db.env(database), "PYTHONUNBUFFERED": "1"}

    def engine(self, database: str, *args: str) -> Timed:
        done = run_timed([PYTHON, "-m", "coai_operator.cli", "engine", *args], env=self.env(database))
        result = done.json()
        if not result.get("ok"):
            raise RuntimeError(f"engine {args[0]} failed: {result} {done.stderr[-1500:]}")
        return done

    def shell(self, script: str, database: str, *args: str, cnf: Path | None = None,
              extra_env: dict[str, str] | None = None, check: bool = True) -> Timed:
        env = {**self.env(database), "DB": database, **(extra_env or {})}
        if cnf is not None:
            env["CLIENT_CNF"] = str(cnf)
        return run_timed(["bash", "-o", "pipefail", "-c", script, "bench", *args], env=env, check=check)

    def drop(self, database: str) -> None:
        assert self.db is not None
        with self.db.admin() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")

    def start(self) -> None:
        log(f"engine: starting a private MariaDB in {self.work}")
        self.db = LocalMariaDB(self.work / "mariadb", host="127.0.0.1").start()  # no pods here: no node bridge needed
        with self.db.admin() as conn, conn.cursor() as cur:
            # A production-like buffer pool, so the quick scale is not measuring the 128 MiB default.
            cur.execute("SET GLOBAL innodb_buffer_pool_size = 2147483648")
            cur.execute("SELECT VERSION()")
            self.details["server"] = cur.fetchone()[0]

    def settle(self, *databases: str) -> dict[str, int]:
        """Both sides' copies warm and InnoDB's dirty pages flushed (see dbstate.py)."""
        assert self.db is not None
        log(f"engine: settling {', '.join(databases)} (read whole, dirty pages flushed)")
        with self.db.admin() as conn:
            return dbstate.settle(conn, list(databases))

    def stop(self) -> None:
        if self.db:
            self.db.stop()

    # --- dataset --------------------------------------------------------------------------
    def seed(self) -> None:
        assert self.db is not None
        s = self.sizes
        self.db.create_database("bench")
        log(f"engine: seeding 1.6 dataset: {s.users} users, {s.conversations} conversations, {s.files} files")
        done = self.engine("bench", "seed-data", "--version", "1.6.0", "--users", str(s.users),
                           "--conversations-per-user", str(CONVERSATIONS_PER_USER), "--files", str(s.files),
                           "--storage", str(self.storage), "--seed", "bench")
        result = done.json()
        self.details["dataset"] = {k: result.get(k) for k in ("users", "conversations", "files", "channels",
                                                              "admins", "version")}
        self.details["dataset"]["seed_seconds"] = round(done.seconds, 2)
        self.details["dataset"]["storage_bytes"] = sum(p.stat().st_size for p in self.storage.rglob("*")
                                                       if p.is_file())
        self.report.add("engine", "seed-data (1.6 dataset)", done.seconds, "s",
                        note=f"{s.users} users, {s.conversations} conversations, {s.files} files")

    # --- backup / restore -----------------------------------------------------------------
    def backup(self) -> None:
        log("engine: backup vs mariadb-dump | gzip")
        out = self.work / "backups"
        out.mkdir(exist_ok=True)
        sizes: dict[str, int] = {}

        def ours(kind: str, *extra: str) -> float:
            target = out / kind
            shutil.rmtree(target, ignore_errors=True)
            done = self.engine("bench", "backup", "--dir", str(target), *extra)
            result = done.json()
            sizes[kind] = sum(a["bytes"] for a in result.get("artifacts", []))
            return done.seconds

        with option_file(self.cfg("bench")) as cnf:
            def baseline(storage: bool) -> float:
                script = f'mariadb-dump --defaults-extra-file="$CLIENT_CNF" {DUMP_FLAGS} "$DB" | gzip > "$1"'
                if storage:
                    script += ' && tar -czf "$2" -C "$3" .'
                done = self.shell(script, "bench", str(out / "base.sql.gz"), str(out / "base-storage.tar.gz"),
                                  str(self.storage), cnf=cnf)
                sizes["base"] = (out / "base.sql.gz").stat().st_size
                if storage:
                    sizes["base+storage"] = sizes["base"] + (out / "base-storage.tar.gz").stat().st_size
                return done.seconds

            # Interleaved, best of N: each side gets the same share of a noisy machine.
            runs: dict[str, list[float]] = {"ours": [], "base": [], "zstd": [], "ours+s": [], "base+s": []}
            for _ in range(max(1, self.repeat)):
                runs["base"].append(baseline(False))
                runs["ours"].append(ours("db", "--include", "database"))
                runs["zstd"].append(ours("db-zstd", "--include", "database", "--compression", "zstd"))
                runs["base+s"].append(baseline(True))
                runs["ours+s"].append(ours("all", "--storage", str(self.storage)))
            # A plain dump for the restore baseline (`mariadb < dump`).
            self.shell(f'mariadb-dump --defaults-extra-file="$CLIENT_CNF" {DUMP_FLAGS} "$DB" > "$1"', "bench",
                       str(out / "base.sql"), cnf=cnf)
        best = {k: min(v) for k, v in runs.items()}
        self.details["backup"] = {"runs_s": runs, "bytes": sizes,
                                  "plain_dump_bytes": (out / "base.sql").stat().st_size}
        self.report.add("engine", "backup database (gzip -1, verified)", best["ours"], "s", baseline=best["base"],
                        baseline_name="mariadb-dump|gzip", target="<= 1.1",
                        note=f"{sizes['db']} vs {sizes['base']} bytes")
        self.report.add("engine", "backup database (zstd -3, verified)", best["zstd"], "s", baseline=best["base"],
                        baseline_name="mariadb-dump|gzip", target="<= 1.1",
                        note=f"{sizes['db-zstd']} vs {sizes['base']} bytes")
        self.report.add("engine", "backup database + storage", best["ours+s"], "s", baseline=best["base+s"],
                        baseline_name="dump|gzip + tar -czf", note=f"{sizes['all']} vs {sizes['base+storage']} bytes")

    def restore(self) -> None:
        log("engine: restore vs mariadb < dump")
        runs: dict[str, list[float]] = {"ours": [], "ours-zstd": [], "base": [], "base-gz": []}
        backups = self.work / "backups"
        assert self.db is not None
        with option_file(self.cfg("bench")) as cnf:
            for i in range(max(2, self.repeat)):
                # r_base_<i> and r_eng_<i> stay: they are the 1.6 copies the migrate and storage parts use.
                self.db.create_database(f"r_base_{i}")
                runs["base"].append(self.shell('mariadb --defaults-extra-file="$CLIENT_CNF" "$DB" < "$1"',
                                               f"r_base_{i}", str(backups / "base.sql"), cnf=cnf).seconds)
                # ours creates the database itself (as after a DROP DATABASE)
                runs["ours"].append(self.engine(f"r_eng_{i}", "restore", "--dir", str(backups / "db"),
                                                "--include", "database").seconds)
                self.db.create_database("r_scratch")
                runs["base-gz"].append(self.shell('gzip -dc "$1" | mariadb --defaults-extra-file="$CLIENT_CNF" "$DB"',
                                                  "r_scratch", str(backups / "base.sql.gz"), cnf=cnf).seconds)
                self.drop("r_scratch")
                runs["ours-zstd"].append(self.engine("r_scratch", "restore", "--dir", str(backups / "db-zstd"),
                                                     "--include", "database").seconds)
                self.drop("r_scratch")
        best = {k: min(v) for k, v in runs.items()}
        self.details["restore"] = {"runs_s": runs}
        self.report.add("engine", "restore database (verify + load + count)", best["ours"], "s",
                        baseline=best["base"], baseline_name="mariadb < dump.sql", target="<= 1.1",
                        note="target: the backup's; the issue sets none for restore")
        self.report.add("engine", "restore database from the zstd backup", best["ours-zstd"], "s",
                        baseline=best["base"], baseline_name="mariadb < dump.sql", target="<= 1.1")
        self.report.add("engine", "restore database (gzip backup)", best["ours"], "s", baseline=best["base-gz"],
                        baseline_name="gzip -dc dump.gz | mariadb",
                        note="same input format: isolates the cost of decompression")

    # --- where the time goes ----------------------------------------------------------------
    def profile(self) -> None:
        """cProfile of a database backup, its restore and a storage backup (self time per function), plus each run's log
        timeline: the engine logs when the dump ends, so dump vs verify vs startup can be told apart."""
        log("engine: profiling backup and restore (cProfile)")
        out: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(dir=self.work) as tmp:
            for name, database, args in (
                ("backup", "bench", ["backup", "--dir", f"{tmp}/b", "--include", "database"]),
                ("restore", "r_profile", ["restore", "--dir", f"{tmp}/b", "--include", "database"]),
                ("backup-storage", "bench", ["backup", "--dir", f"{tmp}/s", "--include", "storage", "--storage",
                                             str(self.storage)]),
            ):
                stats_file = Path(tmp) / f"{name}.prof"
                done = run_timed([PYTHON, "-m", "cProfile", "-o", str(stats_file), "-m", "coai_operator.cli",
                                  "engine", *args], env=self.env(database))
                start = done.lines[0][0] - 0.0 if done.lines else 0.0
                out[name] = {
                    "seconds": round(done.seconds, 3),
                    "timeline": [f"+{t - start:.3f}s {line.split(': ', 1)[-1][:150]}" for t, line in done.lines
                                 if " INFO " in line or " WARNING " in line],
                    "top_self_time": top_functions(stats_file),
                }
        self.drop("r_profile")
        self.details.setdefault("profile", {}).update(out)
        for name, data in out.items():
            log(f"engine {name} profile (self time): " + "; ".join(data["top_self_time"][:6]))

    # --- migrate --------------------------------------------------------------------------
    def _engine_migrate(self, database: str, *, verbose: bool = False
                        ) -> tuple[float, list[tuple[str, float, float]], dict[str, Any], dict[str, float]]:
        args = [*(["-v"] if verbose else []), "migrate", "--target", TARGET]
        if self.batch_size:
            args += ["--batch-size", str(self.batch_size)]
        done = self.engine(database, *args)
        windows = []
        for moment, line in done.lines:
            m = STEP_DONE.search(line)
            if m:
                hop, step, seconds = m.group(1), m.group(2), float(m.group(3))
                windows.append((f"{hop}:{step}", moment - seconds, moment))
            if scan := SCANNED.search(line):  # how much of a daily step is its one scan
                self.details.setdefault("daily_scan_s", []).append(
                    {"database": database, "step": f"{scan.group(1)}:{scan.group(2)}", "rows": int(scan.group(3)),
                     "seconds": float(scan.group(4))})
        return done.seconds, windows, done.json(), batch_transactions(done.lines) if verbose else {}

    def _baseline_migrate(self, database: str) -> tuple[float, list[tuple[str, float, float]]]:
        """The bundle's schema steps as they are, each data step as the seed's one statement."""
        bundle = load_bundle()
        conn = connect(self.cfg(database), autocommit=False)
        windows = []
        started = time.monotonic()
        try:
            with conn.cursor() as cur:
                for hop in bundle.hops_to(Version.parse(TARGET)):
                    for step in hop.steps:
                        if step.kind == "check":
                            continue
                        t0 = time.monotonic()
                        if step.kind == "sql":
                            for statement in step.statements():
                                cur.execute(statement)
                                conn.commit()
                        else:
                            sql = SEED_SQL.get(step.id) or ONE_RANGE_SQL.get(step.id)
                            if sql is None:  # the guide shows no statement: ours, over the whole table at once
                                cur.execute(f"SELECT COALESCE(MIN(`{step.key}`), 1) - 1, COALESCE(MAX(`{step.key}`),"
                                            f" 0) FROM `{step.table}`")
                                lo, hi = cur.fetchone()
                                cur.execute(step.sql, {"lo": lo, "hi": hi})
                            else:
                                cur.execute(sql)
                            conn.commit()
                        windows.append((f"{hop.hop}:{step.id}", t0, time.monotonic()))
        finally:
            conn.close()
        return time.monotonic() - started, windows

    def migrate(self) -> None:
        bundle = load_bundle()
        batched = {f"{hop.hop}:{s.id}" for hop in bundle.hops_to(Version.parse(TARGET)) for s in hop.steps
                   if s.kind in DATA_KINDS}
        settled = {"timing": self.settle("bench", "r_eng_0")}
        log("engine: migrate 1.6 -> 2.0 (timing pass, no probes)")
        ours_total, ours_windows, result, _ = self._engine_migrate("bench")
        base_total, base_windows = self._baseline_migrate("r_eng_0")
        ours_steps = {name: end - start for name, start, end in ours_windows}
        base_steps = {name: end - start for name, start, end in base_windows}
        self.report.add("engine", "migrate 1.6→2.0 total (process wall time)", ours_total, "s",
                        baseline=base_total, baseline_name="seed statements, unbatched",
                        note=f"batch size {self.batch_size or 5000}")
        for name in [w[0] for w in ours_windows if w[0] in batched]:
            step = name.split(":", 1)[1]
            label = ("seed's statement" if step in SEED_SQL else "same aggregate, one statement"
                     if step in ONE_RANGE_SQL else "same SQL, one range")
            self.report.add("engine", f"migrate step {step}", ours_steps.get(name), "s",
                            baseline=base_steps.get(name), baseline_name=label)
        self.details["migrate"] = {"ours_steps_s": {k: round(v, 4) for k, v in ours_steps.items()},
                                   "baseline_steps_s": {k: round(v, 4) for k, v in base_steps.items()},
                                   "ours_total_s": round(ours_total, 3), "baseline_total_s": round(base_total, 3),
                                   "applied": result.get("applied")}

        log("engine: analytics-backfill alone, ours and the one statement in turn")
        self.details["migrate"]["analytics_backfill_alone"] = backfill_bench.run(
            self.report, self.cfg("bench"), self.repeat, self.batch_size)

        settled["locks"] = self.settle("r_eng_1", "r_base_0")
        self.details["migrate"]["settled"] = settled
        log("engine: migrate again on fresh copies with lock probes")
        probes = [("users", "id"), ("conversations", "id")]
        locks: dict[str, Any] = {}
        longest_trx: dict[str, dict[str, float]] = {}
        for who, database in (("ours", "r_eng_1"), ("baseline", "r_base_0")):
            with WriterProbe(self.cfg(database), probes) as probe, \
                    TrxPoller(self.cfg(database), probe.thread_ids, POLL_INTERVAL) as poller:
                if who == "ours":
                    _, windows, _, longest_trx[who] = self._engine_migrate(database, verbose=True)
                else:
                    _, windows = self._baseline_migrate(database)
                    # one statement, one transaction: its lock lifetime is the statement + commit
                    longest_trx[who] = {name: end - start for name, start, end in windows}
            per_step = attribute(windows, probe, poller, POLL_INTERVAL)
            locks[who] = {"steps": [s.to_dict() for s in per_step.values()], "probe_errors": probe.errors,
                          "probes": len(probe.samples), "polls": poller.polls,
                          "longest_trx_s": {k: round(v, 4) for k, v in longest_trx[who].items()}}
        self.details["migrate"]["locks"] = locks
        by_step = {who: {s["step"]: s for s in data["steps"]} for who, data in locks.items()}
        for name in [w[0] for w in ours_windows if w[0] in batched]:
            ours, base = by_step["ours"].get(name), by_step["baseline"].get(name)
            if not ours or not base:
                continue
            step = name.split(":", 1)[1]
            self.report.add("locks", f"{step}: longest transaction holding rows", longest_trx["ours"].get(name),
                            "s", baseline=longest_trx["baseline"].get(name), baseline_name="the one statement",
                            note="ours: slowest batch, from the engine's commit log lines")
            self.report.add("locks", f"{step}: longest writer stall (probe)", ours["writer_stall_max_s"], "s",
                            baseline=base["writer_stall_max_s"], baseline_name="unbatched",
                            note=f"{ours['probes']} vs {base['probes']} probes")
        worst = {who: max(data["steps"], key=lambda s: s["writer_stall_max_s"]) for who, data in locks.items()}
        self.report.add("locks", "longest writer stall, any step (incl. DDL)", worst["ours"]["writer_stall_max_s"],
                        "s", baseline=worst["baseline"]["writer_stall_max_s"], baseline_name="unbatched",
                        note=f"ours in {worst['ours']['step']}, baseline in {worst['baseline']['step']}")

    # --- storage --------------------------------------------------------------------------
    def storage_tree(self) -> tuple[str, Path]:
        """The database and tree the storage part measures: the dataset's, or one of
        STORAGE_MIN_FILES files when the dataset has fewer."""
        if self.sizes.files >= STORAGE_MIN_FILES:
            return "bench", self.storage
        assert self.db is not None
        tree = self.work / "storage-tree"
        self.db.create_database("storage_tree")
        log(f"engine: seeding a {STORAGE_MIN_FILES}-file tree for the storage part")
        self.engine("storage_tree", "seed-data", "--version", "1.6.0", "--users", str(STORAGE_MIN_FILES // 10),
                    "--conversations-per-user", "1", "--files", str(STORAGE_MIN_FILES), "--storage", str(tree),
                    "--seed", "bench")
        return "storage_tree", tree

    def storage_migration(self) -> None:
        database, tree = self.storage_tree()
        files = sum(1 for p in tree.rglob("*") if p.is_file())
        log(f"engine: storage migration ({files} files) vs cp -r and the seed's per-file loop")
        copy_to = self.work / "cp-copy"
        shutil.rmtree(copy_to, ignore_errors=True)
        cp = run_timed(["cp", "-r", str(tree), str(copy_to)])
        shutil.rmtree(copy_to, ignore_errors=True)
        # The same copy made durable: what a crash-safe migration cannot beat.
        cp_sync = run_timed(["sh", "-c", 'cp -r "$0" "$1" && sync', str(tree), str(copy_to)])
        shutil.rmtree(copy_to, ignore_errors=True)

        loop_db = "r_base_1"
        new_storage = self.work / "loop-new-storage"
        shutil.rmtree(new_storage, ignore_errors=True)
        sample = min(self.sample, files)
        with option_file(self.cfg(loop_db)) as cnf:
            loop = self.shell(SEED_STORAGE_LOOP, loop_db, str(self.storage), str(new_storage), cnf=cnf,
                              extra_env={"SAMPLE": str(sample)}, check=False)
        loop_errors = sum(1 for line in loop.stderr.splitlines() if "ERROR" in line)
        shutil.rmtree(new_storage, ignore_errors=True)
        per_file_loop = loop.seconds / max(sample, 1)

        done = self.engine(database, "migrate-storage", "--storage", str(tree))
        # Nothing left to do: the fixed costs (start, imports, connection) and the scan of rows and tree.
        rerun = self.engine(database, "migrate-storage", "--storage", str(tree))
        result = done.json()
        migrated = int(result.get("migrated", 0)) or files
        per_file_ours = done.seconds / max(migrated, 1)
        self.details["storage"] = {"files": files, "cp_r_s": round(cp.seconds, 3),
                                   "cp_r_sync_s": round(cp_sync.seconds, 3),
                                   "seed_loop": {"sample": sample, "seconds": round(loop.seconds, 3),
                                                 "per_file_ms": round(per_file_loop * 1000, 3),
                                                 "failed_updates": loop_errors,
                                                 "extrapolated_s": round(per_file_loop * files, 2)},
                                   "ours": {k: result.get(k) for k in ("migrated", "copied", "deduplicated",
                                                                       "missing", "invalid")} |
                                   {"seconds": round(done.seconds, 3), "rerun_seconds": round(rerun.seconds, 3)}}
        self.report.add("engine", "migrate-storage per file", per_file_ours * 1000, "ms",
                        baseline=per_file_loop * 1000, baseline_name=f"seed loop, {sample}-file sample",
                        note=f"seed loop: {loop_errors} of {sample} UPDATEs failed (quotes in names)")
        self.report.add("engine", f"migrate-storage total ({files} files)", done.seconds, "s",
                        baseline=cp.seconds, baseline_name="cp -r (disk limit)")
        self.report.add("engine", f"migrate-storage total ({files} files), durable", done.seconds, "s",
                        baseline=cp_sync.seconds, baseline_name="cp -r + sync", target="<= 2.0")
        self.report.add("engine", "migrate-storage re-run, nothing left to do", rerun.seconds, "s",
                        note="fixed costs and the scan")
        self.report.add("engine", f"seed loop extrapolated to {files} files", per_file_loop * files, "s")

        # Where the time goes: undo, then the same migration again under cProfile (not a measured run).
        self.engine(database, "migrate-storage", "--storage", str(tree), "--undo")
        with tempfile.TemporaryDirectory(dir=self.work) as tmp:
            stats_file = Path(tmp) / "storage.prof"
            profiled = run_timed([PYTHON, "-m", "cProfile", "-o", str(stats_file), "-m", "coai_operator.cli",
                                  "engine", "migrate-storage", "--storage", str(tree)], env=self.env(database))
            self.details.setdefault("profile", {})["migrate-storage"] = {
                "seconds": round(profiled.seconds, 3), "top_self_time": top_functions(stats_file)}
        log("engine migrate-storage profile (self time): "
            + "; ".join(self.details["profile"]["migrate-storage"]["top_self_time"][:6]))


def top_functions(stats_file: Path, limit: int = 12) -> list[str]:
    stats = pstats.Stats(str(stats_file))
    total = sum(v[2] for v in stats.stats.values()) or 1.0  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:limit]  # type: ignore[attr-defined]
    out = []
    for (path, line, func), (_cc, calls, tottime, cumtime, _callers) in rows:
        where = f"{Path(path).name}:{line}" if line else path
        out.append(f"{func} ({where}) {tottime:.3f}s self, {cumtime:.3f}s cum, {calls} calls, "
                   f"{100 * tottime / total:.0f}%")
    return out


def run(report: Report, *, scale: float, workdir: Path | None = None, repeat: int = 3, sample_files: int = 200,
        batch_size: int | None = None, keep: bool = False) -> None:
    work = workdir or Path(tempfile.mkdtemp(prefix="coai-bench-engine-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(report, work, scale, repeat, sample_files, batch_size)
    report.meta.setdefault("engine", {}).update(scale=scale, sizes=bench.sizes.__dict__, repeat=repeat,
                                                 workdir=str(work))
    try:
        bench.start()
        bench.seed()
        for part in (bench.backup, bench.restore, bench.profile, bench.migrate, bench.storage_migration):
            try:
                part()
            except Exception as exc:
                report.failed(f"engine {part.__name__}", exc)
    finally:
        bench.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)

