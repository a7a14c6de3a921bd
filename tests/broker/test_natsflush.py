"""broker.natsflush against the real NATS server, through a proxy that records what the
client sends: the PING that :func:`processed` waits for goes out behind a SUB still queued
in nats-py (one ``flush()`` writes its PING ahead of it)."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse

import nats
import pytest
from nats.aio.msg import Msg

from lockgate.broker.natsflush import processed

pytestmark = pytest.mark.nats


async def _pipe(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bytearray | None
) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await src.read(65536):
            if record is not None:
                record.extend(data)
            dst.write(data)
            await dst.drain()
    dst.close()


async def _nothing(_msg: Msg) -> None:
    return None


async def test_processed_pings_behind_a_subscription_still_queued(nats_url: str) -> None:
    upstream = urllib.parse.urlsplit(nats_url)
    sent = bytearray()  # client to server, in order

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(upstream.hostname, upstream.port)
        await asyncio.gather(_pipe(reader, up_writer, sent), _pipe(up_reader, writer, None))

    proxy = await asyncio.start_server(forward, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    try:
        await nc.subscribe("natsflush.x", cb=_nothing)  # queued for nats-py's flusher task
        await processed(nc)
        sub, last_ping = bytes(sent).find(b"SUB natsflush.x"), bytes(sent).rfind(b"PING")
        assert 0 <= sub < last_ping, bytes(sent)
    finally:
        await nc.close()
        proxy.close()
