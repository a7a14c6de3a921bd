"""The embedded store: SQLite in WAL mode under ``--data-dir``.

One writer thread owns the write connection and commits whatever accumulated while the
previous commit ran (group commit): under load a commit carries many publish batches and
consumer updates, so the fsync cost is shared. A second thread serves reads on its own
connection, which WAL lets run beside the writer.

``fsync`` policy: ``os`` (SQLite ``synchronous=NORMAL`` in WAL mode, the default: every commit
is written to the OS before the publisher is acked, so an acknowledged event survives a crash
or kill -9 of the broker; the WAL is fsynced at checkpoints, so a power loss can take the
last moments, as with NATS JetStream's default sync interval), ``always`` (``FULL``: one fsync
per group commit, an acknowledged event survives a power loss; each commit waits for the
disk, 3-4 ms here, which group commit shares among the batches waiting), ``never`` (``OFF``:
for throwaway data).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from broker.errors import FailedPrecondition, Unavailable
from broker.ids import id_for_time_ms
from broker.store import (
    ApiKeyRecord,
    Batch,
    ConsumerRecord,
    DeadLetterRecord,
    PolicyVersionRecord,
    RetentionRule,
)
from broker.subjects import compile_pattern

__all__ = ["FSYNC_MODES", "SqliteStore"]

FSYNC_MODES = {"always": "FULL", "os": "NORMAL", "never": "OFF"}
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    first_id INTEGER PRIMARY KEY,
    last_id INTEGER NOT NULL,
    org TEXT NOT NULL,
    subject TEXT NOT NULL,
    count INTEGER NOT NULL,
    policy_version TEXT NOT NULL,
    body BLOB NOT NULL,
    publisher TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS batches_org_subject ON batches (org, subject, first_id);
CREATE TABLE IF NOT EXISTS consumers (
    org TEXT NOT NULL,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    pending TEXT NOT NULL,
    PRIMARY KEY (org, name)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    org TEXT NOT NULL,
    durable TEXT NOT NULL,
    id INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    dead_ms INTEGER NOT NULL,
    PRIMARY KEY (org, durable, id)
);
CREATE TABLE IF NOT EXISTS policy_versions (
    version TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    origin TEXT NOT NULL,
    files TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    org TEXT NOT NULL,
    agent TEXT NOT NULL,
    roles TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
"""

_Op = Callable[[sqlite3.Connection], None]


def _consumer_row(r: ConsumerRecord) -> tuple[str, str, str, int, str]:
    config = {
        "pattern": r.pattern,
        "queue": r.queue,
        "ack_wait_ms": r.ack_wait_ms,
        "max_deliveries": r.max_deliveries,
        "max_in_flight": r.max_in_flight,
        "endpoint_url": r.endpoint_url,
    }
    pending = json.dumps([[k, v] for k, v in r.pending.items()])
    return (r.org, r.name, json.dumps(config), r.cursor, pending)


def _batch(row: tuple[int, int, str, str, int, str, bytes, str]) -> Batch:
    return Batch(*row)


