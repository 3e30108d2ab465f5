"""Put a benchmark's databases in the same state before two sides are timed on them.

Copies loaded just before a timing pass leave dirty pages that InnoDB flushes in the background,
and the copy loaded first has the coldest pages: whichever side runs first on the older copy pays
for both. `settle` reads every table of each database whole (its clustered index) and then waits
until InnoDB has flushed its dirty pages, so both sides start warm and with a quiet disk.
"""

from __future__ import annotations

import pymysql

from e2e.helpers import wait_for

DIRTY_PAGES_SETTLED = 200  # 3 MiB of 16 KiB pages: what a quiet server keeps dirty anyway


def dirty_pages(cur: pymysql.cursors.Cursor) -> int:
    cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
    return int(cur.fetchone()[1])


def settle(admin: pymysql.Connection, databases: list[str], timeout: float = 300) -> dict[str, int]:
    with admin.cursor() as cur:
        for database in databases:
            cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
                        " AND table_type = 'BASE TABLE'", (database,))
            for (table,) in cur.fetchall():
                cur.execute(f"SELECT COUNT(*) FROM `{database}`.`{table}` FORCE INDEX (PRIMARY)")
                cur.fetchall()
        before = dirty_pages(cur)
        cur.execute("SELECT @@GLOBAL.innodb_max_dirty_pages_pct")
        (pct,) = cur.fetchone()
        cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")  # the page cleaner flushes everything
        try:
            wait_for(lambda: dirty_pages(cur) <= DIRTY_PAGES_SETTLED, timeout=timeout, interval=0.5,
                     message="InnoDB flushed its dirty pages")
        finally:
            cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = %s", (pct,))
        return {"dirty_pages_before": before, "dirty_pages_after": dirty_pages(cur)}
