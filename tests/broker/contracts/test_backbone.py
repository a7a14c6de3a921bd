"""The contract of :class:`broker.backbone.Backbone`, for every implementation: fan-out,
request routing and replies, notices between the members that joined it, and messages and
calls addressed to one node (a durable's owner and its relays, ``broker.durable_relay``).

A backbone joins by adding its factory to ``BACKBONES``; the members here are recording
stand-ins for nodes, so the contract holds without a broker. The NATS backbone runs it twice:
every member on one connection, and the members spread over two connections (two node
processes), so each promise is also kept between nodes.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from lockgate.broker.backbone import Backbone, CloudEvent, Interest, InterestWatcher, Notice
from lockgate.broker.backbone.local import LocalBackbone
from lockgate.broker.backbone.nats import NatsBackbone
from lockgate.broker.errors import Unavailable
from tests.support import eventually

Factory = Callable[[pytest.FixtureRequest], Awaitable[Backbone]]


async def _local(request: pytest.FixtureRequest) -> Backbone:
    return LocalBackbone()


def _nats(request: pytest.FixtureRequest, prefix: str) -> NatsBackbone:
    return NatsBackbone(request.getfixturevalue("nats_url"), prefix=prefix, answer_timeout=5)


async def _nats_one(request: pytest.FixtureRequest) -> Backbone:
    return _nats(request, f"t{secrets.token_hex(4)}")


async def _nats_two(request: pytest.FixtureRequest) -> Backbone:
    prefix = f"t{secrets.token_hex(4)}"
    return TwoNodes(_nats(request, prefix), _nats(request, prefix))


BACKBONES: dict[str, Factory] = {"local": _local, "nats": _nats_one, "nats-2": _nats_two}


class TwoNodes:
    """Two backbone connections seen as one: members join them in turn (the first, the
    third ... on ``a``), and each call goes through a connection the way a node makes it:
    a request and a notice through their origin's, a fan-out and a reply through ``b``."""

    def __init__(self, a: NatsBackbone, b: NatsBackbone) -> None:
        self.a, self.b = a, b
        self.on: dict[str, NatsBackbone] = {}

    async def open(self) -> None:
        await self.a.open()
        await self.b.open()

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()

    def join(self, member: Node) -> None:  # type: ignore[override]
        self.on[member.node_id] = bb = self.a if len(self.on) % 2 == 0 else self.b
        bb.join(member)

    def leave(self, member: Node) -> None:  # type: ignore[override]
        self.on[member.node_id].leave(member)

    async def settle(self, org: str = "") -> None:
        await self.a.settle()
        await self.b.settle()

    def fan_out(self, org: str, subject: str, frames: bytes, count: int, ids: list[int]) -> None:
        self.b.fan_out(org, subject, frames, count, ids)

    async def request(
        self, origin: str, org: str, subject: str, frame: bytes, ids: list[int]
    ) -> bool:
        return await self.on[origin].request(origin, org, subject, frame, ids)

    def reply(self, org: str, inbox: str, event: CloudEvent) -> None:
        self.b.reply(org, inbox, event)

    def notify(self, notice: Notice) -> None:
        self.on[notice.origin].notify(notice)

    def _other(self, node: str) -> NatsBackbone:
        """The connection ``node`` is not on (a member that never joined: ``b``)."""
        return self.b if self.on.get(node) is self.a else self.a

    def send(self, node: str, body: bytes) -> None:
        self._other(node).send(node, body)

    async def call(self, node: str, body: bytes, timeout: float) -> bytes:
        return await self._other(node).call(node, body, timeout)


class Node:
    """A member that records what reaches it; it "listens" on ``subjects`` (as subscribers
    on their own, one pattern each)."""

    def __init__(self, node_id: str, subjects: tuple[str, ...] = ()) -> None:
        self.node_id = node_id
        self.subjects = subjects
        self.batches: list[tuple[str, str, bytes, int, list[int]]] = []
        self.inboxes: dict[str, list[CloudEvent]] = {}
        self.notices: list[Notice] = []
        self.messages: list[bytes] = []

    def deliver(
        self,
        org: str,
        subject: str,
        frames: bytes,
        count: int,
        ids: list[int],
        *,
        queues: bool = True,
    ) -> int:
        self.batches.append((org, subject, frames, count, ids))
        return 1 if subject in self.subjects else 0

    def deliver_to(
        self, interest: Interest, subject: str, frames: bytes, count: int, ids: list[int]
    ) -> int:
        return self.deliver(interest.org, subject, frames, count, ids)

    def watch(self, watcher: InterestWatcher | None) -> None:
        for s in self.subjects if watcher is not None else ():
            watcher(Interest("o", s), True)

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


