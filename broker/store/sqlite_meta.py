"""The backbone registry and the config store on the embedded engine (SQLite).

Both are small tables of metadata written rarely: every write is one operation of the group
commit, and checks that must hold with the write (an id taken, an org pinned twice, a
version number taken) run inside it and answer with a value rather than an exception (an
exception would fail the other writes of the same commit).
"""

from __future__ import annotations

import json
import sqlite3
import time

from lockgate.broker.store import BackboneRecord, ConfigVersionRecord, RegistryConflict
from lockgate.broker.store.sqlite_engine import SqliteEngine

__all__ = ["SqliteMetadata"]

_BACKBONE_COLUMNS = "id, endpoint, orgs, clusters, region, version, status, created_ms, updated_ms"
_CONFIG_COLUMNS = "version, created_ms, author, origin, settings, detail"


def _backbone(row: tuple[str, str, str, str, str, str, str, int, int]) -> BackboneRecord:
    return BackboneRecord(
        row[0],
        row[1],
        tuple(json.loads(row[2])),
        tuple(json.loads(row[3])),
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
    )


def _config(row: tuple[int, int, str, str, str, str]) -> ConfigVersionRecord:
    return ConfigVersionRecord(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5])


class SqliteMetadata(SqliteEngine):
    """The :class:`broker.store.RegistryStore` and :class:`broker.store.ConfigStore` roles."""

    # -- the backbone registry ------------------------------------------------------------

    async def put_backbone(
        self, record: BackboneRecord, *, create: bool
    ) -> RegistryConflict | None:
        now = int(time.time() * 1000)

        def op(c: sqlite3.Connection) -> RegistryConflict | None:
            row = c.execute(
                "SELECT created_ms FROM backbones WHERE id = ?", (record.id,)
            ).fetchone()
            if create and row is not None:
                return RegistryConflict("exists", backbone=record.id)
            if not create and row is None:
                return RegistryConflict("missing", backbone=record.id)
            for org in record.orgs:
                other = c.execute(
                    "SELECT backbone_id FROM backbone_orgs WHERE org = ? AND backbone_id != ?",
                    (org, record.id),
                ).fetchone()
                if other is not None:
                    return RegistryConflict("org", org, other[0])
            created = now if row is None else int(row[0])
            c.execute(
                f"INSERT OR REPLACE INTO backbones ({_BACKBONE_COLUMNS}) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    record.id,
                    record.endpoint,
                    json.dumps(list(record.orgs)),
                    json.dumps(list(record.clusters)),
                    record.region,
                    record.version,
                    record.status,
                    created,
                    now,
                ),
            )
            c.execute("DELETE FROM backbone_orgs WHERE backbone_id = ?", (record.id,))
            c.executemany(
                "INSERT INTO backbone_orgs VALUES (?, ?)", [(o, record.id) for o in record.orgs]
            )
            return None

        result = await self._enqueue(op)
        assert result is None or isinstance(result, RegistryConflict)
        return result

    async def get_backbone(self, backbone_id: str) -> BackboneRecord | None:
        def q(c: sqlite3.Connection) -> BackboneRecord | None:
            row = c.execute(
                f"SELECT {_BACKBONE_COLUMNS} FROM backbones WHERE id = ?", (backbone_id,)
            ).fetchone()
            return None if row is None else _backbone(row)

        return await self._read(q)

    async def list_backbones(self) -> list[BackboneRecord]:
        return await self._read(
            lambda c: [
                _backbone(r)
                for r in c.execute(f"SELECT {_BACKBONE_COLUMNS} FROM backbones ORDER BY id")
            ]
        )

    async def delete_backbone(self, backbone_id: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            c.execute("DELETE FROM backbone_orgs WHERE backbone_id = ?", (backbone_id,))
            return c.execute("DELETE FROM backbones WHERE id = ?", (backbone_id,)).rowcount > 0

        return bool(await self._enqueue(op))

    # -- the config store -----------------------------------------------------------------

    async def add_config_version(self, record: ConfigVersionRecord) -> bool:
        row = (
            record.version,
            record.created_ms,
            record.author,
            record.origin,
            json.dumps({p: dict(s) for p, s in record.settings.items()}, sort_keys=True),
            record.detail,
        )

        def op(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                f"INSERT OR IGNORE INTO config_versions ({_CONFIG_COLUMNS}) VALUES (?,?,?,?,?,?)",
                row,
            )
            return cur.rowcount > 0

        return bool(await self._enqueue(op))

    async def config_version(self, version: int = 0) -> ConfigVersionRecord | None:
        def q(c: sqlite3.Connection) -> ConfigVersionRecord | None:
            if version:
                row = c.execute(
                    f"SELECT {_CONFIG_COLUMNS} FROM config_versions WHERE version = ?", (version,)
                ).fetchone()
            else:
                row = c.execute(
                    f"SELECT {_CONFIG_COLUMNS} FROM config_versions ORDER BY version DESC LIMIT 1"
                ).fetchone()
            return None if row is None else _config(row)

        return await self._read(q)

    async def list_config_versions(self, limit: int = 100) -> list[ConfigVersionRecord]:
        return await self._read(
            lambda c: [
                _config(r)
                for r in c.execute(
                    f"SELECT {_CONFIG_COLUMNS} FROM config_versions ORDER BY version DESC LIMIT ?",
                    (max(1, limit),),
                )
            ]
        )
