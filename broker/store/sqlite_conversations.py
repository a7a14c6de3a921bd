"""Conversations' metadata in SQLite (the :class:`broker.store.ConversationStore` role): the
tables ``conversations``, ``conversation_members``, ``conversation_receipts``, ``agent_keys``
and ``group_keys`` of ``sqlite_schema.py``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from lockgate.broker.store import (
    AgentKeyRecord,
    ConversationRecord,
    GroupKeyRecord,
    MemberRecord,
    ReceiptRecord,
)
from lockgate.broker.store.sqlite_engine import SqliteEngine

__all__ = ["SqliteConversations"]

_CONV_COLUMNS = (
    "org, id, kind, owner, created_ms, metadata, closed_ms, key_epoch, history_for_new, open"
)


def _conversation(row: tuple[object, ...], members: list[MemberRecord]) -> ConversationRecord:
    org, cid, kind, owner, created, meta, closed, epoch, hist, open_ = row
    return ConversationRecord(
        str(org),
        str(cid),
        str(kind),
        str(owner),
        int(str(created)),
        tuple(members),
        json.loads(str(meta)),
        int(str(closed)),
        int(str(epoch)),
        bool(hist),
        bool(open_),
    )


def _members(
    c: sqlite3.Connection, org: str | None = None, cid: str | None = None
) -> dict[tuple[str, str], list[MemberRecord]]:
    sql = (
        "SELECT org, conversation_id, agent, role, joined_ms, invited_by FROM conversation_members"
    )
    args: tuple[str, ...] = ()
    if org is not None and cid is not None:
        sql += " WHERE org = ? AND conversation_id = ?"
        args = (org, cid)
    out: dict[tuple[str, str], list[MemberRecord]] = {}
    for o, i, agent, role, joined, by in c.execute(sql + " ORDER BY joined_ms, agent", args):
        out.setdefault((o, i), []).append(MemberRecord(agent, role, joined, by))
    return out


class SqliteConversations(SqliteEngine):
    """The :class:`broker.store.ConversationStore` role on SQLite."""

    async def save_conversation(self, record: ConversationRecord) -> None:
        r = record
        row = (
            r.org,
            r.conversation_id,
            r.kind,
            r.owner,
            r.created_ms,
            json.dumps(dict(r.metadata)),
            r.closed_ms,
            r.key_epoch,
            int(r.history_for_new_members),
            int(r.open),
        )
        members = [
            (r.org, r.conversation_id, m.agent, m.role, m.joined_ms, m.invited_by)
            for m in r.members
        ]

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                f"INSERT OR REPLACE INTO conversations ({_CONV_COLUMNS}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            c.execute(
                "DELETE FROM conversation_members WHERE org = ? AND conversation_id = ?",
                (r.org, r.conversation_id),
            )
            c.executemany("INSERT INTO conversation_members VALUES (?,?,?,?,?,?)", members)

        await self._submit(op)

    async def load_conversations(self) -> list[ConversationRecord]:
        def q(c: sqlite3.Connection) -> list[ConversationRecord]:
            members = _members(c)
            rows = c.execute(f"SELECT {_CONV_COLUMNS} FROM conversations ORDER BY created_ms, id")
            return [_conversation(r, members.get((r[0], r[1]), [])) for r in rows]

        return await self._read(q)

    async def get_conversation(self, org: str, conversation_id: str) -> ConversationRecord | None:
        def q(c: sqlite3.Connection) -> ConversationRecord | None:
            row = c.execute(
                f"SELECT {_CONV_COLUMNS} FROM conversations WHERE org = ? AND id = ?",
                (org, conversation_id),
            ).fetchone()
            if row is None:
                return None
            return _conversation(
                row, _members(c, org, conversation_id).get((org, conversation_id), [])
            )

        return await self._read(q)

    async def mark_receipt(
        self,
        org: str,
        conversation_id: str,
        agent: str,
        delivered_id: int,
        read_id: int,
        now_ms: int,
    ) -> ReceiptRecord:
        delivered = max(delivered_id, read_id)

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO conversation_receipts VALUES (?,?,?,?,?,?) "
                "ON CONFLICT (org, conversation_id, agent) DO UPDATE SET "
                "delivered_id = MAX(delivered_id, excluded.delivered_id), "
                "read_id = MAX(read_id, excluded.read_id), updated_ms = excluded.updated_ms",
                (org, conversation_id, agent, delivered, read_id, now_ms),
            )

        await self._submit(op)
        return next(r for r in await self.list_receipts(org, conversation_id) if r.agent == agent)

    async def list_receipts(self, org: str, conversation_id: str) -> list[ReceiptRecord]:
        def q(c: sqlite3.Connection) -> list[ReceiptRecord]:
            rows = c.execute(
                "SELECT agent, delivered_id, read_id, updated_ms FROM conversation_receipts "
                "WHERE org = ? AND conversation_id = ? ORDER BY agent",
                (org, conversation_id),
            )
            return [ReceiptRecord(*r) for r in rows]

        return await self._read(q)

    async def put_agent_key(self, record: AgentKeyRecord) -> None:
        r = record
        row = (r.org, r.agent, r.public_key, r.identity_key, r.signature, r.published_ms)

        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO agent_keys VALUES (?,?,?,?,?,?)", row)

        await self._submit(op)

    async def get_agent_keys(self, org: str, agents: Sequence[str]) -> list[AgentKeyRecord]:
        wanted = sorted(set(agents))

        def q(c: sqlite3.Connection) -> list[AgentKeyRecord]:
            out = []
            for agent in wanted:
                row = c.execute(
                    "SELECT * FROM agent_keys WHERE org = ? AND agent = ?", (org, agent)
                ).fetchone()
                if row is not None:
                    out.append(AgentKeyRecord(*row))
            return out

        return await self._read(q)

    async def put_group_keys(self, records: Sequence[GroupKeyRecord]) -> None:
        rows = [
            (
                r.org,
                r.conversation_id,
                r.epoch,
                r.agent,
                r.sealed_key,
                r.sealed_by,
                r.signature,
                r.created_ms,
            )
            for r in records
        ]

        def op(c: sqlite3.Connection) -> None:
            c.executemany("INSERT OR REPLACE INTO group_keys VALUES (?,?,?,?,?,?,?,?)", rows)

        await self._submit(op)

    async def get_group_keys(
        self, org: str, conversation_id: str, agent: str, min_epoch: int
    ) -> list[GroupKeyRecord]:
        def q(c: sqlite3.Connection) -> list[GroupKeyRecord]:
            rows = c.execute(
                "SELECT * FROM group_keys WHERE org = ? AND conversation_id = ? AND agent = ? "
                "AND epoch >= ? ORDER BY epoch",
                (org, conversation_id, agent, min_epoch),
            )
            return [GroupKeyRecord(*r) for r in rows]

        return await self._read(q)
