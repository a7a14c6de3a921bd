"""NATS ingest (core, JetStream) and egress against the real NATS server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from lockgate.gateways.nats import JetStreamSource, NatsGateway, NatsSettings
from tests.gateways.gw_kit import (
    Local,
    accept_malformed,
    count_events,
    event,
    malformed_event,
    unique,
)
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


async def test_egress_skips_an_unencodable_event(
    local: Local, nc: NatsClient, nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event behind a malformed one still goes out; the malformed one is dead-lettered,
    so the egress durable has nothing left pending. Headers follow the NATS binding."""
    accept_malformed(monkeypatch)
    subject, out = unique("egb."), unique("out")
    got: list[Msg] = []

    async def on_msg(msg: Msg) -> None:
        got.append(msg)

    await nc.subscribe(out, cb=on_msg)
    await nc.flush()
    gw = NatsGateway(local.api, NatsSettings(url=nats_url, egress={subject: out}))
    await gw.start()
    try:
        ids = (await local.api.publish(None, subject, [malformed_event(1), event(2)])).ids
        await eventually(lambda: len(got) >= 1)
        headers = got[0].headers or {}
        assert headers["ce-id"].startswith("e2-")  # the good event (gw_kit ids: e<i>-...)
        assert headers["ce-datacontenttype"] == "application/json"
        assert "Content-Type" not in headers and "content-type" not in headers
        durable = next(n for (_, n) in local.broker.consumers if n.startswith("nats-egress"))
        dead = await eventually(lambda: _query(local, f"$dlq.{durable}"))
        assert [d.event.attributes["lockgateoriginalid"].ce_string for d in dead] == [str(ids[0])]
        consumer = local.broker.consumers[("default", durable)]
        await eventually(lambda: not consumer.pending)
        assert gw.metrics["unencodable"] == 1 and len(got) == 1
    finally:
        await gw.stop()


async def _query(local: Local, pattern: str) -> list[object]:
    events, _ = await local.api.query(None, pattern)
    return list(events)


async def test_ingest_reads_the_nats_binding_modes(
    local: Local, nc: NatsClient, nats_url: str
) -> None:
    src, subject = unique("nm"), unique("nm.")
    gw = NatsGateway(local.api, NatsSettings(url=nats_url, subjects={f"{src}.>": subject}))
    await gw.start()
    try:
        binary = {
            "ce-specversion": "1.0",
            "ce-id": "b1",
            "ce-source": "/n",
            "ce-type": "t",
            "ce-datacontenttype": "application/json",
            "ce-note": "%20padded",
        }
        await nc.publish(f"{src}.a", b'{"v": 1}', headers=binary)
        # Structured mode: the media type decides, whatever ce-* headers come along.
        doc = {"specversion": "1.0", "id": "s1", "source": "/n", "type": "t", "data": 2}
        structured = {"Content-Type": "application/cloudevents+json", "ce-id": "ignored"}
        await nc.publish(f"{src}.b", json.dumps(doc).encode(), headers=structured)
        await nc.flush()
        await eventually(lambda: _counted(local, subject, 2))
    finally:
        await gw.stop()
    events, _ = await local.api.query(None, subject)
    by_id = {e.event.id: e.event for e in events}
    assert by_id["b1"].attributes["datacontenttype"].ce_string == "application/json"
    assert by_id["b1"].attributes["note"].ce_string == " padded"
    assert by_id["b1"].text_data == '{"v": 1}' and by_id["s1"].text_data == "2"


async def _counted(local: Local, subject: str, n: int) -> bool:
    return await count_events(local.api, subject) >= n


async def test_jetstream_ingest_survives_library_errors(
    local: Local,
    nc: NatsClient,
    nats_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """nats-py's fetch() sometimes raises the built-in TimeoutError, and a connection can
    fail: the ingest loop logs, backs off and goes on (the server is real; only the
    library's errors are injected)."""
    from nats.js.client import JetStreamContext

    real_fetch = JetStreamContext.PullSubscription.fetch
    failures = [TimeoutError(), TimeoutError(), ConnectionResetError("connection reset")]

    async def flaky_fetch(self: object, *args: object, **kwargs: object) -> object:
        if failures:
            raise failures.pop(0)
        return await real_fetch(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(JetStreamContext.PullSubscription, "fetch", flaky_fetch)
    stream, src, subject = unique("S"), unique("jf"), unique("nf.")
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{src}.>"])
    try:
        gw = NatsGateway(
            local.api,
            NatsSettings(
                url=nats_url,
                jetstream=[JetStreamSource(stream, f"{src}.>", "lg", subject)],
                retry=0.1,
            ),
        )
        await gw.start()
        try:
            for i in range(5):
                await js.publish(f"{src}.x", json.dumps({"data": i}).encode())
            await eventually(lambda: _counted(local, subject, 5))
        finally:
            await gw.stop()
        assert not failures
        assert "gateway.ingest.error source=jetstream:" in caplog.text
        assert "ConnectionResetError" in caplog.text
    finally:
        await js.delete_stream(stream)
