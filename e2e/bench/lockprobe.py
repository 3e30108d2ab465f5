"""How long a migration keeps rows locked, measured from outside the code under test.

Two independent measurements run while a migration (ours or the baseline) works:

- `WriterProbe`: what a concurrent application write experiences. One thread per table, each on
  its own connection, loops `BEGIN; SELECT key FROM t WHERE key = <random existing id> FOR UPDATE;
  ROLLBACK` (an exclusive row lock, no data change) every few milliseconds with
  `innodb_lock_wait_timeout` and `lock_wait_timeout` (metadata locks) high, and records how long
  each probe took. A probe that lands on a row the migration holds waits until that transaction
  commits, so the longest probe is the longest stall a writer saw on that table. Random rows
  sample the table: a batch of 5,000 rows out of 100,000 is hit by ~5% of probes, so the figure
  for batched runs is a sample, while the trx poller below sees every transaction.
- `TrxPoller`: every `interval` seconds, information_schema.INNODB_TRX; a transaction's lock
  lifetime is last_seen - first_seen (+ one interval) of every transaction holding row locks
  (trx_rows_locked > 0), the probes' own transactions excluded. InnoDB refreshes that table only
  when it has not been read for 100 ms, so the interval is 0.15 s and a transaction shorter than
  that is usually not seen at all: a coarse, external cross-check of the exact per-transaction
  durations taken from the engine's own commit log lines (engine_bench.batch_transactions).

Samples carry monotonic timestamps; `attribute()` assigns them to steps by time window.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import pymysql

from coai_operator.engine.dbconfig import DbConfig, connect


@dataclass
class Sample:
    started: float
    seconds: float
    table: str


@dataclass
class TrxLife:
    trx_id: str
    first: float
    last: float
    rows_locked: int = 0
    rows_modified: int = 0
    query: str = ""

    @property
    def seconds(self) -> float:
        return self.last - self.first


class WriterProbe:
    def __init__(self, cfg: DbConfig, tables: Iterable[tuple[str, str]], pause: float = 0.005) -> None:
        self.cfg = cfg
        self.tables = list(tables)  # (table, key)
        self.pause = pause
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self.thread_ids: set[int] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._ready = threading.Barrier(len(self.tables) + 1)

    def _loop(self, table: str, key: str) -> None:
        conn = connect(self.cfg, autocommit=False)
        rng = random.Random(f"probe:{table}")  # sampling, not security
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION innodb_lock_wait_timeout = 3600, lock_wait_timeout = 3600")
                cur.execute("SELECT CONNECTION_ID()")
                with self._lock:
                    self.thread_ids.add(int(cur.fetchone()[0]))
            self._ready.wait()
            top = 0
            while not self._stop.is_set():
                if top == 0 or rng.random() < 0.01:  # the table may grow (user_roles) or be empty
                    with conn.cursor() as cur:
                        cur.execute(f"SELECT COALESCE(MAX(`{key}`), 0) FROM `{table}`")
                        top = int(cur.fetchone()[0])
                    conn.rollback()
                    if top == 0:
                        time.sleep(0.05)
                        continue
                target = rng.randint(1, top)
                started = time.monotonic()
                try:
                    with conn.cursor() as cur:
                        cur.execute(f"SELECT `{key}` FROM `{table}` WHERE `{key}` = %s FOR UPDATE", (target,))
                        cur.fetchall()
                    conn.rollback()
                except pymysql.err.MySQLError as exc:  # e.g. the table is being rebuilt
                    with contextlib.suppress(pymysql.err.MySQLError):
                        conn.rollback()
                    with self._lock:
                        if len(self.errors) < 20:
                            self.errors.append(f"{table}: {exc}")
                with self._lock:
                    self.samples.append(Sample(started, time.monotonic() - started, table))
                time.sleep(self.pause)
        finally:
            conn.close()

    def __enter__(self) -> WriterProbe:
        for table, key in self.tables:
            thread = threading.Thread(target=self._loop, args=(table, key), daemon=True, name=f"probe-{table}")
            thread.start()
            self._threads.append(thread)
        self._ready.wait(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=600)


class TrxPoller:
    def __init__(self, cfg: DbConfig, exclude_threads: set[int], interval: float = 0.15) -> None:
        self.cfg = cfg
        self.exclude = exclude_threads
        self.interval = interval
        self.lives: dict[str, TrxLife] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        conn = connect(self.cfg, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT CONNECTION_ID()")
                own = int(cur.fetchone()[0])
            while not self._stop.is_set():
                with conn.cursor() as cur:
                    cur.execute("SELECT trx_id, trx_mysql_thread_id, trx_rows_locked, trx_rows_modified,"
                                " LEFT(COALESCE(trx_query, ''), 120) FROM information_schema.INNODB_TRX")
                    rows = cur.fetchall()
                now = time.monotonic()
                self.polls += 1
                for trx_id, thread_id, locked, modified, query in rows:
                    if thread_id == own or thread_id in self.exclude or not (locked or modified):
                        continue
                    life = self.lives.get(str(trx_id))
                    if life is None:
                        life = self.lives[str(trx_id)] = TrxLife(str(trx_id), now, now)
                    life.last = now
                    life.rows_locked = max(life.rows_locked, int(locked or 0))
                    life.rows_modified = max(life.rows_modified, int(modified or 0))
                    if query and not life.query:
                        life.query = " ".join(str(query).split())
                time.sleep(self.interval)
        finally:
            conn.close()

    def __enter__(self) -> TrxPoller:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="trx-poller")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)


@dataclass
class StepLocks:
    step: str
    start: float
    end: float
    probe_max: float = 0.0
    probe_table: str = ""
    probes: int = 0
    trx_max: float = 0.0
    trx_count: int = 0
    trx_rows_locked_max: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"step": self.step, "seconds": round(self.end - self.start, 3),
                "writer_stall_max_s": round(self.probe_max, 4), "writer_stall_table": self.probe_table,
                "probes": self.probes, "longest_locking_trx_s": round(self.trx_max, 4),
                "locking_trx_count": self.trx_count, "max_rows_locked_by_one_trx": self.trx_rows_locked_max}


def attribute(windows: list[tuple[str, float, float]], probe: WriterProbe, poller: TrxPoller | None,
              poll_interval: float) -> dict[str, StepLocks]:
    """Per step: the longest probe stall that started inside its window, the longest locking trx
    first seen inside it (+ one poll interval, the resolution)."""
    out = {name: StepLocks(name, start, end) for name, start, end in windows}

    def find(moment: float) -> StepLocks | None:
        for name, start, end in windows:
            if start <= moment <= end:
                return out[name]
        return None

    for sample in probe.samples:
        step = find(sample.started)
        if step is None:
            continue
        step.probes += 1
        if sample.seconds > step.probe_max:
            step.probe_max, step.probe_table = sample.seconds, sample.table
    if poller is not None:
        for life in poller.lives.values():
            step = find(life.first)
            if step is None:
                continue
            step.trx_count += 1
            step.trx_max = max(step.trx_max, life.seconds + poll_interval)
            step.trx_rows_locked_max = max(step.trx_rows_locked_max, life.rows_locked)
    return out
