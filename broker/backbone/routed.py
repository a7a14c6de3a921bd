"""The cluster backbone routed per org: fan-out, requests and replies of an org pinned in
the registry travel over its backbone, everything else over the node's own.

:class:`RoutedBackbone` is the :class:`~broker.backbone.Backbone` a cluster node runs on. It
wraps the node's own :class:`~broker.backbone.nats.NatsBackbone` and opens one more per
pinned endpoint through :class:`~broker.backbone.links.BackboneLinks` (bounded, shared by the
orgs of a backbone, closed when none is pinned there any more). Node-wide traffic (notices,
messages and calls between nodes: durable relays) stays on the own backbone.

The members (nodes) join this backbone; each inner backbone sees them through a
:class:`_Seen` stand-in, which is told only the interests of the orgs routed over it, so a
node subscribes on a pinned backbone only to what its subscribers of those orgs listen to.
On a re-pin the org's interests move: unsubscribed from the old backbone, subscribed on the
new one; new batches of the org go over the new one from then on.

Example::

    backbone = RoutedBackbone(NatsBackbone(own_url), lambda url: NatsBackbone(url))
    await backbone.open()
    backbone.follow_pins(registry.pinned())
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lockgate.broker.backbone import CloudEvent, Interest, InterestWatcher, Member, Notice
from lockgate.broker.backbone.links import MAX_LINKS, BackboneLinks
from lockgate.broker.backbone.nats import NatsBackbone
from lockgate.broker.errors import Unavailable
from lockgate.broker.store import BackboneRecord

__all__ = ["RoutedBackbone"]


class _Seen:
    """A member as one inner backbone sees it: deliveries go to the member; the interests
    are those of the orgs routed over that backbone; only the node's own backbone passes
    notices, messages and calls on (node-wide traffic stays there)."""

    def __init__(self, member: Member, *, own: bool) -> None:
        self.member = member
        self.node_id = member.node_id
        self.own = own
        self.watcher: InterestWatcher | None = None

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
        return self.member.deliver(org, subject, frames, count, ids, queues=queues)

    def deliver_to(
        self, interest: Interest, subject: str, frames: bytes, count: int, ids: list[int]
    ) -> int:
        return self.member.deliver_to(interest, subject, frames, count, ids)

    def watch(self, watcher: InterestWatcher | None) -> None:
        self.watcher = watcher

    def listens(self, org: str, subject: str) -> bool:
        return self.member.listens(org, subject)

    def deliver_reply(self, org: str, inbox: str, event: CloudEvent) -> bool:
        return self.member.deliver_reply(org, inbox, event)

    def on_notice(self, notice: Notice) -> None:
        if self.own:
            self.member.on_notice(notice)

    def on_message(self, body: bytes) -> None:
        if self.own:
            self.member.on_message(body)

    async def on_call(self, body: bytes) -> bytes:
        if not self.own:
            raise Unavailable("node calls travel over the node's own backbone")
        return await self.member.on_call(body)


@dataclass(eq=False)
class _Joined:
    member: Member
    interests: set[Interest] = field(default_factory=set)
    seen: dict[int, _Seen] = field(default_factory=dict)
    """Its stand-in on each inner backbone, by ``id()`` of the backbone."""


class RoutedBackbone:
    """:class:`~broker.backbone.Backbone` over the node's own NATS backbone and the ones
    the registry pins orgs to (see the module docstring)."""

    def __init__(
        self,
        own: NatsBackbone,
        make: Callable[[str], NatsBackbone],
        *,
        max_links: int = MAX_LINKS,
    ) -> None:
        self.own = own
        self._make = make
        self._members: list[_Joined] = []
        self.links: BackboneLinks[NatsBackbone] = BackboneLinks(
            own.url,
            self._open_link,
            self._close_link,
            what="backbone",
            max_links=max_links,
            on_link=self._linked,
        )

    # -- life cycle and routes --------------------------------------------------------------

    async def open(self) -> None:
        await self.own.open()

    async def close(self) -> None:
        await self.links.close()
        await self.own.close()

    def follow_pins(self, pins: Mapping[str, BackboneRecord]) -> None:
        """``broker.registry.RegistryFollower``: moves the interests of re-pinned orgs."""
        before = {j: {i: self._inner(i.org) for i in j.interests} for j in self._members}
        moved = self.links.follow_pins(pins)
        if not moved:
            return
        for j, was in before.items():
            for interest, old in was.items():
                if interest.org in moved:
                    self._tell(j, old, interest, False)
                    self._tell(j, self._inner(interest.org), interest, True)

    async def _open_link(self, endpoint: str) -> NatsBackbone:
        backbone = self._make(endpoint)
        await backbone.open()
        return backbone

    async def _close_link(self, backbone: NatsBackbone) -> None:
        await backbone.close()

    def _linked(self, backbone: NatsBackbone, opened: bool) -> None:
        """A link opened (members join it with the interests routed over it) or is about
        to close (they leave it)."""
        for j in self._members:
            if opened:
                self._join_inner(j, backbone, own=False)
                continue
            seen = j.seen.pop(id(backbone), None)
            if seen is not None:
                backbone.leave(seen)

    def _inner(self, org: str) -> NatsBackbone | None:
        """The backbone carrying ``org`` (None: pinned to one not connected)."""
        try:
            return self.links.get(org) or self.own
        except Unavailable:
            return None

    def _join_inner(self, j: _Joined, backbone: NatsBackbone, *, own: bool) -> None:
        seen = _Seen(j.member, own=own)
        j.seen[id(backbone)] = seen
        backbone.join(seen)
        for interest in j.interests:
            if self._inner(interest.org) is backbone and seen.watcher is not None:
                seen.watcher(interest, True)

    def _tell(
        self, j: _Joined, backbone: NatsBackbone | None, interest: Interest, on: bool
    ) -> None:
        seen = j.seen.get(id(backbone)) if backbone is not None else None
        if seen is not None and seen.watcher is not None:
            seen.watcher(interest, on)

    # -- members ----------------------------------------------------------------------------

    def join(self, member: Member) -> None:
        if any(j.member is member for j in self._members):
            return
        j = _Joined(member)
        self._members.append(j)
        member.watch(lambda interest, on: self._interest(j, interest, on))
        self._join_inner(j, self.own, own=True)
        for _, backbone in self.links.open_links():
            self._join_inner(j, backbone, own=False)

    def leave(self, member: Member) -> None:
        j = next((j for j in self._members if j.member is member), None)
        if j is None:
            return
        member.watch(None)
        self._members.remove(j)
        for backbone in [self.own, *(b for _, b in self.links.open_links())]:
            seen = j.seen.pop(id(backbone), None)
            if seen is not None:
                backbone.leave(seen)

    def _interest(self, j: _Joined, interest: Interest, on: bool) -> None:
        if on:
            j.interests.add(interest)
        else:
            j.interests.discard(interest)
        self._tell(j, self._inner(interest.org), interest, on)

    async def settle(self, org: str = "") -> None:
        """The org's backbone's (``Unavailable`` when it cannot be reached), or every
        connected one's without an org."""
        if org:
            backbone = await self.links.ready(org) or self.own
            await backbone.settle()
            return
        await self.own.settle()
        for _, backbone in self.links.open_links():
            if backbone.connected:
                await backbone.settle()

    # -- traffic ----------------------------------------------------------------------------

    def fan_out(self, org: str, subject: str, frames: bytes, count: int, ids: list[int]) -> None:
        backbone = self._inner(org)
        if backbone is not None:
            backbone.fan_out(org, subject, frames, count, ids)
            return
        for j in self._members:  # its backbone is gone: this node's subscribers still get it
            j.member.deliver(org, subject, frames, count, ids)

    async def request(
        self, origin: str, org: str, subject: str, frame: bytes, ids: list[int]
    ) -> bool:
        backbone = await self.links.ready(org) or self.own
        return await backbone.request(origin, org, subject, frame, ids)

    def reply(self, org: str, inbox: str, event: CloudEvent) -> None:
        backbone = self._inner(org)
        if backbone is not None:
            backbone.reply(org, inbox, event)
            return
        for j in self._members:
            if j.member.deliver_reply(org, inbox, event):
                return

    def notify(self, notice: Notice) -> None:
        self.own.notify(notice)

    def send(self, node: str, body: bytes) -> None:
        self.own.send(node, body)

    async def call(self, node: str, body: bytes, timeout: float) -> bytes:
        return await self.own.call(node, body, timeout)
