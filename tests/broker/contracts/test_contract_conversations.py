"""The conversation metadata contract (conversations, participants, receipts, key directory,
group keys), for every metadata backend."""

from __future__ import annotations

from lockgate.broker.store import (
    AgentKeyRecord,
    ConversationRecord,
    ConversationStore,
    GroupKeyRecord,
    MemberRecord,
)
from tests.broker.contracts.contract_stores import metadata, open_metadata

__all__ = ["metadata", "open_metadata"]


async def test_conversations_and_their_members(metadata: ConversationStore) -> None:
    owner = MemberRecord("ann", "owner", 10)
    rec = ConversationRecord(
        "acme",
        "c1",
        "group",
        "ann",
        10,
        (owner, MemberRecord("bob", "member", 11, "ann")),
        {"title": "ops"},
        history_for_new_members=True,
        open=True,
    )
    other = ConversationRecord(
        "globex", "c1", "direct", "zed", 12, (MemberRecord("zed", "owner", 12),)
    )
    await metadata.save_conversation(rec)
    await metadata.save_conversation(other)
    assert await metadata.get_conversation("acme", "c1") == rec
    assert await metadata.get_conversation("acme", "nope") is None
    # Saving again replaces the participants: bob left, cy joined, the epoch moved.
    moved = ConversationRecord(
        "acme",
        "c1",
        "group",
        "ann",
        10,
        (owner, MemberRecord("cy", "admin", 13, "ann")),
        {"title": "ops"},
        key_epoch=2,
        history_for_new_members=True,
        open=True,
    )
    await metadata.save_conversation(moved)
    assert await metadata.get_conversation("acme", "c1") == moved
    assert sorted(await metadata.load_conversations(), key=lambda r: r.org) == [moved, other]


async def test_receipts_only_move_forward(metadata: ConversationStore) -> None:
    r = await metadata.mark_receipt("acme", "c1", "bob", 5, 0, 100)
    assert (r.agent, r.delivered_id, r.read_id, r.updated_ms) == ("bob", 5, 0, 100)
    r = await metadata.mark_receipt("acme", "c1", "bob", 3, 7, 101)
    assert (r.delivered_id, r.read_id) == (7, 7)  # a read implies delivered; never back
    r = await metadata.mark_receipt("acme", "c1", "bob", 0, 2, 102)
    assert (r.delivered_id, r.read_id) == (7, 7)
    await metadata.mark_receipt("acme", "c1", "ann", 9, 1, 103)
    await metadata.mark_receipt("acme", "c2", "cy", 1, 1, 103)
    got = await metadata.list_receipts("acme", "c1")
    assert [(x.agent, x.delivered_id, x.read_id) for x in got] == [("ann", 9, 1), ("bob", 7, 7)]


async def test_key_directory_and_group_keys(metadata: ConversationStore) -> None:
    k1 = AgentKeyRecord("acme", "ann", b"p" * 32, b"i" * 32, b"s" * 64, 1)
    await metadata.put_agent_key(k1)
    await metadata.put_agent_key(
        AgentKeyRecord("globex", "bob", b"q" * 32, b"j" * 32, b"t" * 64, 1)
    )
    assert await metadata.get_agent_keys("acme", ["ann", "bob", "ann"]) == [k1]
    k2 = AgentKeyRecord("acme", "ann", b"P" * 32, b"i" * 32, b"S" * 64, 2)
    await metadata.put_agent_key(k2)
    assert await metadata.get_agent_keys("acme", ["ann"]) == [k2]
    envs = [
        GroupKeyRecord("acme", "c1", e, who, bytes([e]) * 48, "ann", b"", 10 + e)
        for e in (1, 2)
        for who in ("ann", "bob")
    ]
    await metadata.put_group_keys(envs)
    got = await metadata.get_group_keys("acme", "c1", "bob", 0)
    assert [(g.epoch, g.sealed_key[:1]) for g in got] == [(1, b"\x01"), (2, b"\x02")]
    assert [g.epoch for g in await metadata.get_group_keys("acme", "c1", "bob", 2)] == [2]
    assert await metadata.get_group_keys("acme", "c2", "bob", 0) == []
