"""The grpcio floor: a minimal grpcio relay with the broker's wire, and nothing else.

``python -m bench.grpc_floor PORT`` serves ``broker.v1.BrokerService/Publish`` and
``/Subscribe`` on raw bytes: each publish frame is parsed, answered with ids, and forwarded to
every subscriber stream as delivery frames; no validation, policy, dedup, store or telemetry.
What the broker adds is what it costs beyond this; what this costs is grpcio's own, and no
Python broker on grpcio goes below it (see bench/README.md, the ``floor`` scenarios).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import AsyncIterator

import grpc

from lockgate.broker import wire
from lockgate.broker.v1 import broker_pb2

_ids = itertools.count(1 << 60)
_subscribers: set[asyncio.Queue[bytes]] = set()


async def publish(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
    async for raw in requests:
        req = broker_pb2.PublishRequest.FromString(raw)
        events = list(req.events)
        ids = [next(_ids) for _ in events]
        body = b"".join(
            wire.delivery_frames(
                ids, wire.subject_field(req.subject), [e.SerializeToString() for e in events]
            )
        )
        for queue in _subscribers:
            queue.put_nowait(body)
        yield broker_pb2.PublishResponse(batch_id=req.batch_id, ids=ids).SerializeToString()


async def subscribe(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
    await anext(aiter(requests))  # the open message
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    _subscribers.add(queue)
    try:
        yield wire.subscribed_frame("floor", 0)
        while True:
            yield await queue.get()
    finally:
        _subscribers.discard(queue)


async def main(port: int) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ]
    )
    handlers = {
        "Publish": grpc.stream_stream_rpc_method_handler(publish),
        "Subscribe": grpc.stream_stream_rpc_method_handler(subscribe),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("broker.v1.BrokerService", handlers),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("floor ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1])))
