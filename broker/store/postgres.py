"""The PostgreSQL metadata store of cluster mode: every role of :class:`broker.store.Store`
but the :class:`~broker.store.EventLog` (the log is on JetStream), shared by every node.

``PgStore`` is composed of one class per group of roles, each on ``pg_engine.PgDatabase``
(the pool, the ``metadata`` migrations of ``postgres_schema.py``, the group commit):
``PgConsumerState`` and ``PgDeadLetters`` (``postgres_consumers.py``), :class:`PgKeys`,
:class:`PgPolicyVersions` and :class:`PgAudit` (here). A cluster store is the JetStream log
plus a ``PgStore``; the message logger's history is its own component.

Writes run through one group commit per node, in call order. Across nodes PostgreSQL's
transactions decide, and the orderings the roles promise hold as follows:

- audit ids come from a sequence (an identity column): increasing in write order for the
  records of one node (its writer is serial), never reused; records written by two nodes
  at the same moment may commit in the other order than their ids, so a reader paging by
  id right then can pass over the one that committed second. The audit log is read after
  the fact, so this is accepted rather than paid for with a table lock.
- a key rotation, and a policy version with its activation, are each one transaction.

Example::

    store = PgStore("postgresql://lockgate@db/lockgate")
    await store.open()   # connects and migrates; PostgreSQL away: Unavailable
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg

from lockgate.broker.store import (
    ApiKeyRecord,
    AuditQuery,
    AuditRecord,
    PolicyVersionRecord,
    audit_sql,
)
from lockgate.broker.store.pg_engine import COMMAND_TIMEOUT, PgDatabase
from lockgate.broker.store.postgres_consumers import PgConsumerState, PgDeadLetters
from lockgate.broker.store.postgres_conversations import PgConversations
from lockgate.broker.store.postgres_meta import PgRegistry
from lockgate.broker.store.postgres_schema import STEPS

__all__ = ["PgAudit", "PgKeys", "PgPolicyVersions", "PgStore"]

_KEY_COLUMNS = (
    "key_id, secret_hash, org, agent, roles, created_ms, revoked, expires_ms, replaced_by"
)
_PUT_KEY = (
    f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
    "ON CONFLICT (key_id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash, "
    "org = EXCLUDED.org, agent = EXCLUDED.agent, roles = EXCLUDED.roles, "
    "created_ms = EXCLUDED.created_ms, revoked = EXCLUDED.revoked, "
    "expires_ms = EXCLUDED.expires_ms, replaced_by = EXCLUDED.replaced_by"
)


def _key_row(r: ApiKeyRecord) -> tuple[object, ...]:
    return (
        r.key_id,
        r.secret_hash,
        r.org,
        r.agent,
        list(r.roles),
        r.created_ms,
        r.revoked,
        r.expires_ms,
        r.replaced_by,
    )


def _key(row: asyncpg.Record) -> ApiKeyRecord:
    return ApiKeyRecord(
        row["key_id"],
        row["secret_hash"],
        row["org"],
        row["agent"],
        tuple(row["roles"]),
        row["created_ms"],
        row["revoked"],
        row["expires_ms"],
        row["replaced_by"],
    )


class PgKeys(PgDatabase):
    """The :class:`broker.store.KeyStore` role."""

    async def put_key(self, record: ApiKeyRecord) -> None:
        row = _key_row(record)

        async def op(c: asyncpg.Connection) -> None:
            await c.execute(_PUT_KEY, *row)

        await self._submit(op)

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        async def q(c: asyncpg.Connection) -> ApiKeyRecord | None:
            row = await c.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = $1", key_id)
            return None if row is None else _key(row)

        return await self._read("read a key", q)

    async def list_keys(self) -> list[ApiKeyRecord]:
        async def q(c: asyncpg.Connection) -> list[ApiKeyRecord]:
            sql = f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_ms, key_id"
            return [_key(r) for r in await c.fetch(sql)]

        return await self._read("read the keys", q)

    async def revoke_key(self, key_id: str) -> bool:
        async def op(c: asyncpg.Connection) -> bool:
            row = await c.fetchrow(
                "UPDATE api_keys SET revoked = true WHERE key_id = $1 RETURNING 1", key_id
            )
            return row is not None

        return bool(await self._submit(op))

    async def rotate_key(self, key_id: str, new: ApiKeyRecord, old_expires_ms: int) -> bool:
        row = _key_row(new)

        async def op(c: asyncpg.Connection) -> bool:
            # One transaction (the group commit's): the new key exists exactly when the old
            # one is marked replaced. An expiry already sooner than the grace end stays.
            found = await c.fetchrow(
                "UPDATE api_keys SET replaced_by = $1, expires_ms = CASE "
                "WHEN expires_ms > 0 AND expires_ms < $2 THEN expires_ms ELSE $2 END "
                "WHERE key_id = $3 AND NOT revoked RETURNING 1",
                new.key_id,
                old_expires_ms,
                key_id,
            )
            if found is None:
                return False
            await c.execute(_PUT_KEY, *row)
            return True

        return bool(await self._submit(op))


def _version(row: asyncpg.Record) -> PolicyVersionRecord:
    return PolicyVersionRecord(
        row["version"], row["created_ms"], row["origin"], json.loads(row["files"]), row["active"]
    )


class PgPolicyVersions(PgDatabase):
    """The :class:`broker.store.PolicyVersionStore` role: the global set is org ""."""

    async def save_policy_version(
        self, record: PolicyVersionRecord, *, activate: bool, org: str = ""
    ) -> None:
        files = json.dumps(record.files, sort_keys=True)

        async def op(c: asyncpg.Connection) -> None:
            # Once per content hash and org: saving a known version again (a rollback)
            # only activates it.
            await c.execute(
                "INSERT INTO policy_versions (org, version, created_ms, origin, files) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org, version) DO NOTHING",
                org,
                record.version,
                record.created_ms,
                record.origin,
                files,
            )
            if activate:
                await c.execute(
                    "UPDATE policy_versions SET active = (version = $2) "
                    "WHERE org = $1 AND (active OR version = $2)",
                    org,
                    record.version,
                )

        await self._submit(op)

    async def list_policy_versions(self, org: str = "") -> list[PolicyVersionRecord]:
        async def q(c: asyncpg.Connection) -> list[PolicyVersionRecord]:
            rows = await c.fetch(
                "SELECT version, created_ms, origin, files, active FROM policy_versions "
                "WHERE org = $1 ORDER BY created_ms DESC, n DESC",
                org,
            )
            return [_version(r) for r in rows]

        return await self._read("read the policy versions", q)

    async def active_org_policies(self) -> dict[str, PolicyVersionRecord]:
        async def q(c: asyncpg.Connection) -> dict[str, PolicyVersionRecord]:
            rows = await c.fetch(
                "SELECT org, version, created_ms, origin, files, active FROM policy_versions "
                "WHERE active AND org <> ''"
            )
            return {r["org"]: _version(r) for r in rows}

        return await self._read("read the policy versions", q)


class PgAudit(PgDatabase):
    """The :class:`broker.store.AuditStore` role (ids: see the module's note)."""

    async def append_audit(self, records: Sequence[AuditRecord]) -> None:
        rows = [audit_sql.row(r) for r in records]
        sql = audit_sql.insert(lambda n: f"${n}")

        async def op(c: asyncpg.Connection) -> None:
            # executemany runs the rows in order on one connection: ids follow the order.
            await c.executemany(sql, rows)

        if rows:
            await self._submit(op)

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        args: list[object] = []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        sql = audit_sql.select(query, arg)

        async def q(c: asyncpg.Connection) -> list[AuditRecord]:
            return [audit_sql.record(r) for r in await c.fetch(sql, *args)]

        return await self._read("read the audit log", q)

    async def trim_audit(self, before_ms: int) -> int:
        async def op(c: asyncpg.Connection) -> int:
            n = await c.fetchval(
                "WITH d AS (DELETE FROM audit WHERE time_ms < $1 RETURNING 1) "
                "SELECT count(*) FROM d",
                before_ms,
            )
            return int(n)

        return await self._submit(op)


class PgStore(
    PgConversations,
    PgConsumerState,
    PgDeadLetters,
    PgKeys,
    PgPolicyVersions,
    PgAudit,
    PgRegistry,
):
    """The metadata roles (:class:`broker.store.MetadataStore`) on PostgreSQL.

    ``pool``: share an open pool (the message logger's, say); otherwise :meth:`open`
    connects to ``dsn`` with up to ``max_size`` connections. A write or read that waits
    longer than ``command_timeout`` seconds for PostgreSQL (or for a free connection) is
    ``Unavailable``.
    """

    COMPONENT = "metadata"

    def __init__(
        self,
        dsn: str = "",
        *,
        pool: asyncpg.Pool | None = None,
        max_size: int = 10,
        command_timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        super().__init__(
            dsn,
            component=self.COMPONENT,
            steps=STEPS,
            pool=pool,
            max_size=max_size,
            command_timeout=command_timeout,
        )
