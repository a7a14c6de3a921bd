"""The contract of :class:`broker.backbone.Backbone`, for every implementation: fan-out,
request routing and replies, notices between the members that joined it, and messages and
calls addressed to one node (a durable's owner and its relays, ``broker.durable_relay``).

A cluster backbone (NATS) joins by adding its factory to ``BACKBONES``; the members here are
recording stand-ins for nodes, so the contract holds without a broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from lockgate.broker.backbone import Backbone, CloudEvent, Notice
from lockgate.broker.backbone.local import LocalBackbone
from lockgate.broker.errors import Unavailable
from tests.support import eventually

BACKBONES: dict[str, Callable[[], Backbone]] = {"local": LocalBackbone}


class Node:
    """A member that records what reaches it; it "listens" on ``subjects``."""

    def __init__(self, node_id: str, subjects: tuple[str, ...] = ()) -> None:
        self.node_id = node_id
        self.subjects = subjects
        self.batches: list[tuple[str, str, bytes, int, list[int]]] = []
        self.inboxes: dict[str, list[CloudEvent]] = {}
        self.notices: list[Notice] = []
        self.messages: list[bytes] = []

    def deliver(self, org: str, subject: str, frames: bytes, count: int, ids: list[int]) -> int:
        self.batches.append((org, subject, frames, count, ids))
        return 1 if subject in self.subjects else 0

    def listens(self, org: str, subject: str) -> bool:
        return subject in self.subjects

    def deliver_reply(self, org: str, inbox: str, event: CloudEvent) -> bool:
        if inbox not in self.inboxes:
            return False
        self.inboxes[inbox].append(event)
        return True

    def on_notice(self, notice: Notice) -> None:
        self.notices.append(notice)

    def on_message(self, body: bytes) -> None:
        self.messages.append(body)

    async def on_call(self, body: bytes) -> bytes:
        return b"answer to " + body


@pytest_asyncio.fixture(params=sorted(BACKBONES))
async def backbone(request: pytest.FixtureRequest) -> AsyncIterator[Backbone]:
    bb = BACKBONES[request.param]()
    await bb.open()
    yield bb
    await bb.close()


async def test_fan_out_reaches_every_member_in_order(backbone: Backbone) -> None:
    a, b = Node("a"), Node("b")
    backbone.join(a)
    backbone.join(b)
    for n in range(3):
        backbone.fan_out("o", "s.x", bytes([n]), 1, [n + 1])
    expected = [("o", "s.x", bytes([n]), 1, [n + 1]) for n in range(3)]
    await eventually(lambda: a.batches == expected and b.batches == expected)


async def test_a_member_that_left_gets_nothing(backbone: Backbone) -> None:
    a, b = Node("a"), Node("b")
    backbone.join(a)
    backbone.join(b)
    backbone.leave(b)
    backbone.fan_out("o", "s.x", b"f", 1, [1])
    await eventually(lambda: len(a.batches) == 1)  # the path ran
    assert b.batches == []


async def test_request_reaches_the_responders_and_the_reply_the_requester(
    backbone: Backbone,
) -> None:
    requester, responder, bystander = Node("req"), Node("resp", ("ask",)), Node("by")
    for n in (requester, responder, bystander):
        backbone.join(n)
    assert await backbone.request("req", "o", "ask", b"frame", [7])
    await eventually(lambda: responder.batches == [("o", "ask", b"frame", 1, [7])])
    assert requester.batches == bystander.batches == []
    requester.inboxes["$inbox.1"] = []
    reply = CloudEvent(id="r", source="s", spec_version="1.0", type="t")
    backbone.reply("o", "$inbox.1", reply)
    await eventually(lambda: requester.inboxes["$inbox.1"] == [reply])


async def test_request_without_responders_says_so(backbone: Backbone) -> None:
    backbone.join(Node("a", ("other",)))
    assert not await backbone.request("a", "o", "ask", b"frame", [7])


async def test_notices_reach_the_other_members(backbone: Backbone) -> None:
    a, b, c = Node("a"), Node("b"), Node("c")
    for n in (a, b, c):
        backbone.join(n)
    notice = Notice("durable_changed", "a", "org", "billing")
    backbone.notify(notice)
    await eventually(lambda: b.notices == [notice] and c.notices == [notice])
    assert a.notices == []


async def test_messages_reach_the_one_node_in_order(backbone: Backbone) -> None:
    a, b = Node("a"), Node("b")
    backbone.join(a)
    backbone.join(b)
    for n in range(5):
        backbone.send("b", bytes([n]))
    assert b.messages == []  # later, never in the sender's frame
    backbone.send("nobody", b"x")  # dropped
    await eventually(lambda: b.messages == [bytes([n]) for n in range(5)])
    assert a.messages == []


async def test_a_call_is_answered_by_the_one_node(backbone: Backbone) -> None:
    a, b = Node("a"), Node("b")
    backbone.join(a)
    backbone.join(b)
    assert await backbone.call("b", b"q", 5.0) == b"answer to q"
    backbone.leave(b)
    with pytest.raises(Unavailable):
        await backbone.call("b", b"q", 5.0)


class Silent(Node):
    async def on_call(self, body: bytes) -> bytes:
        await asyncio.Event().wait()  # never answers
        return b""


async def test_a_call_nobody_answers_in_time_is_unavailable(backbone: Backbone) -> None:
    backbone.join(Silent("s"))
    with pytest.raises(Unavailable) as exc:
        await backbone.call("s", b"q", 0.05)
    assert exc.value.reason == "UNAVAILABLE"
