"""The Python client flags a Publish frame ``fresh`` only on the first send of events whose ids
it generated: never a resend after a broken stream, never a frame with a caller's id or
CloudEvent (the broker then skips the cluster's dedup lookup for it)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lockgate.broker.testing import run_broker
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from lockgate.clients import Client
from tests.support import eventually

pytestmark = pytest.mark.e2e


class _Recording:
    """A Publish call that keeps every frame written on it (parsed)."""

    def __init__(self, call: Any, written: list[broker_pb2.PublishRequest]) -> None:
        self.call = call
        self.written = written

    async def write(self, raw: bytes) -> None:
        self.written.append(broker_pb2.PublishRequest.FromString(raw))
        await self.call.write(raw)

    def __aiter__(self) -> AsyncIterator[broker_pb2.PublishResponse]:
        return self.call.__aiter__()  # type: ignore[no-any-return]

    def cancel(self) -> bool:
        return self.call.cancel()  # type: ignore[no-any-return]


def _record(c: Client) -> list[broker_pb2.PublishRequest]:
    publisher = c._publisher
    assert publisher is not None
    written: list[broker_pb2.PublishRequest] = []
    opener = publisher._open_call
    publisher._open_call = lambda: _Recording(opener(), written)
    return written


async def test_only_first_sends_of_generated_ids_are_fresh() -> None:
    async with run_broker() as broker, Client(broker.target) as c:
        written = _record(c)
        await c.publish("f.a", 1)
        await c.publish("f.b", 2, id="mine")
        await c.publish_batch("f.c", ["x", {"y": 1}, b"z"])
        own = cloudevent_pb2.CloudEvent(id="ce-1", source="/s", spec_version="1.0", type="t")
        await c.publish_batch("f.d", ["x", own])
        assert [(f.subject, f.fresh) for f in written] == [
            ("f.a", True),
            ("f.b", False),
            ("f.c", True),
            ("f.d", False),
        ]

        # A frame the broker never answered is sent again after the stream broke: not fresh.
        assert broker.proc.pid is not None
        broker.proc.send_signal(signal.SIGSTOP)
        sent = len(written)
        pending = [asyncio.ensure_future(c.publish("f.e", i)) for i in range(50)]
        await eventually(lambda: len(written) > sent, what="the frame is written")
        await broker.kill()  # stopped, it never answered
        await broker.restart()
        ids = await asyncio.wait_for(asyncio.gather(*pending), 20)
        seen: set[str] = set()
        resends = 0
        for frame in written[sent:]:
            events = {e.id for e in frame.events}
            if events & seen:  # a resend: the same events, never flagged
                assert events <= seen and not frame.fresh
                resends += 1
            else:
                assert frame.fresh
            seen |= events
        assert resends >= 1 and len(seen) == 50
        stored = [e.id async for e in c.query_events("f.e", page_size=100)]
        assert sorted(ids) == stored and len(set(ids)) == 50
