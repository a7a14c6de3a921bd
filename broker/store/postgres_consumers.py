"""Durable consumers' state and dead letters in PostgreSQL: a row per consumer
(configuration, position), a sparse ``consumer_pending`` table changed incrementally through
the group commit (``pg_engine.PgDatabase``), and ``dead_letters``.

The write-behind promise is SQLite's (``sqlite_consumers.py``): changes are queued at call
time in call order; the changes queued while a transaction runs go into the next one,
together; a delivery acked before its row was written is never written. In cluster mode one
node at a time writes a durable's state (the owner holding its lease), so the only ordering
that matters is this node's, which the single writer keeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Mapping, Sequence

import asyncpg

from lockgate.broker.store import ConsumerRecord, DeadLetterRecord, LogPosition
from lockgate.broker.store.pg_engine import PgDatabase
from lockgate.broker.store.statechanges import ChangeQueue, Changes, StateChanges

__all__ = ["PgConsumerState", "PgDeadLetters"]


def _config(r: ConsumerRecord) -> str:
    return json.dumps(
        {
            "pattern": r.pattern,
            "queue": r.queue,
            "ack_wait_ms": r.ack_wait_ms,
            "max_deliveries": r.max_deliveries,
            "max_in_flight": r.max_in_flight,
            "endpoint_url": r.endpoint_url,
            "owner": r.owner,
            "webhook_secrets": [list(s) for s in r.webhook_secrets],
        }
    )


def _record(row: asyncpg.Record, pending: dict[int, int]) -> ConsumerRecord:
    cfg = json.loads(row["config"])
    return ConsumerRecord(
        org=row["org"],
        name=row["name"],
        pattern=cfg["pattern"],
        queue=cfg.get("queue", ""),
        ack_wait_ms=cfg["ack_wait_ms"],
        max_deliveries=cfg["max_deliveries"],
        max_in_flight=cfg["max_in_flight"],
        endpoint_url=cfg.get("endpoint_url", ""),
        owner=cfg.get("owner", ""),
        webhook_secrets=[(str(s), int(u)) for s, u in cfg.get("webhook_secrets", [])],
        position=LogPosition(row["position_seq"], row["position_id"]),
        pending=pending,
        delivered_id=row["delivered_id"],
    )


_PUT_PENDING = (
    "INSERT INTO consumer_pending (org, name, id, attempt) "
    "SELECT $1, $2, i, a FROM unnest($3::bigint[], $4::int[]) AS p(i, a) "
    # A change that arrives after the consumer was deleted leaves no orphan rows.
    "WHERE EXISTS (SELECT 1 FROM consumers WHERE org = $1 AND name = $2) "
    "ON CONFLICT (org, name, id) DO UPDATE SET attempt = EXCLUDED.attempt"
)


async def _write_changes(
    c: asyncpg.Connection, changes: dict[tuple[str, str], StateChanges]
) -> None:
    for (org, name), ch in changes.items():
        if ch.drop:
            await c.execute(
                "DELETE FROM consumer_pending WHERE org = $1 AND name = $2 "
                "AND id = ANY($3::bigint[])",
                org,
                name,
                list(ch.drop),
            )
        if ch.put:
            await c.execute(_PUT_PENDING, org, name, list(ch.put), list(ch.put.values()))
        if ch.position is not None:
            await c.execute(
                "UPDATE consumers SET position_seq = $3, position_id = $4, delivered_id = $5 "
                "WHERE org = $1 AND name = $2",
                org,
                name,
                *ch.position,
            )


class PgConsumerState(PgDatabase):
    """The :class:`broker.store.ConsumerStateStore` role."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._changes = ChangeQueue()

    def _before_commit(self) -> None:
        super()._before_commit()
        self._changes.before_commit()

    async def create_consumer(self, record: ConsumerRecord) -> None:
        key = (record.org, record.name)
        config = _config(record)
        seq, pos_id = record.position
        pending = dict(record.pending)
        self._changes.forget(*key)

        async def op(c: asyncpg.Connection) -> None:
            await c.execute(
                "INSERT INTO consumers VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (org, name) DO UPDATE SET config = EXCLUDED.config, "
                "position_seq = EXCLUDED.position_seq, position_id = EXCLUDED.position_id, "
                "delivered_id = EXCLUDED.delivered_id",
                *key,
                config,
                seq,
                pos_id,
                record.delivered_id,
            )
            await c.execute("DELETE FROM consumer_pending WHERE org = $1 AND name = $2", *key)
            if pending:
                await c.execute(_PUT_PENDING, *key, list(pending), list(pending.values()))

        await self._submit(op)

    async def load_consumers(self) -> list[ConsumerRecord]:
        async def q(c: asyncpg.Connection) -> list[ConsumerRecord]:
            # One snapshot: the pending rows belong to the positions read beside them.
            async with c.transaction(isolation="repeatable_read", readonly=True):
                pending: dict[tuple[str, str], dict[int, int]] = {}
                for org, name, i, attempt in await c.fetch(
                    "SELECT org, name, id, attempt FROM consumer_pending"
                ):
                    pending.setdefault((org, name), {})[i] = attempt
                rows = await c.fetch("SELECT * FROM consumers ORDER BY org, name")
            return [_record(r, pending.get((r["org"], r["name"]), {})) for r in rows]

        return await self._read("read the durables", q)

    async def save_consumer_config(self, record: ConsumerRecord) -> None:
        config = _config(record)

        async def op(c: asyncpg.Connection) -> None:
            await c.execute(
                "UPDATE consumers SET config = $3 WHERE org = $1 AND name = $2",
                record.org,
                record.name,
                config,
            )

        await self._submit(op)

    async def delete_consumer(self, org: str, name: str) -> bool:
        self._changes.forget(org, name)

        async def op(c: asyncpg.Connection) -> bool:
            gone = await c.fetchval(
                "WITH d AS (DELETE FROM consumers WHERE org = $1 AND name = $2 RETURNING 1) "
                "SELECT count(*) FROM d",
                org,
                name,
            )
            await c.execute("DELETE FROM consumer_pending WHERE org = $1 AND name = $2", org, name)
            await c.execute("DELETE FROM dead_letters WHERE org = $1 AND durable = $2", org, name)
            return bool(gone)

        return bool(await self._submit(op))

    def change_consumer(
        self,
        org: str,
        name: str,
        *,
        delivered: Collection[int] = (),
        put: Mapping[int, int] | None = None,
        drop: Collection[int] = (),
        position: LogPosition | None = None,
        delivered_id: int = 0,
    ) -> asyncio.Future[None]:
        def schedule(taken: list[Changes]) -> asyncio.Future[object]:
            async def op(c: asyncpg.Connection) -> None:
                await _write_changes(c, taken[0])

            return self._enqueue(op)

        return self._changes.record(
            org,
            name,
            schedule,
            delivered=delivered,
            put=put,
            drop=drop,
            position=position,
            delivered_id=delivered_id,
        )


