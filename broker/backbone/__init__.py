"""How the nodes of one Lockgate reach each other: the :class:`Backbone` Protocol.

Four things cross between nodes: staged batches for the ephemeral (at-most-once)
subscribers connected to other nodes, requests and their replies, notices (a policy set
was swapped, a durable changed), and messages addressed to one node (:meth:`Backbone.send`,
:meth:`Backbone.call`: a durable's relays and its owner, see ``broker.durable_relay``).
Each node joins the backbone with its :class:`Member` side;
the embedded :class:`~broker.backbone.local.LocalBackbone` connects the nodes of one process,
a cluster backbone (:class:`~broker.backbone.nats.NatsBackbone`, core NATS) the nodes of many.
A cluster backbone carries to a node only what its subscribers listen to: a member tells it
its :class:`Interest` (what patterns and queue groups have subscribers there) as it changes.

Example::

    backbone = LocalBackbone()
    backbone.join(node)
    backbone.fan_out("acme", "orders.created", frames, 2, [41, 42])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from lockgate.broker.v1 import cloudevent_pb2

__all__ = ["Backbone", "Interest", "InterestWatcher", "Member", "Notice", "NoticeKind"]

CloudEvent = cloudevent_pb2.CloudEvent
NoticeKind = Literal[
    "policy_swapped",
    "durable_changed",
    "config_changed",
    "presence_online",
    "registry_changed",
    "conversation_changed",
    "node_alive",
]


@dataclass(frozen=True, slots=True)
class Notice:
    """News one node gives the others; ``origin`` is the sending node's id."""

    kind: NoticeKind
    origin: str
    org: str = ""
    name: str = ""
    """The durable's name (``durable_changed``), the policy version (``policy_swapped``), the
    config store's version (``config_changed``), a backbone's id (``registry_changed``), a
    conversation's id (``conversation_changed``), an agent now online (``presence_online``) or
    the sending node's heartbeat card as JSON (``node_alive``, see :mod:`broker.roster`)."""


@dataclass(frozen=True, slots=True)
class Interest:
    """Subscribers of one node to ``pattern`` in ``org``: those on their own (``queue`` empty)
    or the members of the queue group ``queue``."""

    org: str
    pattern: str
    queue: str = ""


InterestWatcher = Callable[[Interest, bool], None]
"""Told ``(interest, True)`` when a node gains its first subscriber of an interest and
``(interest, False)`` when it loses its last."""


class Member(Protocol):
    """A node as the backbone sees it: where deliveries for its clients go."""

    node_id: str

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
        """Offers a batch of delivery frames to this node's ephemeral subscribers; returns
        how many subscriptions took it. ``queues=False`` leaves the queue groups' members
        out (a cluster backbone picks one node per group and uses :meth:`deliver_to`)."""

    def deliver_to(
        self, interest: Interest, subject: str, frames: bytes, count: int, ids: list[int]
    ) -> int:
        """Offers a batch to the subscribers behind one interest only: with ``queue`` empty
        those of exactly ``pattern`` on their own, else one member per event of the group
        ``queue`` (its members of every pattern that matches ``subject``)."""

    def watch(self, watcher: InterestWatcher | None) -> None:
        """Tells ``watcher`` every interest this node has now, then each change, until it
        is called again (``None``: stop)."""

    def listens(self, org: str, subject: str) -> bool:
        """Whether a subscriber on this node would receive ``subject`` (a responder)."""

    def deliver_reply(self, org: str, inbox: str, event: CloudEvent) -> bool:
        """Answers a request waiting on this node; False when none waits on ``inbox``."""

    def on_notice(self, notice: Notice) -> None: ...

    def on_message(self, body: bytes) -> None:
        """A message another node sent to this one with :meth:`Backbone.send`."""

    async def on_call(self, body: bytes) -> bytes:
        """The answer to a :meth:`Backbone.call` another node made to this one (errors are
        part of the answer: the backbone only carries bytes)."""


class Backbone(Protocol):
    """The links between nodes. Delivery over it is at-most-once, like ephemeral
    subscriptions; what must not be lost travels through the store."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def join(self, member: Member) -> None: ...

    def leave(self, member: Member) -> None: ...

    async def settle(self, org: str = "") -> None:
        """Returns once the interest the members declared so far has reached the other
        nodes, so that what is published anywhere from now on finds its subscribers (a node
        awaits it before it tells a client its subscription is live). ``org``: the
        subscription's (a routed backbone settles that org's backbone only)."""

    def fan_out(self, org: str, subject: str, frames: bytes, count: int, ids: list[int]) -> None:
        """Hands a stored batch to the ephemeral subscribers of every node, in commit order
        per sender (called synchronously once the store has it; must not block)."""

    async def request(
        self, origin: str, org: str, subject: str, frame: bytes, ids: list[int]
    ) -> bool:
        """Delivers a request frame to the subscribers of ``subject`` on every node, as a
        publish would (one member per queue group); False when nobody listens. The first
        reply wins."""

    def reply(self, org: str, inbox: str, event: CloudEvent) -> None:
        """Answers the request waiting on ``inbox``, wherever it waits (dropped if none)."""

    def notify(self, notice: Notice) -> None:
        """Tells every other node (not ``notice.origin``)."""

    def send(self, node: str, body: bytes) -> None:
        """Hands ``body`` to the member whose ``node_id`` is ``node`` (its
        :meth:`Member.on_message`), later, never in the caller's frame. At most once, and in
        send order between one pair of nodes; dropped when no such node is there. Must not
        block. (On NATS: a publish to ``lgnode.<node>``, which that node subscribes to.)"""

    async def call(self, node: str, body: bytes, timeout: float) -> bytes:
        """The answer of node ``node``'s :meth:`Member.on_call` to ``body``. Raises
        ``Unavailable`` when no such node is there or it does not answer within ``timeout``
        seconds. (On NATS: a request to ``lgnode.<node>.call``; no responders is the
        ``Unavailable``.)"""
