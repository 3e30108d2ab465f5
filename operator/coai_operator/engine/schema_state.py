"""What schema a database holds: `schema_migrations`, interrupted hops, inspection.

Reading never writes: `read_state` works with read-only credentials and leaves a database that
has no tracking table as it is. `ensure_tracking` creates the tables; only migrate/seed call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pymysql

from coai_operator.domain.errors import PlanError
from coai_operator.domain.versions import UnknownVersionError, Version

TRACKING_TABLE = "schema_migrations"
PROGRESS_TABLE = "schema_migrations_progress"
ENGINE_TABLES = frozenset({TRACKING_TABLE, PROGRESS_TABLE})

# The seed's table plus `checksum` (sha256 of the hop's steps as applied).
TRACKING_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} ("
    " version VARCHAR(255) NOT NULL PRIMARY KEY,"
    " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,"
    " description TEXT,"
    " checksum CHAR(64) NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    # A table created by the guide's own script has no checksum column yet.
    f"ALTER TABLE {TRACKING_TABLE} ADD COLUMN IF NOT EXISTS checksum CHAR(64) NULL",
    # One row per step of a hop that has started and not been recorded yet. `position` is the
    # number of statements done (sql steps) or the last key done (batched steps); `checksum`
    # covers the SQL that did that work.
    f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} ("
    " version VARCHAR(255) NOT NULL,"
    " step VARCHAR(64) NOT NULL,"
    " position BIGINT NULL,"
    " done TINYINT(1) NOT NULL DEFAULT 0,"
    " checksum CHAR(64) NOT NULL,"
    " PRIMARY KEY (version, step)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
)


@dataclass(frozen=True)
class Applied:
    version: str
    description: str | None
    checksum: str | None


@dataclass(frozen=True)
class StepProgress:
    version: str
    step: str
    position: int | None
    done: bool
    checksum: str


@dataclass(frozen=True)
class SchemaState:
    database: str
    tables: frozenset[str]  # user tables (engine tables excluded)
    objects: frozenset[str]  # "table" and "table.column" names, lower case
    tracked: bool  # schema_migrations exists
    applied: tuple[Applied, ...] = ()
    progress: tuple[StepProgress, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.tables

    @property
    def installing(self) -> bool:
        """A schema install (baseline onto an empty database) started and did not finish."""
        return not self.applied and bool(self.progress)

    def recorded_version(self) -> Version | None:
        """The highest version recorded (by version order: applied_at ties within a second)."""
        versions = []
        for row in self.applied:
            try:
                versions.append(Version.parse(row.version))
            except UnknownVersionError:
                raise UnknownVersionError(
                    f"schema_migrations holds {row.version!r}, which is not a version of this bundle;"
                    " this database was not migrated by coai-operator"
                ) from None
        return max(versions) if versions else None

    def interrupted(self) -> dict[str, list[str]]:
        """Hops with progress rows (started, not recorded) and their finished steps."""
        result: dict[str, list[str]] = {}
        for row in self.progress:
            result.setdefault(row.version, [])
            if row.done:
                result[row.version].append(row.step)
        return result


def read_state(conn: pymysql.Connection, database: str) -> SchemaState:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT LOWER(table_name), LOWER(column_name) FROM information_schema.columns WHERE table_schema = %s",
            (database,),
        )
        columns = cur.fetchall()
        cur.execute(
            "SELECT LOWER(table_name) FROM information_schema.tables WHERE table_schema = %s", (database,)
        )
        all_tables = {row[0] for row in cur.fetchall()}
        applied: list[Applied] = []
        progress: list[StepProgress] = []
        if TRACKING_TABLE in all_tables:
            has_checksum = (TRACKING_TABLE, "checksum") in set(columns)
            cur.execute(
                f"SELECT version, description, {'checksum' if has_checksum else 'NULL'} FROM {TRACKING_TABLE}"
            )
            applied = [Applied(str(v), d, c) for v, d, c in cur.fetchall()]
        if PROGRESS_TABLE in all_tables:
            cur.execute(f"SELECT version, step, position, done, checksum FROM {PROGRESS_TABLE}")
            progress = [StepProgress(v, s, p, bool(d), c) for v, s, p, d, c in cur.fetchall()]
    tables = frozenset(all_tables - ENGINE_TABLES)
    objects = frozenset(tables | {f"{t}.{c}" for t, c in columns if t in tables})
    return SchemaState(
        database=database,
        tables=tables,
        objects=objects,
        tracked=TRACKING_TABLE in all_tables,
        applied=tuple(applied),
        progress=tuple(progress),
    )


def detect_version(objects: Iterable[str], markers: Sequence[tuple[Version, tuple[str, ...]]]) -> Version | None:
    """The schema version of an untracked database from its tables and columns (pure).

    `markers` lists, oldest first, what each version adds. The answer is the newest version whose
    markers, and those of every older version, are all present. None when even the baseline's
    are missing; PlanError when a newer version's markers are partly there (a hand-made or
    half-applied schema that no version describes).
    """
    present = {name.lower() for name in objects}
    if not markers or not all(n.lower() in present for n in markers[0][1]):
        return None
    detected = markers[0][0]
    for index, (version, names) in enumerate(markers[1:], start=1):
        if all(n.lower() in present for n in names):
            detected = version
            continue
        partial = sorted(n for _, later in markers[index:] for n in later if n.lower() in present)
        if partial:
            raise PlanError(
                f"the schema looks like {detected} plus part of a later version ({', '.join(partial)});"
                " pass --assume-version X.Y.Z if you know its version"
            )
        break
    return detected


def ensure_tracking(conn: pymysql.Connection) -> None:
    with conn.cursor() as cur:
        for statement in TRACKING_DDL:
            cur.execute(statement)
    conn.commit()
