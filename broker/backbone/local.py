"""The embedded backbone: the nodes of one process, called directly."""

from __future__ import annotations

import asyncio

from lockgate.broker.backbone import CloudEvent, Member, Notice
from lockgate.broker.errors import Unavailable

__all__ = ["LocalBackbone"]


class LocalBackbone:
    """:class:`~broker.backbone.Backbone` between the nodes of this process (usually one)."""

    def __init__(self) -> None:
        self._members: list[Member] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._members.clear()

    def join(self, member: Member) -> None:
        if member not in self._members:
            self._members.append(member)

    def leave(self, member: Member) -> None:
        if member in self._members:
            self._members.remove(member)

    async def settle(self, org: str = "") -> None:
        return None  # every member is called directly: nothing to propagate

    def fan_out(self, org: str, subject: str, frames: bytes, count: int, ids: list[int]) -> None:
        for m in self._members:
            m.deliver(org, subject, frames, count, ids)

    async def request(
        self, origin: str, org: str, subject: str, frame: bytes, ids: list[int]
    ) -> bool:
        heard = False
        for m in self._members:
            if m.listens(org, subject):
                m.deliver(org, subject, frame, 1, ids)
                heard = True
        return heard

    def reply(self, org: str, inbox: str, event: CloudEvent) -> None:
        for m in self._members:
            if m.deliver_reply(org, inbox, event):
                return

    def notify(self, notice: Notice) -> None:
        for m in list(self._members):
            if m.node_id != notice.origin:
                m.on_notice(notice)

    def _member(self, node: str) -> Member | None:
        for m in self._members:
            if m.node_id == node:
                return m
        return None

    def send(self, node: str, body: bytes) -> None:
        m = self._member(node)
        if m is not None:
            # Later, as over a network: the sender's frame never runs the receiver's code;
            # call_soon keeps the send order.
            asyncio.get_running_loop().call_soon(_deliver, self, m, body)

    async def call(self, node: str, body: bytes, timeout: float) -> bytes:
        m = self._member(node)
        if m is None:
            raise Unavailable(f"node {node} is not on the backbone", hint="retry")
        try:
            return await asyncio.wait_for(m.on_call(body), timeout)
        except TimeoutError:
            raise Unavailable(
                f"node {node} did not answer within {timeout:g} s", hint="retry"
            ) from None


def _deliver(backbone: LocalBackbone, member: Member, body: bytes) -> None:
    if member in backbone._members:  # it may have left meanwhile
        member.on_message(body)
