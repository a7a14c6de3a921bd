"""The backbone registry keeps an endpoint's credentials (stored, used for routing) and never
shows them: reads carry the endpoint redacted, and an update that sends it back as read keeps
them. Against the real SQLite store; the gRPC, HTTP and CLI reads are in
test_e2e_registry_config."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from lockgate.broker.audit import AuditLog
from lockgate.broker.errors import InvalidArgument
from lockgate.broker.registry import BackboneRegistry
from lockgate.broker.store import BackboneRecord
from lockgate.broker.store.sqlite import SqliteStore

SECRET = "nats://ops:s3cr3t@127.0.0.1:4222"
SHOWN = "nats://<redacted>@127.0.0.1:4222"


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path), fsync="never")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_reads_show_no_credentials_and_routing_uses_them(store: SqliteStore) -> None:
    registry = BackboneRegistry(store, AuditLog(None), lambda _: None)
    created = await registry.create(BackboneRecord("eu-1", SECRET, orgs=("acme",)))
    assert created.endpoint == SHOWN
    assert (await registry.get("eu-1")).endpoint == SHOWN
    assert [r.endpoint for r in await registry.list()] == [SHOWN]
    stored = await store.get_backbone("eu-1")
    assert stored is not None and stored.endpoint == SECRET
    pinned = registry.backbone_for("acme")
    assert pinned is not None and pinned.endpoint == SECRET


async def test_an_update_sending_the_endpoint_as_read_keeps_the_credentials(
    store: SqliteStore,
) -> None:
    registry = BackboneRegistry(store, AuditLog(None), lambda _: None)
    await registry.create(BackboneRecord("eu-1", SECRET, orgs=("acme",)))
    read = await registry.get("eu-1")  # what `lockgate backbones update` starts from
    updated = await registry.update(dataclasses.replace(read, status="degraded"))
    assert (updated.endpoint, updated.status) == (SHOWN, "degraded")
    stored = await store.get_backbone("eu-1")
    assert stored is not None and (stored.endpoint, stored.status) == (SECRET, "degraded")

    # The placeholder on another host has no credentials to keep: refused, nothing changes.
    moved = dataclasses.replace(read, endpoint="nats://<redacted>@10.0.0.9:4222")
    with pytest.raises(InvalidArgument) as refused:
        await registry.update(moved)
    assert refused.value.metadata == {"field": "endpoint"}
    assert "s3cr3t" not in refused.value.message
    stored = await store.get_backbone("eu-1")
    assert stored is not None and stored.endpoint == SECRET

    # New credentials in full replace the old ones.
    fresh = "nats://ops:n3w@127.0.0.1:4222"
    await registry.update(dataclasses.replace(read, endpoint=fresh))
    stored = await store.get_backbone("eu-1")
    assert stored is not None and stored.endpoint == fresh
