"""The history table's schema (migrations, component ``history``) and its daily partitions.

``history_events`` holds one row per event, keyed by ``(org, id, stored_at)``: the broker id
is unique on its own, the org leads so that an org's scans walk the key, and the stored time
(the id's time) is the partition key, which PostgreSQL requires in every unique key. Where
the ``timescaledb`` extension is installed the table becomes a hypertable (chunks of a day)
instead; that path is untested here (the extension cannot be installed on this machine).

Native partitions are one per UTC day, ``history_events_YYYYMMDD``. They are created ahead
(today and the next days, by every logger at start and then hourly) and on demand before a
write that reaches a day not yet seen; :func:`ensure_days` takes a transaction-scoped
advisory lock, so nodes creating the same day at once create it once. Retention drops whole
days (:func:`drop_days_before`).

Example::

    await migrate(pool, "history", STEPS)
    await ensure_days(pool, [today, today + 1])
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import asyncpg

__all__ = [
    "HISTORY_COMPONENT",
    "STEPS",
    "TABLE",
    "day_of_ms",
    "drop_days_before",
    "ensure_days",
    "is_partitioned",
    "partition_days",
]

HISTORY_COMPONENT = "history"
TABLE = "history_events"

_COLUMNS = """
    id bigint NOT NULL,
    stored_at timestamptz NOT NULL,
    org text NOT NULL,
    subject text NOT NULL,
    seq bigint NOT NULL,
    ce_id text NOT NULL,
    source text NOT NULL,
    type text NOT NULL,
    ce_time timestamptz,
    policy_version text NOT NULL,
    content_type text,
    event bytea NOT NULL,
    data jsonb,
    PRIMARY KEY (org, id, stored_at)
"""

STEPS: tuple[str, ...] = (
    # 1: the table, native partitions or a hypertable, its indexes, and the forgiving JSON
    # cast the writer falls back on when a payload that claims to be JSON is not.
    f"""
    DO $$
    BEGIN
      IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE TABLE {TABLE} ({_COLUMNS});
        PERFORM create_hypertable('{TABLE}', 'stored_at',
                                  chunk_time_interval => interval '1 day');
      ELSE
        CREATE TABLE {TABLE} ({_COLUMNS}) PARTITION BY RANGE (stored_at);
      END IF;
    END $$;
    CREATE INDEX {TABLE}_org_subject_id ON {TABLE} (org, subject, id);
    CREATE INDEX {TABLE}_org_ce_id ON {TABLE} (org, ce_id);
    CREATE FUNCTION lockgate_jsonb_or_null(t text) RETURNS jsonb
      LANGUAGE plpgsql IMMUTABLE AS $f$
      BEGIN
        RETURN t::jsonb;
      EXCEPTION WHEN others THEN
        RETURN NULL;
      END $f$;
    """,
    # 2: the publisher (agent and roles, as the log stores them) of each event, so that
    # `lockgate policy replay --store` can decide it again as the agent who published it.
    # Rows logged before have none (null).
    f"ALTER TABLE {TABLE} ADD COLUMN publisher text",
)

# The key of the advisory lock that serialises partition changes (any constant: this one
# spells "lg-hist").
_PARTITION_LOCK = 0x6C672D68697374

_DAY_MS = 86_400_000


def day_of_ms(unix_ms: int) -> int:
    """The UTC day number (days since 1970-01-01) of a Unix time in milliseconds."""
    return unix_ms // _DAY_MS


def _day_name(day: int) -> str:
    return f"{TABLE}_{dt.date.fromordinal(day + 719_163):%Y%m%d}"  # 719163: 1970-01-01


def _day_bound(day: int) -> str:
    return f"{dt.date.fromordinal(day + 719_163).isoformat()} 00:00:00+00"


async def is_partitioned(conn: asyncpg.Connection | asyncpg.Pool) -> bool:
    """Whether the table has native partitions (False: a hypertable)."""
    kind = await conn.fetchval(
        "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", TABLE
    )
    return bool(kind == "p")


async def partition_days(conn: asyncpg.Connection | asyncpg.Pool) -> set[int]:
    """The days that have a partition."""
    names = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass($1)",
        TABLE,
    )
    out: set[int] = set()
    for (name,) in names:
        tail = name.removeprefix(TABLE + "_")
        if len(tail) == 8 and tail.isdigit():
            date = dt.date(int(tail[:4]), int(tail[4:6]), int(tail[6:]))
            out.add(date.toordinal() - 719_163)
    return out


async def ensure_days(pool: asyncpg.Pool, days: Iterable[int]) -> None:
    """Creates the partitions of ``days`` that do not exist (one transaction, under the
    partition lock: concurrent callers create each day once)."""
    wanted = sorted(set(days))
    if not wanted:
        return
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
        have = await partition_days(conn)
        for day in wanted:
            if day not in have:
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {_day_name(day)} PARTITION OF {TABLE} "
                    f"FOR VALUES FROM ('{_day_bound(day)}') TO ('{_day_bound(day + 1)}')"
                )


async def drop_days_before(pool: asyncpg.Pool, before_ms: int) -> int:
    """Drops the partitions that end at or before ``before_ms`` (retention by whole days);
    returns how many. On a hypertable, TimescaleDB's ``drop_chunks`` does it (untested
    here)."""
    cutoff = day_of_ms(before_ms)
    dropped = 0
    kind = await pool.fetchval(
        "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", TABLE
    )
    if kind is None:
        return 0  # not migrated yet: nothing to drop
    if kind != "p":
        dropped = len(
            await pool.fetch(
                "SELECT drop_chunks($1::regclass, older_than => $2::timestamptz)",
                TABLE,
                dt.datetime.fromtimestamp(cutoff * _DAY_MS / 1000, dt.UTC),
            )
        )
        return dropped
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
        for day in sorted(await partition_days(conn)):
            if day + 1 <= cutoff:
                await conn.execute(f"DROP TABLE IF EXISTS {_day_name(day)}")
                dropped += 1
    return dropped
