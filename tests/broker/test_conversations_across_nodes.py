"""Conversations on two nodes sharing a store and a backbone (as cluster nodes share
PostgreSQL and NATS): a membership change on one node reaches the other's read decisions
through its notice, so a member removed on node A stops receiving on node B."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from pathlib import Path
from typing import cast

from lockgate.broker.api import decode_deliveries
from lockgate.broker.auth import Principal
from lockgate.broker.backbone.local import LocalBackbone
from lockgate.broker.config import Config
from lockgate.broker.leases import LocalLeases
from lockgate.broker.node import Broker
from lockgate.broker.store import Store
from lockgate.broker.store.sqlite import SqliteStore
from tests.broker.test_durables_across_nodes import SharedStore
from tests.support import eventually

ANN = Principal("acme", "ann", frozenset())
BOB = Principal("acme", "bob", frozenset())


async def test_membership_changes_reach_the_other_node(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path, fsync="never")
    await store.open()
    backbone, leases = LocalBackbone(), LocalLeases()
    nodes = [
        Broker(
            Config(data_dir=str(tmp_path), worker_id=i + 1),
            cast(Store, SharedStore(store)),
            backbone=backbone,
            leases=leases,
        )
        for i in range(2)
    ]
    for n in nodes:
        await n.start()
    try:
        a, b = nodes
        rec = await a.conversations.create(ANN, "group", ["bob"], {})
        subject = f"$conv.{rec.conversation_id}.msg"
        await eventually(lambda: b.may_read(BOB, subject), what="node B knows bob")
        assert b.conversations.conversation(BOB, rec.conversation_id).owner == "ann"
        await a.conversations.remove(ANN, rec.conversation_id, "bob")
        await eventually(lambda: not b.may_read(BOB, subject), what="node B forgot bob")
        assert b.may_read(ANN, subject)
    finally:
        for n in nodes:
            await n.stop()
        await store.close()


async def test_presence_is_shared_and_a_dead_node_lets_it_run_out(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path, fsync="never")
    await store.open()
    backbone, leases = LocalBackbone(), LocalLeases()
    nodes = [
        Broker(
            Config(data_dir=str(tmp_path), worker_id=i + 1, presence_grace=0.5),
            cast(Store, SharedStore(store)),
            backbone=backbone,
            leases=leases,
        )
        for i in range(2)
    ]
    for n in nodes:
        await n.start()
    try:
        a, b = nodes
        rec = await a.conversations.create(ANN, "group", ["bob"], {})
        cid = rec.conversation_id
        await eventually(lambda: b.may_read(ANN, f"$conv.{cid}.msg"))

        async def bob_on_b() -> bool:
            got = dict(await b.conversations.presence_of(ANN, cid))
            return got["bob"].online

        assert not await bob_on_b()
        watch = await b.subscribe_ephemeral(ANN, f"$conv.{cid}.presence", "")
        await a.subscribe_ephemeral(BOB, "bob.inbox", "")  # bob is connected to node A
        await eventually(bob_on_b, what="node B sees bob online")
        # Node A dies: its tasks stop without releasing anything.
        for t in a._tasks:
            t.cancel()
        await eventually(lambda: _not(bob_on_b()), timeout=10, what="bob offline on B")
        # Node B announced it (A could not): online from A, then offline from B, once each.
        seen: list[str] = []

        async def collect() -> None:
            while (body := await watch.outbox.take()) is not None:
                for d in decode_deliveries(body):
                    body_ = json.loads(d.event.text_data)
                    seen.append(f"{body_['agent']} {body_['status']}")

        collector = asyncio.create_task(collect())
        await eventually(lambda: "bob offline" in seen, what="the offline notice")
        collector.cancel()
        assert seen == ["ann online", "bob online", "bob offline"]
    finally:
        for n in nodes:
            await n.stop()
        await store.close()


async def _not(value: Awaitable[bool]) -> bool:
    return not await value
