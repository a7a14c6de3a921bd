"""NATS ingest (core, JetStream) and egress against the real NATS server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from gateways.nats import JetStreamSource, NatsGateway, NatsSettings
from tests.gateways.gw_kit import Local, count_events, event, unique
from tests.support import eventually

pytestmark = pytest.mark.nats


@pytest_asyncio.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


async def test_core_ingest_binary_structured_and_dead_letter(
    local: Local, nc: NatsClient, nats_url: str
) -> None:
    src, subject, dlq = unique("n"), unique("nb."), unique("ndlq")
    dead: list[Msg] = []

    async def on_dead(msg: Msg) -> None:
        dead.append(msg)

    await nc.subscribe(dlq, cb=on_dead)
    gw = NatsGateway(
        local.api,
        NatsSettings(url=nats_url, subjects={f"{src}.>": subject}, dead_letter=dlq),
    )
    await gw.start()
    try:
        headers = {
            "ce-specversion": "1.0",
            "ce-id": "n1",
            "ce-source": "/nats",
            "ce-type": "x.y",
            "Content-Type": "application/json",
            "ce-traceparent": "00-1-2-01",
        }
        await nc.publish(f"{src}.a", b'{"v": 1}', headers=headers)
        structured = {"specversion": "1.0", "id": "n2", "source": "/n", "type": "t", "data": 2}
        await nc.publish(f"{src}.b", json.dumps(structured).encode())
        await nc.publish(f"{src}.c", json.dumps({"data": {"z": 3}}).encode())
        await nc.publish(f"{src}.d", b"not json")
        await nc.flush()

        async def three() -> bool:
            return await count_events(local.api, subject) >= 3 and len(dead) >= 1

        await eventually(three)
    finally:
        await gw.stop()
    events, _ = await local.api.query(None, subject)
    by_id = {e.event.id: e.event for e in events}
    assert by_id["n1"].text_data == '{"v": 1}'
    assert by_id["n1"].attributes["traceparent"].ce_string == "00-1-2-01"
    assert by_id["n2"].text_data == "2"
    assert json.loads(dead[0].data)["reason"] == "MALFORMED_JSON"
    assert await count_events(local.api) == 3


async def test_jetstream_ingest_acks_after_store(
    local: Local, nc: NatsClient, nats_url: str
) -> None:
    stream, src, subject = unique("S"), unique("js"), unique("nj.")
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{src}.>"])
    try:
        for i in range(30):
            await js.publish(f"{src}.x", json.dumps({"data": i}).encode())
        await js.publish(f"{src}.x", b"[broken")
        gw = NatsGateway(
            local.api,
            NatsSettings(
                url=nats_url,
                jetstream=[JetStreamSource(stream, f"{src}.>", "lg", subject)],
                dead_letter=unique("dlq"),
            ),
        )
        await gw.start()
        try:

            async def done() -> bool:
                info = await js.consumer_info(stream, "lg")
                return info.num_ack_pending == 0 and info.num_pending == 0

            await eventually(lambda: _count(local, subject, 30))
            await eventually(done)
        finally:
            await gw.stop()
        events, _ = await local.api.query(None, subject)
        assert sorted(int(e.event.text_data) for e in events) == list(range(30))
        assert events[0].event.id == f"{stream}/1"
        assert gw.metrics["dead_lettered"] == 1
    finally:
        await js.delete_stream(stream)


async def _count(local: Local, subject: str, n: int) -> bool:
    return await count_events(local.api, subject) >= n


async def test_egress_to_nats(local: Local, nc: NatsClient, nats_url: str) -> None:
    subject, out = unique("eg."), unique("out")
    got: list[Msg] = []

    async def on_msg(msg: Msg) -> None:
        got.append(msg)

    await nc.subscribe(out, cb=on_msg)
    await nc.flush()
    gw = NatsGateway(local.api, NatsSettings(url=nats_url, egress={f"{subject}.>": out}))
    await gw.start()
    try:
        await local.api.publish(None, f"{subject}.a", [event(1, data='{"k": 1}')])

        async def arrived() -> bool:
            return len(got) >= 1

        await eventually(arrived)  # the event reached the NATS subscriber
        headers = got[0].headers or {}
        assert headers["ce-specversion"] == "1.0" and got[0].data == b'{"k": 1}'
        consumer = next(c for (o, n), c in local.broker.consumers.items() if "eg" in n)
        await eventually(lambda: _empty(consumer.pending))
    finally:
        await gw.stop()


async def _empty(d: dict[int, object]) -> bool:
    return not d