class PgDeadLetters(PgDatabase):
    """The :class:`broker.store.DeadLetterStore` role."""

    async def add_dead_letters(self, records: Sequence[DeadLetterRecord]) -> None:
        rows = [(r.org, r.durable, r.id, r.attempts, r.dead_ms) for r in records]

        async def op(c: asyncpg.Connection) -> None:
            await c.executemany(
                "INSERT INTO dead_letters VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT (org, durable, id) DO UPDATE SET attempts = EXCLUDED.attempts, "
                "dead_ms = EXCLUDED.dead_ms",
                rows,
            )

        if rows:
            await self._submit(op)

    async def list_dead_letters(
        self, org: str, durable: str, after: tuple[int, int], limit: int
    ) -> list[DeadLetterRecord]:
        sql = "SELECT org, durable, id, attempts, dead_ms FROM dead_letters "
        sql += "WHERE org = $1 AND (dead_ms, id) > ($2, $3)"
        args: list[object] = [org, after[0], after[1]]
        if durable:
            sql += " AND durable = $4"
            args.append(durable)
        sql += f" ORDER BY dead_ms, id LIMIT ${len(args) + 1}"
        args.append(max(limit, 0))

        async def q(c: asyncpg.Connection) -> list[DeadLetterRecord]:
            return [DeadLetterRecord(*r) for r in await c.fetch(sql, *args)]

        return await self._read("read the dead letters", q)

    async def count_dead_letters(
        self, durables: Sequence[tuple[str, str]], cap: int
    ) -> dict[tuple[str, str], int]:
        sql = (
            "SELECT d.org, d.durable, (SELECT count(*) FROM (SELECT 1 FROM dead_letters x "
            "WHERE x.org = d.org AND x.durable = d.durable LIMIT $3) s) "
            "FROM unnest($1::text[], $2::text[]) AS d(org, durable)"
        )
        orgs, names = [o for o, _ in durables], [n for _, n in durables]

        async def q(c: asyncpg.Connection) -> dict[tuple[str, str], int]:
            rows = await c.fetch(sql, orgs, names, max(cap, 0))
            return {(r[0], r[1]): int(r[2]) for r in rows}

        return await self._read("count the dead letters", q) if durables else {}

    async def remove_dead_letters(
        self, org: str, durable: str, ids: Sequence[int] | None
    ) -> list[int]:
        async def op(c: asyncpg.Connection) -> list[int]:
            if ids is None:
                rows = await c.fetch(
                    "DELETE FROM dead_letters WHERE org = $1 AND durable = $2 RETURNING id",
                    org,
                    durable,
                )
                return [r["id"] for r in rows]
            rows = await c.fetch(
                "DELETE FROM dead_letters WHERE org = $1 AND durable = $2 "
                "AND id = ANY($3::bigint[]) RETURNING id",
                org,
                durable,
                list(ids),
            )
            gone = {r["id"] for r in rows}
            # In the order asked, each once (as SQLite answers).
            return [i for i in dict.fromkeys(ids) if i in gone]

        return await self._submit(op)
