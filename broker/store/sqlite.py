"""The embedded store: SQLite in WAL mode under ``--data-dir``.

``SqliteStore`` is every role of :class:`broker.store.Store` on one file: the log and the
metadata here, consumer state in ``sqlite_consumers.py``, the backbone registry and the
config store in ``sqlite_meta.py``, the group commit in
``sqlite_engine.py``, tables and upgrades in ``sqlite_schema.py``.

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
import sqlite3
import time
from collections.abc import Callable, Sequence

from lockgate.broker.ids import id_for_time_ms
from lockgate.broker.store import (
    SCAN_BUDGET,
    ApiKeyRecord,
    AuditQuery,
    AuditRecord,
    Batch,
    DeadLetterRecord,
    LogPosition,
    LogScan,
    OnStored,
    PolicyVersionRecord,
    RetentionRule,
    audit_sql,
)
from lockgate.broker.store.sqlite_consumers import SqliteConsumerState
from lockgate.broker.store.sqlite_conversations import SqliteConversations
from lockgate.broker.store.sqlite_engine import FSYNC_MODES
from lockgate.broker.store.sqlite_meta import SqliteMetadata
from lockgate.broker.store.sqlite_schema import position_after_id
from lockgate.broker.subjects import compile_pattern

__all__ = ["FSYNC_MODES", "SqliteStore"]


def _batch(row: tuple[int, int, str, str, int, str, bytes, str, int]) -> Batch:
    return Batch(*row)


# Filtered reads walk a covering index of one org in order: no table row, no body and no
# sort is touched until a subject matches (tests pin these plans with EXPLAIN QUERY PLAN).
SCAN_LOG_SQL = (
    "SELECT first_id, seq, subject FROM batches INDEXED BY batches_org_seq "
    "WHERE org = ? AND seq >= ? ORDER BY seq LIMIT ?"
)
SCAN_IDS_SQL = (
    "SELECT first_id, last_id, subject FROM batches INDEXED BY batches_org_id "
    "WHERE org = ? AND first_id > ? AND first_id < ? ORDER BY first_id LIMIT ?"
)
SCAN_HOLDING_SQL = (
    "SELECT first_id, last_id, subject FROM batches INDEXED BY batches_org_id "
    "WHERE org = ? AND first_id <= ? ORDER BY first_id DESC LIMIT 1"
)


def _bodies(c: sqlite3.Connection, first_ids: list[int]) -> list[Batch]:
    """The whole rows of the batches starting at ``first_ids`` (primary key lookups)."""
    if not first_ids:
        return []
    marks = ",".join("?" * len(first_ids))
    return [
        _batch(r)
        for r in c.execute(f"SELECT * FROM batches WHERE first_id IN ({marks})", first_ids)
    ]


def _by_seq(b: Batch) -> int:
    return b.seq


def _by_id(b: Batch) -> int:
    return b.first_id


_KEY_COLUMNS = (
    "key_id, secret_hash, org, agent, roles, created_ms, revoked, expires_ms, replaced_by"
)
_KEY_ROW = "(?,?,?,?,?,?,?,?,?)"


class SqliteStore(SqliteConsumerState, SqliteConversations, SqliteMetadata):
    """The embedded :class:`broker.store.Store`."""

    # -- the log ----------------------------------------------------------------------------

    def append(
        self, batches: Sequence[Batch], on_stored: OnStored | None = None
    ) -> asyncio.Future[list[int]]:
        """Queues ``batches`` for the next group commit now, in call order; the future is
        done once they are stored and gives their sequences (``on_stored`` has them first,
        in the commit's own step)."""
        rows = [
            [
                b.first_id,
                b.last_id,
                b.org,
                b.subject,
                b.count,
                b.policy_version,
                b.body,
                b.publisher,
                0,
            ]
            for b in batches
        ]

        def op(c: sqlite3.Connection) -> list[int]:
            # The sequence is given here, in the commit, so it follows commit order.
            first = self._seq + 1
            for n, row in enumerate(rows):
                row[8] = first + n
            c.executemany("INSERT INTO batches VALUES (?,?,?,?,?,?,?,?,?)", rows)
            self._seq = first + len(rows) - 1
            return list(range(first, first + len(rows)))

        size = sum(len(b.body) for b in batches)
        return self._enqueue(op, size, on_stored)  # type: ignore[return-value]

    def committed_seq(self, org: str = "") -> int:
        return self._committed  # one log for every org

    def in_log(self, org: str, seq: int) -> bool:
        return True

    async def read_log(self, org: str, start: LogPosition, *, limit: int = 256) -> list[Batch]:
        def q(c: sqlite3.Connection) -> list[Batch]:
            cur = c.execute(
                "SELECT * FROM batches WHERE seq >= ? AND org = ? ORDER BY seq LIMIT ?",
                (start.seq, org, limit),
            )
            return [_batch(r) for r in cur.fetchall()]

        return await self._read(q)

    async def scan_log(
        self,
        org: str,
        start: LogPosition,
        match: Callable[[str], bool],
        *,
        limit: int = 64,
        budget: int = SCAN_BUDGET,
        pattern: str | None = None,
    ) -> LogScan:
        def q(c: sqlite3.Connection) -> LogScan:
            # The (org, seq, subject) index alone: no row, no body, no sort is read until
            # a subject matches (the plan is pinned by a test).
            rows = c.execute(SCAN_LOG_SQL, (org, start.seq, budget)).fetchall()
            wanted: list[int] = []
            nxt = start.seq
            for first_id, seq, subject in rows:
                nxt = seq + 1
                if match(subject):
                    wanted.append(first_id)
                    if len(wanted) >= limit:
                        break
            done = len(rows) < budget and (not rows or nxt > rows[-1][1])
            return LogScan(sorted(_bodies(c, wanted), key=_by_seq), nxt, done)

        return await self._read(q)

    async def scan_batches(
        self,
        org: str,
        after_id: int,
        match: Callable[[str], bool],
        *,
        before_id: int = 0,
        limit: int = 64,
        budget: int = SCAN_BUDGET,
    ) -> LogScan:
        def q(c: sqlite3.Connection) -> LogScan:
            rows: list[tuple[int, int, str]] = []
            if after_id > 0:
                # The batch holding ``after_id`` when a page ended inside it: one batch's ids
                # are one block, so at most the nearest batch at or below it.
                rows = c.execute(SCAN_HOLDING_SQL, (org, after_id)).fetchall()
                rows = [r for r in rows if r[1] > after_id]
            # No bound is first_id < 2^63, which every id is.
            bound = before_id or (1 << 63) - 1
            scanned = c.execute(SCAN_IDS_SQL, (org, after_id, bound, budget)).fetchall()
            wanted: list[int] = []
            nxt = after_id
            stopped = False
            for first_id, last_id, subject in rows + scanned:
                nxt = max(nxt, last_id)
                if match(subject):
                    wanted.append(first_id)
                    if len(wanted) >= limit:
                        stopped = True
                        break
            done = not stopped and len(scanned) < budget
            return LogScan(sorted(_bodies(c, wanted), key=_by_id), nxt, done)

        return await self._read(q)

    async def position_after_id(self, event_id: int, org: str = "") -> LogPosition:
        return LogPosition(*await self._read(lambda c: position_after_id(c, event_id)))

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

    async def count_dead_letters(
        self, durables: Sequence[tuple[str, str]], cap: int
    ) -> dict[tuple[str, str], int]:
        # One JSON parameter however many durables (SQLite bounds a statement's variables).
        sql = (
            "WITH d(org, durable) AS (SELECT json_extract(value, '$[0]'), "
            "json_extract(value, '$[1]') FROM json_each(?)) "
            "SELECT d.org, d.durable, (SELECT count(*) FROM (SELECT 1 FROM dead_letters x "
            "WHERE x.org = d.org AND x.durable = d.durable LIMIT ?)) FROM d"
        )
        args = (json.dumps([list(k) for k in durables]), max(cap, 0))

        def q(c: sqlite3.Connection) -> dict[tuple[str, str], int]:
            return {(org, name): n for org, name, n in c.execute(sql, args)}

        return await self._read(q) if durables else {}

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
            record.expires_ms,
            record.replaced_by,
        )

        def op(c: sqlite3.Connection) -> None:
            c.execute(f"INSERT OR REPLACE INTO api_keys ({_KEY_COLUMNS}) VALUES {_KEY_ROW}", row)

        await self._submit(op)

    @staticmethod
    def _key(row: tuple[str, str, str, str, str, int, int, int, str]) -> ApiKeyRecord:
        return ApiKeyRecord(
            row[0],
            row[1],
            row[2],
            row[3],
            tuple(json.loads(row[4])),
            row[5],
            bool(row[6]),
            row[7],
            row[8],
        )

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        def q(c: sqlite3.Connection) -> ApiKeyRecord | None:
            row = c.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
            return None if row is None else self._key(row)

        return await self._read(q)

    async def list_keys(self) -> list[ApiKeyRecord]:
        return await self._read(
            lambda c: [
                self._key(r)
                for r in c.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_ms")
            ]
        )

    async def rotate_key(self, key_id: str, new: ApiKeyRecord, old_expires_ms: int) -> bool:
        row = (
            new.key_id,
            new.secret_hash,
            new.org,
            new.agent,
            json.dumps(list(new.roles)),
            new.created_ms,
            int(new.revoked),
            new.expires_ms,
            new.replaced_by,
        )
        found: list[bool] = []

        def op(c: sqlite3.Connection) -> None:
            # One transaction (the writer's): the new key exists exactly when the old one
            # is marked replaced. An expiry already sooner than the grace end stays.
            cur = c.execute(
                "UPDATE api_keys SET replaced_by = ?, expires_ms = CASE "
                "WHEN expires_ms > 0 AND expires_ms < ? THEN expires_ms ELSE ? END "
                "WHERE key_id = ? AND revoked = 0",
                (new.key_id, old_expires_ms, old_expires_ms, key_id),
            )
            found.append(cur.rowcount > 0)
            if cur.rowcount:
                c.execute(
                    f"INSERT OR REPLACE INTO api_keys ({_KEY_COLUMNS}) VALUES {_KEY_ROW}", row
                )

        await self._submit(op)
        return found[0]

    async def revoke_key(self, key_id: str) -> bool:
        found: list[bool] = []

        def op(c: sqlite3.Connection) -> None:
            cur = c.execute("UPDATE api_keys SET revoked = 1 WHERE key_id = ?", (key_id,))
            found.append(cur.rowcount > 0)

        await self._submit(op)
        return found[0]

    # -- policy versions --------------------------------------------------------------------

    async def save_policy_version(
        self, record: PolicyVersionRecord, *, activate: bool, org: str = ""
    ) -> None:
        files = json.dumps(record.files, sort_keys=True)

        def op(c: sqlite3.Connection) -> None:
            if org:
                c.execute(
                    "INSERT OR IGNORE INTO org_policy_versions VALUES (?,?,?,?,?,0)",
                    (org, record.version, record.created_ms, record.origin, files),
                )
                if activate:
                    c.execute(
                        "UPDATE org_policy_versions SET active = (version = ?) WHERE org = ?",
                        (record.version, org),
                    )
                return
            c.execute(
                "INSERT OR IGNORE INTO policy_versions VALUES (?,?,?,?,0)",
                (record.version, record.created_ms, record.origin, files),
            )
            if activate:
                c.execute("UPDATE policy_versions SET active = (version = ?)", (record.version,))

        await self._submit(op)

    async def list_policy_versions(self, org: str = "") -> list[PolicyVersionRecord]:
        def q(c: sqlite3.Connection) -> list[PolicyVersionRecord]:
            if org:
                rows = c.execute(
                    "SELECT version, created_ms, origin, files, active FROM org_policy_versions "
                    "WHERE org = ? ORDER BY created_ms DESC, rowid DESC",
                    (org,),
                )
            else:
                rows = c.execute(
                    "SELECT version, created_ms, origin, files, active FROM policy_versions "
                    "ORDER BY created_ms DESC, rowid DESC"
                )
            return [PolicyVersionRecord(v, t, o, json.loads(f), bool(a)) for v, t, o, f, a in rows]

        return await self._read(q)

    # -- the audit log ----------------------------------------------------------------------

    async def append_audit(self, records: Sequence[AuditRecord]) -> None:
        rows = [audit_sql.row(r) for r in records]
        sql = audit_sql.insert(lambda n: "?")

        def op(c: sqlite3.Connection) -> None:
            c.executemany(sql, rows)

        await self._submit(op)

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        args: list[object] = []

        def arg(value: object) -> str:
            args.append(value)
            return "?"

        sql = audit_sql.select(query, arg)

        def q(c: sqlite3.Connection) -> list[AuditRecord]:
            return [audit_sql.record(r) for r in c.execute(sql, args)]

        return await self._read(q)

    async def trim_audit(self, before_ms: int) -> int:
        removed: list[int] = []

        def op(c: sqlite3.Connection) -> None:
            removed.append(c.execute("DELETE FROM audit WHERE time_ms < ?", (before_ms,)).rowcount)

        await self._submit(op)
        return removed[0]

    async def active_org_policies(self) -> dict[str, PolicyVersionRecord]:
        def q(c: sqlite3.Connection) -> dict[str, PolicyVersionRecord]:
            rows = c.execute(
                "SELECT org, version, created_ms, origin, files FROM org_policy_versions "
                "WHERE active = 1"
            )
            return {
                org: PolicyVersionRecord(v, t, o, json.loads(f), True) for org, v, t, o, f in rows
            }

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
