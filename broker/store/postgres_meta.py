"""The backbone registry and the config store on PostgreSQL (cluster mode).

Their tables are their own schema component, ``registry`` in ``lockgate_schema`` (migrated
at open beside the metadata store's ``metadata``), so they can grow without touching the
other's steps. As in SQLite (``sqlite_meta.py``), a refused write answers with a value; it
runs in a savepoint of the group commit, so a refusal undoes its own rows only. An org's
pin is a primary key (``backbone_orgs.org``): two nodes pinning one org to two backbones at
once cannot both succeed.
"""

from __future__ import annotations

import json
import time

import asyncpg

from lockgate.broker.store import BackboneRecord, ConfigVersionRecord, RegistryConflict
from lockgate.broker.store.pg_engine import PgDatabase, migrate

__all__ = ["COMPONENT", "STEPS", "PgRegistry"]

COMPONENT = "registry"
_V1 = """
CREATE TABLE backbones (
    id text PRIMARY KEY,
    endpoint text NOT NULL,
    orgs jsonb NOT NULL,
    clusters jsonb NOT NULL,
    region text NOT NULL,
    version text NOT NULL,
    status text NOT NULL,
    created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL
);
CREATE TABLE backbone_orgs (
    org text PRIMARY KEY,
    backbone_id text NOT NULL REFERENCES backbones (id) ON DELETE CASCADE
);
CREATE TABLE config_versions (
    version bigint PRIMARY KEY,
    created_ms bigint NOT NULL,
    author text NOT NULL,
    origin text NOT NULL,
    settings jsonb NOT NULL,
    detail text NOT NULL DEFAULT ''
);
"""
STEPS: tuple[str, ...] = (_V1,)
"""The component's migrations, in order; never edit a shipped one (append)."""

_BACKBONE_COLUMNS = "id, endpoint, orgs, clusters, region, version, status, created_ms, updated_ms"
_CONFIG_COLUMNS = "version, created_ms, author, origin, settings, detail"


class _Refused(Exception):
    def __init__(self, conflict: RegistryConflict) -> None:
        self.conflict = conflict


def _backbone(row: asyncpg.Record) -> BackboneRecord:
    return BackboneRecord(
        row["id"],
        row["endpoint"],
        tuple(json.loads(row["orgs"])),
        tuple(json.loads(row["clusters"])),
        row["region"],
        row["version"],
        row["status"],
        row["created_ms"],
        row["updated_ms"],
    )


def _config(row: asyncpg.Record) -> ConfigVersionRecord:
    return ConfigVersionRecord(
        row["version"],
        row["created_ms"],
        row["author"],
        row["origin"],
        json.loads(row["settings"]),
        row["detail"],
    )


async def _put(c: asyncpg.Connection, rec: BackboneRecord, create: bool, now: int) -> None:
    row = await c.fetchrow("SELECT created_ms FROM backbones WHERE id = $1 FOR UPDATE", rec.id)
    if create and row is not None:
        raise _Refused(RegistryConflict("exists", backbone=rec.id))
    if not create and row is None:
        raise _Refused(RegistryConflict("missing", backbone=rec.id))
    values = (
        rec.id,
        rec.endpoint,
        json.dumps(list(rec.orgs)),
        json.dumps(list(rec.clusters)),
        rec.region,
        rec.version,
        rec.status,
        now if row is None else row["created_ms"],
        now,
    )
    try:
        await c.execute(
            f"INSERT INTO backbones ({_BACKBONE_COLUMNS}) "
            "VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6, $7, $8, $9) "
            "ON CONFLICT (id) DO UPDATE SET endpoint = EXCLUDED.endpoint, orgs = EXCLUDED.orgs, "
            "clusters = EXCLUDED.clusters, region = EXCLUDED.region, "
            "version = EXCLUDED.version, status = EXCLUDED.status, "
            "updated_ms = EXCLUDED.updated_ms"
            if not create
            else f"INSERT INTO backbones ({_BACKBONE_COLUMNS}) "
            "VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6, $7, $8, $9)",
            *values,
        )
    except asyncpg.UniqueViolationError:  # created by another node meanwhile
        raise _Refused(RegistryConflict("exists", backbone=rec.id)) from None
    await c.execute("DELETE FROM backbone_orgs WHERE backbone_id = $1", rec.id)
    for org in rec.orgs:
        took = await c.fetchrow(
            "INSERT INTO backbone_orgs (org, backbone_id) VALUES ($1, $2) "
            "ON CONFLICT (org) DO NOTHING RETURNING 1",
            org,
            rec.id,
        )
        if took is None:
            other = await c.fetchval("SELECT backbone_id FROM backbone_orgs WHERE org = $1", org)
            raise _Refused(RegistryConflict("org", org, str(other)))


