"""The dead-letter, key and policy-version metadata contracts, for every metadata backend."""

from __future__ import annotations

from lockgate.broker.store import (
    ApiKeyRecord,
    DeadLetterRecord,
    DeadLetterStore,
    KeyStore,
    PolicyVersionRecord,
    PolicyVersionStore,
)
from tests.broker.contracts.contract_stores import metadata, open_metadata

__all__ = ["metadata", "open_metadata"]


async def test_dead_letters(metadata: DeadLetterStore) -> None:
    recs = [DeadLetterRecord("o", "d", i, 5, 1000 + i) for i in range(1, 6)]
    await metadata.add_dead_letters(recs)
    page = await metadata.list_dead_letters("o", "d", (0, 0), 3)
    assert [r.id for r in page] == [1, 2, 3]
    rest = await metadata.list_dead_letters("o", "", (page[-1].dead_ms, page[-1].id), 10)
    assert [r.id for r in rest] == [4, 5]
    assert await metadata.remove_dead_letters("o", "d", [2, 99]) == [2]
    assert sorted(await metadata.remove_dead_letters("o", "d", None)) == [1, 3, 4, 5]
    assert await metadata.list_dead_letters("o", "d", (0, 0), 10) == []


async def test_dead_letters_counted_for_many_durables_at_once(metadata: DeadLetterStore) -> None:
    recs = [DeadLetterRecord("o", "d", i, 5, 1000 + i) for i in range(1, 6)]
    recs += [DeadLetterRecord("o", "e", 1, 5, 1000), DeadLetterRecord("p", "d", 7, 5, 1000)]
    await metadata.add_dead_letters(recs)
    wanted = [("o", "d"), ("o", "e"), ("p", "d"), ("o", "none")]
    assert await metadata.count_dead_letters(wanted, 10) == {
        ("o", "d"): 5,
        ("o", "e"): 1,
        ("p", "d"): 1,
        ("o", "none"): 0,
    }
    capped = await metadata.count_dead_letters(wanted, 3)  # counted up to the cap only
    assert capped[("o", "d")] == 3 and capped[("o", "e")] == 1
    assert await metadata.count_dead_letters([], 10) == {}


async def test_keys(metadata: KeyStore) -> None:
    rec = ApiKeyRecord("k1", "hash", "acme", "a1", ("admin",), 1)
    await metadata.put_key(rec)
    assert await metadata.get_key("k1") == rec
    assert [k.key_id for k in await metadata.list_keys()] == ["k1"]
    assert await metadata.revoke_key("k1")
    got = await metadata.get_key("k1")
    assert got is not None and got.revoked
    assert not await metadata.revoke_key("nope")
    assert await metadata.get_key("nope") is None


async def test_key_expiry_and_rotation(metadata: KeyStore) -> None:
    old = ApiKeyRecord("k1", "h1", "acme", "a1", ("admin", "reader"), 1, expires_ms=9_000)
    await metadata.put_key(old)
    assert await metadata.get_key("k1") == old
    new = ApiKeyRecord("k2", "h2", "acme", "a1", ("admin", "reader"), 2, expires_ms=50_000)
    # The grace end is later than the old key's own expiry: the sooner one stays.
    assert await metadata.rotate_key("k1", new, 10_000)
    assert await metadata.get_key("k2") == new
    got = await metadata.get_key("k1")
    assert got is not None and (got.expires_ms, got.replaced_by) == (9_000, "k2")
    newer = ApiKeyRecord("k3", "h3", "acme", "a1", ("admin", "reader"), 3)
    assert await metadata.rotate_key("k2", newer, 20_000)
    got = await metadata.get_key("k2")
    assert got is not None and (got.expires_ms, got.replaced_by) == (20_000, "k3")
    assert [(k.key_id, k.expires_ms) for k in await metadata.list_keys()] == [
        ("k1", 9_000),
        ("k2", 20_000),
        ("k3", 0),
    ]
    # Unknown or revoked keys are not rotated, and nothing is stored for them.
    lost = ApiKeyRecord("k4", "h4", "acme", "a1", (), 4)
    assert not await metadata.rotate_key("nope", lost, 1)
    assert await metadata.revoke_key("k3")
    assert not await metadata.rotate_key("k3", lost, 1)
    assert await metadata.get_key("k4") is None


async def test_policy_versions(metadata: PolicyVersionStore) -> None:
    v1 = PolicyVersionRecord("aaa", 1, "dir", {"a.policy": "x"})
    v2 = PolicyVersionRecord("bbb", 2, "rpc", {"a.policy": "y"})
    await metadata.save_policy_version(v1, activate=True)
    await metadata.save_policy_version(v2, activate=True)
    await metadata.save_policy_version(v1, activate=True)  # a rollback re-activates, no new row
    versions = await metadata.list_policy_versions()
    assert [(v.version, v.active) for v in versions] == [("bbb", False), ("aaa", True)]
    assert versions[1].files == {"a.policy": "x"}
