"""Durable consumers' state in SQLite: a row per consumer (configuration, position) and a
sparse ``consumer_pending`` table, changed incrementally through the group commit."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Collection, Mapping

from lockgate.broker.store import ConsumerRecord, LogPosition
from lockgate.broker.store.sqlite_engine import SqliteEngine
from lockgate.broker.store.statechanges import ChangeQueue, StateChanges

__all__ = ["SqliteConsumerState"]


def _consumer_row(r: ConsumerRecord) -> tuple[str, str, str, int, int, int]:
    config = {
        "pattern": r.pattern,
        "queue": r.queue,
        "ack_wait_ms": r.ack_wait_ms,
        "max_deliveries": r.max_deliveries,
        "max_in_flight": r.max_in_flight,
        "endpoint_url": r.endpoint_url,
        "owner": r.owner,
        "webhook_secrets": [list(s) for s in r.webhook_secrets],
    }
    seq, pos_id = r.position
    return (r.org, r.name, json.dumps(config), seq, pos_id, r.delivered_id)


def _write_changes(c: sqlite3.Connection, changes: dict[tuple[str, str], StateChanges]) -> None:
    for (org, name), ch in changes.items():
        if ch.drop:
            c.executemany(
                "DELETE FROM consumer_pending WHERE org = ? AND name = ? AND id = ?",
                [(org, name, i) for i in ch.drop],
            )
        if ch.put:
            c.executemany(
                "INSERT OR REPLACE INTO consumer_pending VALUES (?,?,?,?)",
                [(org, name, i, a) for i, a in ch.put.items()],
            )
        if ch.position is not None:
            c.execute(
                "UPDATE consumers SET position_seq = ?, position_id = ?, delivered_id = ? "
                "WHERE org = ? AND name = ?",
                (*ch.position, org, name),
            )


class SqliteConsumerState(SqliteEngine):
    """The :class:`broker.store.ConsumerStateStore` role on the engine."""

    def __init__(self, data_dir: str | os.PathLike[str], *, fsync: str = "os") -> None:
        super().__init__(data_dir, fsync=fsync)
        self._changes = ChangeQueue()

    def _before_commit(self) -> None:
        self._changes.before_commit()

    async def create_consumer(self, record: ConsumerRecord) -> None:
        row = _consumer_row(record)
        key = (record.org, record.name)
        pending = [(record.org, record.name, i, a) for i, a in record.pending.items()]
        self._changes.forget(*key)

        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO consumers VALUES (?,?,?,?,?,?)", row)
            c.execute("DELETE FROM consumer_pending WHERE org = ? AND name = ?", key)
            c.executemany("INSERT INTO consumer_pending VALUES (?,?,?,?)", pending)

        await self._submit(op)

    async def load_consumers(self) -> list[ConsumerRecord]:
        def q(c: sqlite3.Connection) -> list[ConsumerRecord]:
            pending: dict[tuple[str, str], dict[int, int]] = {}
            for org, name, i, attempt in c.execute("SELECT * FROM consumer_pending"):
                pending.setdefault((org, name), {})[i] = attempt
            out = []
            for org, name, config, seq, pos_id, delivered in c.execute("SELECT * FROM consumers"):
                cfg = json.loads(config)
                out.append(
                    ConsumerRecord(
                        org=org,
                        name=name,
                        pattern=cfg["pattern"],
                        queue=cfg.get("queue", ""),
                        ack_wait_ms=cfg["ack_wait_ms"],
                        max_deliveries=cfg["max_deliveries"],
                        max_in_flight=cfg["max_in_flight"],
                        endpoint_url=cfg.get("endpoint_url", ""),
                        owner=cfg.get("owner", ""),
                        webhook_secrets=[
                            (str(s), int(u)) for s, u in cfg.get("webhook_secrets", [])
                        ],
                        position=LogPosition(seq, pos_id),
                        pending=pending.get((org, name), {}),
                        delivered_id=delivered,
                    )
                )
            return out

        return await self._read(q)

    async def save_consumer_config(self, record: ConsumerRecord) -> None:
        org, name, config, *_ = _consumer_row(record)

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE consumers SET config = ? WHERE org = ? AND name = ?", (config, org, name)
            )

        await self._submit(op)

    async def delete_consumer(self, org: str, name: str) -> bool:
        self._changes.forget(org, name)

        def op(c: sqlite3.Connection) -> bool:
            cur = c.execute("DELETE FROM consumers WHERE org = ? AND name = ?", (org, name))
            c.execute("DELETE FROM consumer_pending WHERE org = ? AND name = ?", (org, name))
            c.execute("DELETE FROM dead_letters WHERE org = ? AND durable = ?", (org, name))
            return cur.rowcount > 0

        return bool(await self._enqueue(op))

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
        return self._changes.record(
            org,
            name,
            lambda taken: self._enqueue(lambda c: _write_changes(c, taken[0])),
            delivered=delivered,
            put=put,
            drop=drop,
            position=position,
            delivered_id=delivered_id,
        )
