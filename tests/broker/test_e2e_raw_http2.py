"""A raw HTTP/2 client that opens a Subscribe stream and never opens its flow-control window
(issue 8, resource exhaustion): grpc stops sending once the window is full, the subscriber's
queue fills to its byte budget, and the broker cuts it off instead of buffering whatever is
published (the trailers stay behind the blocked data, so the broker's log is the witness)."""

from __future__ import annotations

import asyncio
import struct
import tempfile
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from lockgate.broker.testing import run_broker
from lockgate.broker.v1 import broker_pb2
from tests.broker.e2e_kit import Stubs, event, publish_batches, unique
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

BUDGET = 2 << 20


async def test_a_raw_client_that_never_opens_its_window(tmp_path: Path) -> None:
    conf = tmp_path / "budget.toml"
    conf.write_text(f"[broker]\nsubscriber_max_bytes = {BUDGET}\n")
    with tempfile.TemporaryDirectory(prefix="lockgate-h2-") as data_dir:
        async with run_broker(data_dir=data_dir, extra_args=["--config", str(conf)]) as b:
            subject = unique("window")
            reader, writer = await asyncio.open_connection(b.host, b.port)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            sid = conn.get_next_available_stream_id()
            conn.send_headers(
                sid,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", "/broker.v1.BrokerService/Subscribe"),
                    (":authority", b.target),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ],
            )
            opened = broker_pb2.SubscribeRequest(
                open=broker_pb2.SubscribeOpen(pattern=subject, max_in_flight=100_000)
            ).SerializeToString()
            conn.send_data(sid, b"\0" + struct.pack(">I", len(opened)) + opened)
            writer.write(conn.data_to_send())
            received = 0

            async def pump() -> None:
                # Reads the socket (answering pings) but never acknowledges data, so neither
                # the stream's nor the connection's window ever opens again.
                nonlocal received
                while data := await reader.read(65536):
                    for ev in conn.receive_data(data):
                        if isinstance(ev, h2.events.DataReceived):
                            received += len(ev.data)
                    if out := conn.data_to_send():
                        writer.write(out)

            task = asyncio.create_task(pump())
            try:
                await eventually(lambda: received > 0, timeout=10)  # the 'subscribed' frame
                async with grpc.aio.insecure_channel(b.target) as ch:
                    batches = [[event(b"x" * 60_000) for _ in range(16)] for _ in range(40)]
                    responses = await publish_batches(Stubs(ch).broker, subject, batches)
                assert all(not r.errors for r in responses)

                def cut_off() -> bool:
                    return any(b"slow consumer" in line for line in b.output)

                await eventually(cut_off, timeout=10)
                assert received <= 65_535  # the initial window, and not a byte more
            finally:
                task.cancel()
                writer.close()
