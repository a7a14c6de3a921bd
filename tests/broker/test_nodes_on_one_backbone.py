"""Two nodes in one process on one :class:`LocalBackbone`: what a cluster backbone must
carry between nodes (ephemeral fan-out, request/reply, notices) goes through the seam, and
a worker id is held by one node at a time (a lease)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from lockgate.broker.auth import DEV_PRINCIPAL
from lockgate.broker.backbone import Notice
from lockgate.broker.backbone.local import LocalBackbone
from lockgate.broker.config import Config, ConfigError
from lockgate.broker.leases import LocalLeases
from lockgate.broker.node import Broker
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from tests.support import eventually


def event(eid: str) -> cloudevent_pb2.CloudEvent:
    return cloudevent_pb2.CloudEvent(id=eid, source="/n", spec_version="1.0", type="t")


def node(path: Path, backbone: LocalBackbone, leases: LocalLeases, worker: int) -> Broker:
    path.mkdir(exist_ok=True)
    config = Config(data_dir=str(path), worker_id=worker)
    store = SqliteStore(path, fsync="never")
    return Broker(config, store, backbone=backbone, leases=leases)


@pytest_asyncio.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Broker, Broker]]:
    backbone, leases = LocalBackbone(), LocalLeases()
    a = node(tmp_path / "a", backbone, leases, 1)
    b = node(tmp_path / "b", backbone, leases, 2)
    await a.start()
    await b.start()
    yield a, b
    await b.stop()
    await a.stop()


async def test_a_publish_on_one_node_reaches_subscribers_of_the_other(
    pair: tuple[Broker, Broker],
) -> None:
    a, b = pair
    sub = await b.subscribe_ephemeral(DEV_PRINCIPAL, "fan.>", "")
    out = await a.publish(DEV_PRINCIPAL, "fan.x", [event("1"), event("2")])
    body = await asyncio.wait_for(sub.outbox.take(), 5)
    assert body is not None
    assert [d.id for d in broker_pb2.SubscribeResponse.FromString(body).deliveries] == out.ids


async def test_a_request_on_one_node_is_answered_by_a_responder_on_the_other(
    pair: tuple[Broker, Broker],
) -> None:
    a, b = pair
    responder = await b.subscribe_ephemeral(DEV_PRINCIPAL, "ask.time", "")

    async def answer() -> None:
        body = await responder.outbox.take()
        assert body is not None
        [d] = broker_pb2.SubscribeResponse.FromString(body).deliveries
        out = await b.publish(DEV_PRINCIPAL, d.reply_to, [event("answer")])
        assert out.errors == []

    task = asyncio.create_task(answer())
    reply = await a.request(DEV_PRINCIPAL, "ask.time", event("question"), 5.0)
    await task
    assert reply.id == "answer"


async def test_durable_and_policy_changes_are_told_to_the_other_node(
    pair: tuple[Broker, Broker],
) -> None:
    a, b = pair
    heard: list[Notice] = []
    b.notice_listeners.append(heard.append)
    await a.create_durable(DEV_PRINCIPAL, "told", "n.>")
    a.policy.swap(None)
    await eventually(
        lambda: (
            [(n.kind, n.origin) for n in heard]
            == [
                ("durable_changed", a.node_id),
                ("policy_swapped", a.node_id),
            ]
        )
    )
    assert heard[0].name == "told"


async def test_a_worker_id_is_held_by_one_node(tmp_path: Path) -> None:
    backbone, leases = LocalBackbone(), LocalLeases()
    first = node(tmp_path / "a", backbone, leases, 7)
    await first.start()
    try:
        second = node(tmp_path / "b", backbone, leases, 7)
        with pytest.raises(ConfigError) as exc:
            await second.start()
        assert "worker id 7 is in use by another node" in exc.value.message
    finally:
        await first.stop()
    again = node(tmp_path / "b", backbone, leases, 7)  # released at stop
    await again.start()
    await again.stop()
