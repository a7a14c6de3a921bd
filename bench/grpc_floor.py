"""The grpcio floor: a minimal grpcio relay with the broker's wire, and nothing else.

``python -m bench.grpc_floor PORT`` serves ``broker.v1.BrokerService/Publish``, ``/Subscribe``
and ``/RequestStream`` on raw bytes: each publish frame is parsed, answered with ids, and
forwarded to every subscriber stream as delivery frames; a request goes to one subscriber as a
delivery with a ``reply_to`` inbox, and a publish on that inbox answers it on the requester's
stream (the broker's four messages per round trip, and the reply's publish ack); no
validation, policy, dedup, store, timeout or telemetry.
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
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2

_ids = itertools.count(1 << 60)
_subscribers: set[asyncio.Queue[bytes]] = set()
# inbox -> the requester stream's outgoing queue and the request's id on it
_inboxes: dict[str, tuple[asyncio.Queue[bytes], int]] = {}


async def publish(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
    async for raw in requests:
        req = broker_pb2.PublishRequest.FromString(raw)
        events = list(req.events)
        ids = [next(_ids) for _ in events]
        if req.subject.startswith("$inbox."):
            _answer(req.subject, events[0])
            yield broker_pb2.PublishResponse(batch_id=req.batch_id, ids=ids).SerializeToString()
            continue
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


def _answer(inbox: str, event: cloudevent_pb2.CloudEvent) -> None:
    waiting = _inboxes.pop(inbox, None)
    if waiting is not None:
        queue, rid = waiting
        answer = broker_pb2.RequestStreamResponse(request_id=rid, event=event)
        queue.put_nowait(answer.SerializeToString())


async def request_stream(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    async def read() -> None:
        async for raw in requests:
            item = broker_pb2.RequestStreamRequest.FromString(raw)
            inbox = f"$inbox.floor.{next(_ids)}"
            _inboxes[inbox] = (answers, item.request_id)
            frame = wire.delivery_frame(
                next(_ids),
                wire.subject_field(item.request.subject),
                item.request.event.SerializeToString(),
                1,
                inbox,
            )
            for queue in _subscribers:  # one responder: the first
                queue.put_nowait(frame)
                break

    reader = asyncio.create_task(read())
    try:
        while True:
            yield await answers.get()
    finally:
        reader.cancel()


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
        "RequestStream": grpc.stream_stream_rpc_method_handler(request_stream),
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
