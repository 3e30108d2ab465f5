"""`analytics-backfill` alone: the engine's `daily` step against the same aggregate as one statement.

Both run on the same database (migrated, so its conversations are what the step reads), in turn,
best of `repeat` (at least 5), each from an empty `analytics_daily`: the same pages, warm for both, so the
figure compares the two ways of writing the aggregate and not the buffer pool's state after the
copies the migrate pass loads. The engine side is the step's own code (`datasteps.run_daily`),
in-process, timed like the engine times a step.
"""

from __future__ import annotations

import time

from coai_operator.bundles import load_bundle
from coai_operator.engine.datasteps import run_daily
from coai_operator.engine.dbconfig import DbConfig, connect
from coai_operator.engine.runner import DEFAULT_BATCH_SIZE
from coai_operator.engine.schema_state import PROGRESS_TABLE
from e2e.bench.common import Report

STEP = "analytics-backfill"
HOP = "1.8.0-to-1.9.0"

# The same aggregate as one statement over the whole table (what the step is without batching):
# the baseline of the `daily` step, here and in the migrate pass.
ONE_RANGE_SQL = {
    STEP: """
        INSERT INTO analytics_daily (day, model_name, conversation_count, token_count)
        SELECT DATE(c.created_at), c.model_name, COUNT(*), SUM(c.total_tokens)
        FROM conversations c
        GROUP BY DATE(c.created_at), c.model_name
        ON DUPLICATE KEY UPDATE
          conversation_count = analytics_daily.conversation_count + VALUES(conversation_count),
          token_count = analytics_daily.token_count + VALUES(token_count)""",
}


def run(report: Report, cfg: DbConfig, repeat: int, batch_size: int | None) -> dict[str, object]:
    hop = load_bundle().hops[HOP]
    step = next(s for s in hop.steps if s.id == STEP)
    conn = connect(cfg, autocommit=False)
    ours: list[float] = []
    base: list[float] = []
    rows: dict[str, object] = {}
    try:
        with conn.cursor() as cur:
            for _ in range(max(repeat, 5)):  # sub-second figures: more turns than backup/restore
                for who in ("ours", "baseline"):
                    cur.execute("DELETE FROM analytics_daily")
                    cur.execute(f"DELETE FROM {PROGRESS_TABLE} WHERE version = %s AND step = %s",
                                (str(hop.version), STEP))
                    conn.commit()
                    started = time.monotonic()
                    if who == "ours":
                        run_daily(conn, hop, step, None, batch_size or DEFAULT_BATCH_SIZE)
                    else:
                        cur.execute(ONE_RANGE_SQL[STEP])
                        conn.commit()
                    (ours if who == "ours" else base).append(time.monotonic() - started)
                    cur.execute("SELECT COUNT(*), SUM(conversation_count), SUM(token_count) FROM analytics_daily")
                    rows[who] = [int(v or 0) for v in cur.fetchone()]
                    conn.commit()
            cur.execute(f"DELETE FROM {PROGRESS_TABLE} WHERE version = %s AND step = %s", (str(hop.version), STEP))
            conn.commit()
    finally:
        conn.close()
    report.add("engine", f"{STEP} alone (warm, best of {len(ours)}, interleaved)", min(ours), "s",
               baseline=min(base), baseline_name="same aggregate, one statement", target="<= 1.2",
               note=f"rows/conversations/tokens {rows.get('ours')} vs {rows.get('baseline')}")
    return {"ours_s": [round(t, 4) for t in ours], "baseline_s": [round(t, 4) for t in base],
            "same_result": rows.get("ours") == rows.get("baseline"), "result": rows}