@pytest_asyncio.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.nats] if name.startswith("nats") else [])
        for name in sorted(BACKBONES)
    ]
)
async def backbone(request: pytest.FixtureRequest) -> AsyncIterator[Backbone]:
    bb = await BACKBONES[request.param](request)
    await bb.open()
    yield bb
    await bb.close()


async def test_fan_out_reaches_every_member_in_order(backbone: Backbone) -> None:
    a, b = Node("a", ("s.x",)), Node("b", ("s.x",))
    backbone.join(a)
    backbone.join(b)
    await backbone.settle()
    for n in range(3):
        backbone.fan_out("o", "s.x", bytes([n]), 1, [n + 1])
    expected = [("o", "s.x", bytes([n]), 1, [n + 1]) for n in range(3)]
    await eventually(lambda: a.batches == expected and b.batches == expected)


async def test_a_member_that_left_gets_nothing(backbone: Backbone) -> None:
    a, b = Node("a", ("s.x",)), Node("b", ("s.x",))
    backbone.join(a)
    backbone.join(b)
    backbone.leave(b)
    await backbone.settle()
    backbone.fan_out("o", "s.x", b"f", 1, [1])
    await eventually(lambda: len(a.batches) == 1)  # the path ran
    assert b.batches == []


async def test_request_reaches_the_responders_and_the_reply_the_requester(
    backbone: Backbone,
) -> None:
    requester, responder, bystander = Node("req"), Node("resp", ("ask",)), Node("by")
    for n in (requester, responder, bystander):
        backbone.join(n)
    await backbone.settle()
    assert await backbone.request("req", "o", "ask", b"frame", [7])
    await eventually(lambda: responder.batches == [("o", "ask", b"frame", 1, [7])])
    assert requester.batches == bystander.batches == []
    inbox = "$inbox.req.1"  # an inbox names the node where its request waits
    requester.inboxes[inbox] = []
    reply = CloudEvent(id="r", source="s", spec_version="1.0", type="t")
    backbone.reply("o", inbox, reply)
    await eventually(lambda: requester.inboxes[inbox] == [reply])


async def test_request_without_responders_says_so(backbone: Backbone) -> None:
    backbone.join(Node("a", ("other",)))
    await backbone.settle()
    assert not await backbone.request("a", "o", "ask", b"frame", [7])


async def test_notices_reach_the_other_members(backbone: Backbone) -> None:
    a, b, c = Node("a"), Node("b"), Node("c")
    for n in (a, b, c):
        backbone.join(n)
    await backbone.settle()
    notice = Notice("durable_changed", "a", "org", "billing")
    backbone.notify(notice)
    await eventually(lambda: b.notices == [notice] and c.notices == [notice])
    assert a.notices == []


async def test_messages_reach_the_one_node_in_order(backbone: Backbone) -> None:
    a, b = Node("a"), Node("b")
    backbone.join(a)
    backbone.join(b)
    await backbone.settle()
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
    await backbone.settle()
    assert await backbone.call("b", b"q", 5.0) == b"answer to q"
    backbone.leave(b)
    await backbone.settle()
    with pytest.raises(Unavailable):
        await backbone.call("b", b"q", 5.0)


class Silent(Node):
    async def on_call(self, body: bytes) -> bytes:
        await asyncio.Event().wait()  # never answers
        return b""


async def test_a_call_nobody_answers_in_time_is_unavailable(backbone: Backbone) -> None:
    backbone.join(Silent("s"))
    await backbone.settle()
    with pytest.raises(Unavailable) as exc:
        await backbone.call("s", b"q", 0.05)
    assert exc.value.reason == "UNAVAILABLE"
