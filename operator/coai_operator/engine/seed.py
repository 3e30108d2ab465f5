"""`engine seed-data`: a realistic, deterministic dataset of a given version in an empty database.

Data is written in the 1.6 shape right after the baseline schema and then taken to `--version`
by the bundle's own hops, so a 2.0 dataset is exactly what an upgraded 1.6 install holds.
"""

from __future__ import annotations

import argparse
import logging
import time
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pymysql

from coai_operator.bundles import load_bundle
from coai_operator.domain.errors import EngineError
from coai_operator.domain.versions import Version
from coai_operator.engine import seedgen
from coai_operator.engine.dbconfig import DbConfig, connect
from coai_operator.engine.migrate import positive_int
from coai_operator.engine.runner import DEFAULT_BATCH_SIZE, apply_hop, install_baseline, named_lock
from coai_operator.engine.schema_state import ensure_tracking, read_state

log = logging.getLogger(__name__)


class SeedError(EngineError):
    reason = "SeedFailed"


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", default="1.6.0", help="schema version of the dataset (default 1.6.0)")
    parser.add_argument("--users", type=non_negative_int, default=100)
    parser.add_argument("--conversations-per-user", type=non_negative_int, default=5)
    parser.add_argument("--files", type=non_negative_int, default=0, help="files spread over random users")
    parser.add_argument("--storage", metavar="DIR",
                        help="storage root the files are written under (needed with --files)")
    parser.add_argument("--seed", default="coai", help="random seed: same seed, same dataset")
    parser.add_argument("--admin-ratio", type=ratio, default=0.05, help="share of admins (user 1 always is one if > 0)")
    parser.add_argument("--insert-batch", type=positive_int, default=5000, help="rows per INSERT transaction")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                        help="rows per transaction in the hops' data steps")


def _insert(conn: pymysql.Connection, sql: str, rows: Iterable[tuple], chunk: int, label: str) -> int:
    total, buffer, last_log = 0, [], time.monotonic()
    with conn.cursor() as cur:
        for row in rows:
            buffer.append(row)
            if len(buffer) >= chunk:
                cur.executemany(sql, buffer)
                conn.commit()
                total += len(buffer)
                buffer.clear()
                if time.monotonic() - last_log > 10:
                    log.info("seed: %d %s", total, label)
                    last_log = time.monotonic()
        if buffer:
            cur.executemany(sql, buffer)
            conn.commit()
            total += len(buffer)
    log.info("seed: %d %s inserted", total, label)
    return total


def _written(storage: Path, items: Iterable[seedgen.SeedFile]) -> Iterator[tuple]:
    """Write each file under `storage` and yield its `files` row."""
    for item in items:
        target = storage / item.path
        if target.exists():
            raise SeedError(f"{target} already exists: seed into an empty --storage directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.content)
        yield item.row()


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    bundle = load_bundle()
    version = Version.parse(args.version)
    hops = bundle.hops_to(version)  # refuses versions the bundle does not know
    if args.files and not args.users:
        raise SeedError("--files needs at least one user to own them")
    storage = Path(args.storage) if args.storage else None
    if args.files and storage is None:
        raise SeedError("--files needs --storage DIR to write the files under")

    cfg = DbConfig.from_env()
    log.info("seeding %s with a %s dataset (seed %r)", cfg.describe(), version, args.seed)
    conn = connect(cfg, autocommit=False)
    try:
        with named_lock(conn, cfg.database, 10):
            state = read_state(conn, cfg.database)
            if state.tables or state.tracked:
                raise SeedError(f"database {cfg.database} is not empty: seed-data only fills an empty database")
            ensure_tracking(conn)
            install_baseline(conn, bundle.baseline)
            counts = _fill(conn, args, storage)
            for hb in hops:
                apply_hop(conn, hb, batch_size=args.batch_size)
    finally:
        conn.close()
    return {
        "database": cfg.describe(),
        "version": str(hops[-1].version if hops else bundle.baseline.version),
        "seed": args.seed,
        **counts,
        "storage": str(storage) if storage else None,
        "seconds": round(time.monotonic() - started, 3),
    }


def _fill(conn: pymysql.Connection, args: argparse.Namespace, storage: Path | None) -> dict[str, int]:
    with conn.cursor() as cur:
        # Rows are generated consistent; skipping per-row checks makes bulk loading several times faster.
        cur.execute("SET SESSION foreign_key_checks = 0, unique_checks = 0")
    chunk = args.insert_batch
    times = seedgen.UserTimes(array("I"))
    channels = _insert(conn, seedgen.CHANNEL_SQL, seedgen.channels(args.seed), chunk, "channels")
    users = _insert(conn, seedgen.USER_SQL, seedgen.users(args.seed, args.users, args.admin_ratio, times),
                    chunk, "users")
    conversations = _insert(conn, seedgen.CONVERSATION_SQL,
                            seedgen.conversations(args.seed, times, args.conversations_per_user), chunk,
                            "conversations")
    files = 0
    if args.files and storage is not None:
        items = seedgen.files(args.seed, times, args.files)
        files = _insert(conn, seedgen.FILE_SQL, _written(storage, items), chunk, "files")
    with conn.cursor() as cur:
        cur.execute("SET SESSION foreign_key_checks = 1, unique_checks = 1")
        cur.execute("SELECT COUNT(*) FROM users WHERE is_admin = 1")
        (admins,) = cur.fetchone()
    conn.commit()
    return {"users": users, "conversations": conversations, "files": files, "channels": channels,
            "admins": int(admins)}
