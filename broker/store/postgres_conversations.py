"""Conversations' metadata on PostgreSQL (the :class:`broker.store.ConversationStore` role of
``PgStore``), in its own migration component ``conversations`` (:data:`STEPS`), the tables
mirroring SQLite's (``sqlite_conversations.py``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg

from lockgate.broker.store import (
    AgentKeyRecord,
    ConversationRecord,
    GroupKeyRecord,
    MemberRecord,
    ReceiptRecord,
)
from lockgate.broker.store.pg_engine import PgDatabase, migrate

__all__ = ["STEPS", "PgConversations"]

#: Migrations of component ``conversations``; never edit a shipped step, append one.
STEPS = (
    """
CREATE TABLE conversations (
    org text NOT NULL,
    id text NOT NULL,
    kind text NOT NULL,
    owner text NOT NULL,
    created_ms bigint NOT NULL,
    metadata jsonb NOT NULL,
    closed_ms bigint NOT NULL,
    key_epoch bigint NOT NULL,
    history_for_new boolean NOT NULL,
    open boolean NOT NULL,
    PRIMARY KEY (org, id)
);
CREATE TABLE conversation_members (
    org text NOT NULL,
    conversation_id text NOT NULL,
    agent text NOT NULL,
    role text NOT NULL,
    joined_ms bigint NOT NULL,
    invited_by text NOT NULL,
    PRIMARY KEY (org, conversation_id, agent)
);
CREATE TABLE conversation_receipts (
    org text NOT NULL,
    conversation_id text NOT NULL,
    agent text NOT NULL,
    delivered_id bigint NOT NULL,
    read_id bigint NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (org, conversation_id, agent)
);
CREATE TABLE agent_keys (
    org text NOT NULL,
    agent text NOT NULL,
    public_key bytea NOT NULL,
    identity_key bytea NOT NULL,
    signature bytea NOT NULL,
    published_ms bigint NOT NULL,
    PRIMARY KEY (org, agent)
);
CREATE TABLE group_keys (
    org text NOT NULL,
    conversation_id text NOT NULL,
    epoch bigint NOT NULL,
    agent text NOT NULL,
    sealed_key bytea NOT NULL,
    sealed_by text NOT NULL,
    signature bytea NOT NULL,
    created_ms bigint NOT NULL,
    PRIMARY KEY (org, conversation_id, agent, epoch)
);
""",
)

_CONV_COLUMNS = (
    "org, id, kind, owner, created_ms, metadata, closed_ms, key_epoch, history_for_new, open"
)
_MEMBER_COLUMNS = "org, conversation_id, agent, role, joined_ms, invited_by"


def _conversation(r: asyncpg.Record, members: list[MemberRecord]) -> ConversationRecord:
    return ConversationRecord(
        r["org"],
        r["id"],
        r["kind"],
        r["owner"],
        r["created_ms"],
        tuple(members),
        json.loads(r["metadata"]),
        r["closed_ms"],
        r["key_epoch"],
        r["history_for_new"],
        r["open"],
    )


def _member(r: asyncpg.Record) -> MemberRecord:
    return MemberRecord(r["agent"], r["role"], r["joined_ms"], r["invited_by"])


class PgConversations(PgDatabase):
    """The :class:`broker.store.ConversationStore` role; :meth:`open` also migrates its own
    component."""

    CONVERSATIONS_COMPONENT = "conversations"

    async def open(self) -> None:
        await super().open()
        try:
            await migrate(self.pool, self.CONVERSATIONS_COMPONENT, STEPS)
        except BaseException:
            await self.close()
            raise

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
            r.history_for_new_members,
            r.open,
        )
        members = [
            (r.org, r.conversation_id, m.agent, m.role, m.joined_ms, m.invited_by)
            for m in r.members
        ]

        async def op(c: asyncpg.Connection) -> None:
            await c.execute(
                f"INSERT INTO conversations ({_CONV_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10) "
                "ON CONFLICT (org, id) DO UPDATE SET kind = EXCLUDED.kind, "
                "owner = EXCLUDED.owner, metadata = EXCLUDED.metadata, "
                "closed_ms = EXCLUDED.closed_ms, key_epoch = EXCLUDED.key_epoch, "
                "history_for_new = EXCLUDED.history_for_new, open = EXCLUDED.open",
                *row,
            )
            await c.execute(
                "DELETE FROM conversation_members WHERE org = $1 AND conversation_id = $2",
                r.org,
                r.conversation_id,
            )
            if members:
                await c.executemany(
                    f"INSERT INTO conversation_members ({_MEMBER_COLUMNS}) "
                    "VALUES ($1, $2, $3, $4, $5, $6)",
                    members,
                )

        await self._submit(op)

    async def load_conversations(self) -> list[ConversationRecord]:
        async def q(c: asyncpg.Connection) -> list[ConversationRecord]:
            members: dict[tuple[str, str], list[MemberRecord]] = {}
            for m in await c.fetch(
                f"SELECT {_MEMBER_COLUMNS} FROM conversation_members ORDER BY joined_ms, agent"
            ):
                members.setdefault((m["org"], m["conversation_id"]), []).append(_member(m))
            rows = await c.fetch(
                f"SELECT {_CONV_COLUMNS} FROM conversations ORDER BY created_ms, id"
            )
            return [_conversation(r, members.get((r["org"], r["id"]), [])) for r in rows]

        return await self._read("read the conversations", q)

    async def get_conversation(self, org: str, conversation_id: str) -> ConversationRecord | None:
        async def q(c: asyncpg.Connection) -> ConversationRecord | None:
            row = await c.fetchrow(
                f"SELECT {_CONV_COLUMNS} FROM conversations WHERE org = $1 AND id = $2",
                org,
                conversation_id,
            )
            if row is None:
                return None
            ms = await c.fetch(
                f"SELECT {_MEMBER_COLUMNS} FROM conversation_members "
                "WHERE org = $1 AND conversation_id = $2 ORDER BY joined_ms, agent",
                org,
                conversation_id,
            )
            return _conversation(row, [_member(m) for m in ms])

        return await self._read("read a conversation", q)

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

        async def op(c: asyncpg.Connection) -> ReceiptRecord:
            row = await c.fetchrow(
                "INSERT INTO conversation_receipts VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (org, conversation_id, agent) DO UPDATE SET "
                "delivered_id = GREATEST(conversation_receipts.delivered_id, "
                "EXCLUDED.delivered_id), "
                "read_id = GREATEST(conversation_receipts.read_id, EXCLUDED.read_id), "
                "updated_ms = EXCLUDED.updated_ms "
                "RETURNING agent, delivered_id, read_id, updated_ms",
                org,
                conversation_id,
                agent,
                delivered,
                read_id,
                now_ms,
            )
            return ReceiptRecord(*row)

        return await self._submit(op)

    async def list_receipts(self, org: str, conversation_id: str) -> list[ReceiptRecord]:
        async def q(c: asyncpg.Connection) -> list[ReceiptRecord]:
            rows = await c.fetch(
                "SELECT agent, delivered_id, read_id, updated_ms FROM conversation_receipts "
                "WHERE org = $1 AND conversation_id = $2 ORDER BY agent",
                org,
                conversation_id,
            )
            return [ReceiptRecord(*r) for r in rows]

        return await self._read("read receipts", q)

    async def put_agent_key(self, record: AgentKeyRecord) -> None:
        r = record

        async def op(c: asyncpg.Connection) -> None:
            await c.execute(
                "INSERT INTO agent_keys VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (org, agent) DO UPDATE SET public_key = EXCLUDED.public_key, "
                "identity_key = EXCLUDED.identity_key, signature = EXCLUDED.signature, "
                "published_ms = EXCLUDED.published_ms",
                r.org,
                r.agent,
                r.public_key,
                r.identity_key,
                r.signature,
                r.published_ms,
            )

        await self._submit(op)

    async def get_agent_keys(self, org: str, agents: Sequence[str]) -> list[AgentKeyRecord]:
        async def q(c: asyncpg.Connection) -> list[AgentKeyRecord]:
            rows = await c.fetch(
                "SELECT org, agent, public_key, identity_key, signature, published_ms "
                "FROM agent_keys WHERE org = $1 AND agent = ANY($2::text[]) ORDER BY agent",
                org,
                list(agents),
            )
            return [AgentKeyRecord(*r) for r in rows]

        return await self._read("read the key directory", q)

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

        async def op(c: asyncpg.Connection) -> None:
            await c.executemany(
                "INSERT INTO group_keys VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                "ON CONFLICT (org, conversation_id, agent, epoch) DO UPDATE SET "
                "sealed_key = EXCLUDED.sealed_key, sealed_by = EXCLUDED.sealed_by, "
                "signature = EXCLUDED.signature, created_ms = EXCLUDED.created_ms",
                rows,
            )

        await self._submit(op)

    async def get_group_keys(
        self, org: str, conversation_id: str, agent: str, min_epoch: int
    ) -> list[GroupKeyRecord]:
        async def q(c: asyncpg.Connection) -> list[GroupKeyRecord]:
            rows = await c.fetch(
                "SELECT org, conversation_id, epoch, agent, sealed_key, sealed_by, signature, "
                "created_ms FROM group_keys WHERE org = $1 AND conversation_id = $2 "
                "AND agent = $3 AND epoch >= $4 ORDER BY epoch",
                org,
                conversation_id,
                agent,
                min_epoch,
            )
            return [GroupKeyRecord(*r) for r in rows]

        return await self._read("read group keys", q)
