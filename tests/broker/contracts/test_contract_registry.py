"""The backbone registry and config store contracts, for every metadata backend."""

from __future__ import annotations

import asyncio

from lockgate.broker.store import (
    BackboneRecord,
    ConfigStore,
    ConfigVersionRecord,
    RegistryConflict,
    RegistryStore,
)
from tests.broker.contracts.contract_stores import OpenMetadata, metadata, open_metadata

__all__ = ["metadata", "open_metadata"]


async def test_backbone_create_read_update_delete(metadata: RegistryStore) -> None:
    rec = BackboneRecord("eu-1", "nats://eu.example:4222", ("acme",), ("k8s-eu",), "eu", "2.10")
    assert await metadata.put_backbone(rec, create=True) is None
    got = await metadata.get_backbone("eu-1")
    assert got is not None and got.created_ms > 0 and got.updated_ms >= got.created_ms
    assert (got.endpoint, got.orgs, got.clusters, got.region, got.version, got.status) == (
        "nats://eu.example:4222",
        ("acme",),
        ("k8s-eu",),
        "eu",
        "2.10",
        "active",
    )
    assert await metadata.put_backbone(rec, create=True) == RegistryConflict("exists", "", "eu-1")
    await asyncio.sleep(0.002)  # a later update time to compare
    changed = BackboneRecord("eu-1", "nats://eu2.example:4222", ("acme", "globex"), status="down")
    assert await metadata.put_backbone(changed, create=False) is None
    after = await metadata.get_backbone("eu-1")
    assert after is not None and after.created_ms == got.created_ms
    assert after.updated_ms > got.updated_ms
    assert (after.endpoint, after.orgs, after.status) == (
        "nats://eu2.example:4222",
        ("acme", "globex"),
        "down",
    )
    missing = BackboneRecord("nope", "nats://x:4222")
    assert await metadata.put_backbone(missing, create=False) == RegistryConflict(
        "missing", "", "nope"
    )
    assert await metadata.get_backbone("nope") is None
    assert [b.id for b in await metadata.list_backbones()] == ["eu-1"]
    assert await metadata.delete_backbone("eu-1")
    assert not await metadata.delete_backbone("eu-1")
    assert await metadata.list_backbones() == []


async def test_an_org_is_pinned_to_one_backbone(metadata: RegistryStore) -> None:
    assert (
        await metadata.put_backbone(BackboneRecord("a", "nats://a:1", ("acme",)), create=True)
        is None
    )
    clash = BackboneRecord("b", "nats://b:1", ("globex", "acme"))
    assert await metadata.put_backbone(clash, create=True) == RegistryConflict("org", "acme", "a")
    assert await metadata.get_backbone("b") is None  # nothing written
    assert (
        await metadata.put_backbone(BackboneRecord("b", "nats://b:1", ("globex",)), create=True)
        is None
    )
    # Moving acme: unpin it from a first, then pin it to b.
    assert await metadata.put_backbone(BackboneRecord("a", "nats://a:1"), create=False) is None
    moved = BackboneRecord("b", "nats://b:1", ("globex", "acme"))
    assert await metadata.put_backbone(moved, create=False) is None
    # A deleted backbone frees its orgs.
    assert await metadata.delete_backbone("b")
    assert (
        await metadata.put_backbone(BackboneRecord("a", "nats://a:1", ("acme",)), create=False)
        is None
    )
    assert [(b.id, b.orgs) for b in await metadata.list_backbones()] == [("a", ("acme",))]


async def test_config_versions(metadata: ConfigStore) -> None:
    assert await metadata.config_version() is None
    assert await metadata.list_config_versions() == []
    one = ConfigVersionRecord(1, 1000, "default/ops", "set", {"": {"backoff": "4"}})
    assert await metadata.add_config_version(one)
    assert not await metadata.add_config_version(
        ConfigVersionRecord(1, 1001, "default/other", "set", {})
    )  # the number is taken: the other writer lost
    two = ConfigVersionRecord(
        2, 2000, "default/ops", "set", {"orders.>": {"publish_rate": "10"}}, "set orders.>"
    )
    assert await metadata.add_config_version(two)
    assert await metadata.config_version() == two
    assert await metadata.config_version(1) == one
    assert await metadata.config_version(7) is None
    assert [v.version for v in await metadata.list_config_versions()] == [2, 1]
    assert [v.version for v in await metadata.list_config_versions(limit=1)] == [2]


async def test_registry_and_config_survive_a_restart(open_metadata: OpenMetadata) -> None:
    async with open_metadata() as s:
        await s.put_backbone(BackboneRecord("eu-1", "nats://eu:4222", ("acme",)), create=True)
        await s.add_config_version(ConfigVersionRecord(1, 5, "cli", "set", {"": {"a": "1"}}))
    async with open_metadata() as s:
        got = await s.get_backbone("eu-1")
        assert got is not None and got.orgs == ("acme",)
        v = await s.config_version()
        assert v is not None and v.settings == {"": {"a": "1"}}
