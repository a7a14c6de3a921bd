"""A tiny in-process stand-in for the broker's gRPC API, for client tests that need no server.

It assigns ids, dedups on (source, id), routes to exact-subject or ``>`` subscribers, answers
requests with NO_RESPONDERS when nobody listens, and counts frames. ``stop()``/``start()`` on the
same port simulate a broker restart for reconnect tests. Not a broker: no persistence, no policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from broker.v1 import broker_pb2, broker_pb2_grpc


def rich_status(code: grpc.StatusCode, reason: str, message: str, **meta: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain="lockgate.dev", metadata=meta)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(status)


def matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


class FakeBroker(broker_pb2_grpc.BrokerServiceServicer):
    def __init__(self) -> None:
        self.port = 0
        self.server: grpc.aio.Server | None = None
        self.next_id = 1
        self.seen: dict[tuple[str, str], int] = {}
        self.log: list[tuple[int, str, Any]] = []
        self.frames = 0
        self.subs: list[tuple[str, asyncio.Queue[broker_pb2.Delivery]]] = []
        self.acks: list[int] = []
        self.hold_responses = False  # stop answering publishes (to test resend on restart)
        self.auth: list[str] = []
        self.required_key: str | None = None  # when set, other keys get UNAUTHENTICATED

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = grpc.aio.server()
        broker_pb2_grpc.add_BrokerServiceServicer_to_server(self, self.server)  # type: ignore[no-untyped-call]
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None

    def _store(self, subject: str, ev: Any) -> tuple[int, bool]:
        key = (ev.source, ev.id)
        if key in self.seen:
            return self.seen[key], True
        eid = self.next_id
        self.next_id += 1
        self.seen[key] = eid
        self.log.append((eid, subject, ev))
        for pattern, queue in self.subs:
            if matches(pattern, subject):
                queue.put_nowait(broker_pb2.Delivery(id=eid, subject=subject, event=ev, attempt=1))
        return eid, False

    async def Publish(
        self, request_iterator: AsyncIterator[broker_pb2.PublishRequest], context: Any
    ) -> AsyncIterator[broker_pb2.PublishResponse]:
        md = dict(context.invocation_metadata())
        self.auth.append(md.get("authorization", ""))
        if self.required_key and md.get("authorization") != f"Bearer {self.required_key}":
            await context.abort_with_status(
                rich_status(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", "unknown API key")
            )
        async for req in request_iterator:
            self.frames += 1
            resp = broker_pb2.PublishResponse(batch_id=req.batch_id)
            for i, ev in enumerate(req.events):
                if ev.type == "reject":
                    resp.ids.append(0)
                    resp.errors.add(index=i, reason="POLICY_DENIED", message="denied by rule r1")
                    continue
                eid, dup = self._store(req.subject, ev)
                resp.ids.append(eid)
                if dup:
                    resp.duplicate_indexes.append(i)
            if self.hold_responses:
                continue
            yield resp

    async def Subscribe(
        self, request_iterator: AsyncIterator[broker_pb2.SubscribeRequest], context: Any
    ) -> AsyncIterator[broker_pb2.SubscribeResponse]:
        it = request_iterator.__aiter__()
        first = await it.__anext__()
        pattern = first.open.pattern
        if pattern.startswith("!"):
            await context.abort_with_status(
                rich_status(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SUBJECT", "bad pattern")
            )
        queue: asyncio.Queue[broker_pb2.Delivery] = asyncio.Queue()
        entry = (pattern, queue)
        self.subs.append(entry)

        async def read_acks() -> None:
            async for req in it:
                if req.HasField("ack"):
                    self.acks.extend(req.ack.ids)

        reader = asyncio.ensure_future(read_acks())
        try:
            yield broker_pb2.SubscribeResponse(
                subscribed=broker_pb2.Subscribed(name=first.open.durable or "eph-1")
            )
            while True:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                yield broker_pb2.SubscribeResponse(deliveries=batch)
        finally:
            reader.cancel()
            self.subs.remove(entry)

    async def Request(self, request: broker_pb2.RequestRequest, context: Any) -> Any:
        await context.abort_with_status(
            rich_status(grpc.StatusCode.NOT_FOUND, "NO_RESPONDERS", "nobody listens on x")
        )
