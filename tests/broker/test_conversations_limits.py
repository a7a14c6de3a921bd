"""The group limit comes from the config store when it sets one (live, globally or for
``$conv.>``), else from the node's ``max_group_members``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import pytest

from lockgate.broker.api import decode_deliveries
from lockgate.broker.auth import Principal
from lockgate.broker.config import Config
from lockgate.broker.configstore import ConfigChange
from lockgate.broker.errors import InvalidArgument, PermissionDenied, ResourceExhausted
from lockgate.broker.node import Broker
from lockgate.broker.policyhook import PolicyGate
from lockgate.broker.store.sqlite import SqliteStore
from tests.support import eventually

ANN = Principal("acme", "ann", frozenset())


async def test_the_config_store_sets_the_group_limit(tmp_path: Path) -> None:
    node = Broker(Config(data_dir=str(tmp_path), max_group_members=3), SqliteStore(tmp_path))
    await node.start()
    try:
        convs = node.conversations
        rec = await convs.create(ANN, "group", ["b", "c"], {})  # 3: the node's limit
        with pytest.raises(ResourceExhausted) as full:
            await convs.invite(ANN, rec.conversation_id, ["d"], "member")
        assert (full.value.reason, full.value.metadata["limit"]) == ("GROUP_FULL", "3")
        await node.settings.set([ConfigChange("", "max_group_members", "4")])
        await convs.invite(ANN, rec.conversation_id, ["d"], "member")
        await node.settings.set([ConfigChange("$conv.>", "max_group_members", "2")])
        with pytest.raises(ResourceExhausted) as scoped:
            await convs.create(ANN, "broadcast", ["b", "c"], {})
        assert scoped.value.metadata["limit"] == "2"
        with pytest.raises(InvalidArgument) as bad:
            await node.settings.set([ConfigChange("", "max_group_members", "1")])
        assert bad.value.reason == "INVALID_SETTING"
    finally:
        await node.stop()


async def test_a_durable_stream_counts_in_presence(tmp_path: Path) -> None:
    node = Broker(Config(data_dir=str(tmp_path), presence_grace=0.2), SqliteStore(tmp_path))
    await node.start()
    try:
        rec = await node.conversations.create(ANN, "group", ["bob"], {})
        bob = Principal("acme", "bob", frozenset())

        async def bob_online() -> bool:
            got = dict(await node.conversations.presence_of(ANN, rec.conversation_id))
            return got["bob"].online

        session = await node.subscribe_durable(bob, "bob-feed", "$conv.>")
        assert await bob_online()
        node.unbind_durable(bob, session)
        await eventually(lambda: _not(bob_online()), what="bob offline after the grace")
    finally:
        await node.stop()


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_default_deny_does_not_shut_conversations(tmp_path: Path) -> None:
    """An org under default deny still reads its conversations: the participant rule decides
    ``$conv.`` subjects, and no policy could name them."""
    node = Broker(
        Config(data_dir=str(tmp_path)), SqliteStore(tmp_path), PolicyGate(default_deny="*")
    )
    await node.start()
    try:
        rec = await node.conversations.create(ANN, "group", ["bob"], {})
        bob = Principal("acme", "bob", frozenset())
        sub = await node.subscribe_ephemeral(bob, "$conv.>", "")
        sent = await node.conversations.send(ANN, rec.conversation_id, b"x", "", {})
        body = await asyncio.wait_for(sub.outbox.take(), 10)
        assert body is not None and sent.id in [d.id for d in decode_deliveries(body)]
        with pytest.raises(PermissionDenied) as denied:  # the policies still rule the rest
            await node.subscribe_ephemeral(bob, "orders.>", "")
        assert denied.value.reason == "POLICY_DENIED"
    finally:
        await node.stop()