class PgRegistry(PgDatabase):
    """The :class:`broker.store.RegistryStore` and :class:`broker.store.ConfigStore` roles."""

    async def open(self) -> None:
        await super().open()
        try:
            await migrate(self.pool, COMPONENT, STEPS)
        except BaseException:
            await self.close()
            raise

    # -- the backbone registry ------------------------------------------------------------

    async def put_backbone(
        self, record: BackboneRecord, *, create: bool
    ) -> RegistryConflict | None:
        now = int(time.time() * 1000)

        async def op(c: asyncpg.Connection) -> RegistryConflict | None:
            try:
                async with c.transaction():  # a savepoint inside the group's transaction
                    await _put(c, record, create, now)
            except _Refused as refused:
                return refused.conflict
            return None

        return await self._submit(op)

    async def get_backbone(self, backbone_id: str) -> BackboneRecord | None:
        async def q(c: asyncpg.Connection) -> BackboneRecord | None:
            row = await c.fetchrow(
                f"SELECT {_BACKBONE_COLUMNS} FROM backbones WHERE id = $1", backbone_id
            )
            return None if row is None else _backbone(row)

        return await self._read("read a backbone", q)

    async def list_backbones(self) -> list[BackboneRecord]:
        async def q(c: asyncpg.Connection) -> list[BackboneRecord]:
            sql = f"SELECT {_BACKBONE_COLUMNS} FROM backbones ORDER BY id"
            return [_backbone(r) for r in await c.fetch(sql)]

        return await self._read("read the backbone registry", q)

    async def delete_backbone(self, backbone_id: str) -> bool:
        async def op(c: asyncpg.Connection) -> bool:
            row = await c.fetchrow("DELETE FROM backbones WHERE id = $1 RETURNING 1", backbone_id)
            return row is not None

        return bool(await self._submit(op))

    # -- the config store -----------------------------------------------------------------

    async def add_config_version(self, record: ConfigVersionRecord) -> bool:
        settings = json.dumps({p: dict(s) for p, s in record.settings.items()}, sort_keys=True)

        async def op(c: asyncpg.Connection) -> bool:
            row = await c.fetchrow(
                f"INSERT INTO config_versions ({_CONFIG_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5::jsonb, $6) ON CONFLICT (version) DO NOTHING "
                "RETURNING 1",
                record.version,
                record.created_ms,
                record.author,
                record.origin,
                settings,
                record.detail,
            )
            return row is not None

        return bool(await self._submit(op))

    async def config_version(self, version: int = 0) -> ConfigVersionRecord | None:
        async def q(c: asyncpg.Connection) -> ConfigVersionRecord | None:
            if version:
                row = await c.fetchrow(
                    f"SELECT {_CONFIG_COLUMNS} FROM config_versions WHERE version = $1", version
                )
            else:
                row = await c.fetchrow(
                    f"SELECT {_CONFIG_COLUMNS} FROM config_versions ORDER BY version DESC LIMIT 1"
                )
            return None if row is None else _config(row)

        return await self._read("read the config store", q)

    async def list_config_versions(self, limit: int = 100) -> list[ConfigVersionRecord]:
        async def q(c: asyncpg.Connection) -> list[ConfigVersionRecord]:
            rows = await c.fetch(
                f"SELECT {_CONFIG_COLUMNS} FROM config_versions ORDER BY version DESC LIMIT $1",
                max(1, limit),
            )
            return [_config(r) for r in rows]

        return await self._read("read the config store", q)