class SqliteStore:
    """The embedded :class:`broker.store.Store`."""

    FILE_NAME = "lockgate.db"  # in the data directory

    def __init__(self, data_dir: str | os.PathLike[str], *, fsync: str = "os") -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}, not {fsync!r}")
        self.path = Path(data_dir) / self.FILE_NAME
        self._sync = FSYNC_MODES[fsync]
        self._inline = fsync != "always"
        self._checkpointer: asyncio.Task[None] | None = None
        self._wpool = ThreadPoolExecutor(1, thread_name_prefix="lockgate-store-w")
        self._rpool = ThreadPoolExecutor(1, thread_name_prefix="lockgate-store-r")
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self._queue: list[tuple[_Op, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    # -- life cycle -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._sync}")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def setup() -> sqlite3.Connection:
            conn = self._connect()
            conn.executescript(_SCHEMA)
            return conn

        try:
            self._w = await self._run(self._wpool, setup)
            self._r = await self._run(self._rpool, self._connect)
        except sqlite3.Error as exc:
            raise FailedPrecondition(
                f"cannot open the store at {self.path}: {exc}",
                reason="DATA_DIR_UNUSABLE",
                hint="check that --data-dir is writable and not used by another broker",
            ) from exc
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="lockgate-store-writer")
        if self._inline:
            # Commits run on the loop, so checkpoints (which copy the WAL into the database
            # and fsync it) must not: they run from the reader's thread instead.
            await self._run(
                self._wpool,
                lambda: self._w.execute(  # type: ignore[union-attr]
                    "PRAGMA wal_autocheckpoint=0"
                ),
            )
            self._checkpointer = asyncio.create_task(self._checkpoint_loop())

    async def _checkpoint_loop(self) -> None:
        wal = Path(str(self.path) + "-wal")
        while True:
            await asyncio.sleep(1.0)
            try:
                if wal.exists() and wal.stat().st_size > 16 << 20:
                    await self._read(lambda c: c.execute("PRAGMA wal_checkpoint(PASSIVE)"))
            except (OSError, Unavailable) as exc:
                logging.getLogger("lockgate.store").warning("checkpoint failed: %s", exc)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._checkpointer is not None:
            self._checkpointer.cancel()
        if self._writer is not None and self._wake is not None:
            self._wake.set()
            await self._flush_all()
            self._writer.cancel()
        for conn, pool in ((self._w, self._wpool), (self._r, self._rpool)):
            if conn is not None:
                await self._run(pool, conn.close)
            pool.shutdown(wait=True)

    async def _flush_all(self) -> None:
        while self._queue:
            await asyncio.gather(*(f for _, f in list(self._queue)), return_exceptions=True)

    @staticmethod
    async def _run(pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    # -- group commit -----------------------------------------------------------------------

    def _enqueue(self, op: _Op) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed and self._writer is None:
            fut.set_exception(Unavailable("the store is closed", reason="STORE_UNAVAILABLE"))
            return fut
        self._queue.append((op, fut))
        assert self._wake is not None
        self._wake.set()
        return fut

    async def _submit(self, op: _Op) -> None:
        await self._enqueue(op)

    async def _write_loop(self) -> None:
        assert self._wake is not None and self._w is not None
        conn = self._w
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                work, self._queue = self._queue, []

                def commit(work: list[tuple[_Op, asyncio.Future[None]]] = work) -> None:
                    conn.execute("BEGIN")
                    try:
                        for op, _ in work:
                            op(conn)
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")

                try:
                    if self._inline:
                        # Without an fsync a commit is a few tens of microseconds of
                        # writing to the OS: cheaper on the loop than a hand-off to a thread.
                        commit()
                    else:
                        await self._run(self._wpool, commit)
                except sqlite3.Error as exc:
                    err = Unavailable(
                        f"the store failed to write: {exc}", reason="STORE_UNAVAILABLE"
                    )
                    err.__cause__ = exc
                    for _, fut in work:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                for _, fut in work:
                    if not fut.done():
                        fut.set_result(None)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._r
        assert conn is not None, "store is not open"
        try:
            return await self._run(self._rpool, lambda: fn(conn))
        except sqlite3.Error as exc:
            raise Unavailable(
                f"the store failed to read: {exc}", reason="STORE_UNAVAILABLE"
            ) from exc

    # -- the log ----------------------------------------------------------------------------

    def append(self, batches: Sequence[Batch]) -> asyncio.Future[None]:
        """Queues ``batches`` for the next group commit now, in call order; the future is
        done once they are stored."""
        rows = [
            (
                b.first_id,
                b.last_id,
                b.org,
                b.subject,
                b.count,
                b.policy_version,
                b.body,
                b.publisher,
            )
            for b in batches
        ]

        def op(c: sqlite3.Connection) -> None:
            c.executemany("INSERT INTO batches VALUES (?,?,?,?,?,?,?,?)", rows)

        return self._enqueue(op)

    async def last_id(self) -> int:
        def q(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT MAX(last_id) FROM batches").fetchone()
            return int(row[0] or 0)

        return await self._read(q)

    async def read_batches(
        self, org: str, after_id: int, *, subject: str | None = None, limit: int = 256
    ) -> list[Batch]:
        def q(c: sqlite3.Connection) -> list[Batch]:
            if subject is None:
                cur = c.execute(
                    "SELECT * FROM batches WHERE last_id > ? AND org = ? "
                    "AND first_id > ? - 4194304000 ORDER BY first_id LIMIT ?",
                    (after_id, org, after_id, limit),
                )
            else:
                cur = c.execute(
                    "SELECT * FROM batches WHERE org = ? AND subject = ? AND last_id > ? "
                    "ORDER BY first_id LIMIT ?",
                    (org, subject, after_id, limit),
                )
            return [_batch(r) for r in cur.fetchall()]

        return await self._read(q)

    async def batch_containing(self, org: str, event_id: int) -> Batch | None:
        def q(c: sqlite3.Connection) -> Batch | None:
            row = c.execute(
                "SELECT * FROM batches WHERE first_id <= ? ORDER BY first_id DESC LIMIT 1",
                (event_id,),
            ).fetchone()
            if row is None or row[1] < event_id or row[2] != org:
                return None
            return _batch(row)

        return await self._read(q)

    async def recent_batches(self, after_id: int) -> list[Batch]:
        def q(c: sqlite3.Connection) -> list[Batch]:
            cur = c.execute(
                "SELECT * FROM batches WHERE first_id > ? ORDER BY first_id", (after_id,)
            )
            return [_batch(r) for r in cur.fetchall()]

        return await self._read(q)

    # -- durable consumers ------------------------------------------------------------------

    async def save_consumer(self, record: ConsumerRecord) -> None:
        row = _consumer_row(record)

        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO consumers VALUES (?,?,?,?,?)", row)

        await self._submit(op)

    async def load_consumers(self) -> list[ConsumerRecord]:
        def q(c: sqlite3.Connection) -> list[ConsumerRecord]:
            out = []
            for org, name, config, cursor, pending in c.execute("SELECT * FROM consumers"):
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
                        cursor=cursor,
                        pending={int(k): int(v) for k, v in json.loads(pending)},
                    )
                )
            return out

        return await self._read(q)

    async def delete_consumer(self, org: str, name: str) -> bool:
        found: list[bool] = []

        def op(c: sqlite3.Connection) -> None:
            cur = c.execute("DELETE FROM consumers WHERE org = ? AND name = ?", (org, name))
            found.append(cur.rowcount > 0)
            c.execute("DELETE FROM dead_letters WHERE org = ? AND durable = ?", (org, name))

        await self._submit(op)
        return found[0]

    # -- dead letters -----------------------------------------------------------------------

    async def add_dead_letters(self, records: Sequence[DeadLetterRecord]) -> None:
        rows = [(r.org, r.durable, r.id, r.attempts, r.dead_ms) for r in records]

        def op(c: sqlite3.Connection) -> None:
            c.executemany("INSERT OR REPLACE INTO dead_letters VALUES (?,?,?,?,?)", rows)

        await self._submit(op)

    async def list_dead_letters(
        self, org: str, durable: str, after: tuple[int, int], limit: int
    ) -> list[DeadLetterRecord]:
        def q(c: sqlite3.Connection) -> list[DeadLetterRecord]:
            sql = "SELECT * FROM dead_letters WHERE org = ? AND (dead_ms, id) > (?, ?)"
            args: list[object] = [org, after[0], after[1]]
            if durable:
                sql += " AND durable = ?"
                args.append(durable)
            sql += " ORDER BY dead_ms, id LIMIT ?"
            args.append(limit)
            return [DeadLetterRecord(*r) for r in c.execute(sql, args)]

        return await self._read(q)

    async def remove_dead_letters(
        self, org: str, durable: str, ids: Sequence[int] | None
    ) -> list[int]:
        removed: list[int] = []

        def op(c: sqlite3.Connection) -> None:
            if ids is None:
                rows = c.execute(
                    "SELECT id FROM dead_letters WHERE org = ? AND durable = ?", (org, durable)
                ).fetchall()
                wanted = [r[0] for r in rows]
            else:
                wanted = list(ids)
            for i in wanted:
                cur = c.execute(
                    "DELETE FROM dead_letters WHERE org = ? AND durable = ? AND id = ?",
                    (org, durable, i),
                )
                if cur.rowcount:
                    removed.append(i)

        await self._submit(op)
        return removed

    # -- API keys ---------------------------------------------------------------------------

    async def put_key(self, record: ApiKeyRecord) -> None:
        row = (
            record.key_id,
            record.secret_hash,
            record.org,
            record.agent,
            json.dumps(list(record.roles)),
            record.created_ms,
            int(record.revoked),
        )

        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO api_keys VALUES (?,?,?,?,?,?,?)", row)

        await self._submit(op)

    @staticmethod
    def _key(row: tuple[str, str, str, str, str, int, int]) -> ApiKeyRecord:
        return ApiKeyRecord(
            row[0], row[1], row[2], row[3], tuple(json.loads(row[4])), row[5], bool(row[6])
        )

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        def q(c: sqlite3.Connection) -> ApiKeyRecord | None:
            row = c.execute("SELECT * FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
            return None if row is None else self._key(row)

        return await self._read(q)

    async def list_keys(self) -> list[ApiKeyRecord]:
        return await self._read(
            lambda c: [self._key(r) for r in c.execute("SELECT * FROM api_keys ORDER BY 6")]
        )

    async def revoke_key(self, key_id: str) -> bool:
        found: list[bool] = []

        def op(c: sqlite3.Connection) -> None:
            cur = c.execute("UPDATE api_keys SET revoked = 1 WHERE key_id = ?", (key_id,))
            found.append(cur.rowcount > 0)

        await self._submit(op)
        return found[0]

    # -- policy versions --------------------------------------------------------------------

    async def save_policy_version(self, record: PolicyVersionRecord, *, activate: bool) -> None:
        files = json.dumps(record.files, sort_keys=True)

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR IGNORE INTO policy_versions VALUES (?,?,?,?,0)",
                (record.version, record.created_ms, record.origin, files),
            )
            if activate:
                c.execute("UPDATE policy_versions SET active = (version = ?)", (record.version,))

        await self._submit(op)

    async def list_policy_versions(self) -> list[PolicyVersionRecord]:
        def q(c: sqlite3.Connection) -> list[PolicyVersionRecord]:
            rows = c.execute(
                "SELECT version, created_ms, origin, files, active FROM policy_versions "
                "ORDER BY created_ms DESC, rowid DESC"
            )
            return [PolicyVersionRecord(v, t, o, json.loads(f), bool(a)) for v, t, o, f, a in rows]

        return await self._read(q)

    # -- retention --------------------------------------------------------------------------

    async def trim(self, rules: Sequence[RetentionRule], now_ms: int | None = None) -> int:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        removed: list[int] = [0]

        def op(c: sqlite3.Connection) -> None:
            for rule in rules:
                match = compile_pattern(rule.pattern)
                keys = [
                    (org, subj)
                    for org, subj in c.execute("SELECT DISTINCT org, subject FROM batches")
                    if match(subj)
                ]
                for org, subj in keys:
                    if rule.max_age_ms:
                        cutoff = id_for_time_ms(now - rule.max_age_ms)
                        cur = c.execute(
                            "SELECT COALESCE(SUM(count), 0) FROM batches "
                            "WHERE org = ? AND subject = ? AND last_id < ?",
                            (org, subj, cutoff),
                        )
                        removed[0] += cur.fetchone()[0]
                        c.execute(
                            "DELETE FROM batches WHERE org = ? AND subject = ? AND last_id < ?",
                            (org, subj, cutoff),
                        )
                    if rule.max_events:
                        # Whole batches go, oldest first, until at most max_events remain.
                        rows = c.execute(
                            "SELECT first_id, count FROM batches WHERE org = ? AND subject = ? "
                            "ORDER BY first_id DESC",
                            (org, subj),
                        ).fetchall()
                        kept = 0
                        for first_id, count in rows:
                            kept += count
                            if kept > rule.max_events:
                                cur = c.execute(
                                    "SELECT COALESCE(SUM(count), 0) FROM batches WHERE org = ? "
                                    "AND subject = ? AND first_id <= ?",
                                    (org, subj, first_id),
                                )
                                removed[0] += cur.fetchone()[0]
                                c.execute(
                                    "DELETE FROM batches WHERE org = ? AND subject = ? "
                                    "AND first_id <= ?",
                                    (org, subj, first_id),
                                )
                                break

        await self._submit(op)
        return removed[0]
