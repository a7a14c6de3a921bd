"""What a conversation tells its live subscribers only: receipts, typing and presence notices.

These are never stored: :class:`Liveness` builds each notice and hands it to the host's
``notify_live``. Presence is counted per connection (``presence.SharedPresence``, shared
across nodes) and typing indicators end by themselves (``presence.TypingTimers``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from lockgate.broker.config import Config
from lockgate.broker.conversations import subjects as cs
from lockgate.broker.conversations.events import conversation_event
from lockgate.broker.conversations.presence import (
    PresenceBoard,
    PresenceState,
    SharedPresence,
    TypingTimers,
)
from lockgate.broker.errors import ResourceExhausted
from lockgate.broker.leases import Leases
from lockgate.broker.limits import BucketRequest, Limiter
from lockgate.broker.store import ConversationRecord, ReceiptRecord
from lockgate.broker.v1 import cloudevent_pb2

__all__ = ["LiveHost", "Liveness"]

Agent = tuple[str, str]
"""(org, agent)."""


class LiveHost(Protocol):
    """What the live notices need of the node."""

    def notify_live(self, org: str, subject: str, event: cloudevent_pb2.CloudEvent) -> None:
        """Hands one event to the live subscribers of every node, without storing it."""

    def presence_seen(self, org: str, agent: str) -> None:
        """Tells the other nodes that the agent came online here (they watch its lease)."""

    @property
    def limiter(self) -> Limiter: ...


class Liveness:
    """Receipts, typing and presence notices (see the module).

    ``conversations_of`` names the conversations of an agent, sorted: its presence changes
    are announced in each of them.
    """

    def __init__(
        self, host: LiveHost, config: Config, conversations_of: Callable[[Agent], list[str]]
    ) -> None:
        self.host = host
        self.config = config
        self._conversations_of = conversations_of
        self.shared = SharedPresence(
            config.presence_grace, self._announce, lambda who: host.presence_seen(*who)
        )
        self.presence: PresenceBoard = self.shared.board
        self.typing = TypingTimers(config.typing_ttl, self._typing_expired)

    def receipt(self, org: str, cid: str, r: ReceiptRecord) -> None:
        self._notice(
            org,
            cid,
            cs.RECEIPTS,
            "conversation.receipt",
            {"agent": r.agent, "delivered_id": str(r.delivered_id), "read_id": str(r.read_id)},
        )

    async def set_typing(self, org: str, cid: str, agent: str, typing: bool) -> None:
        """Starts or stops the agent's typing indicator, at most ``typing_per_second``."""
        rate = self.config.typing_per_second
        key = f"typing|{org}|{agent}"
        (grant,) = await self.host.limiter.take([BucketRequest(key, rate, max(5.0, rate), 1)])
        if grant.granted < 1:
            raise ResourceExhausted(
                f"{org}/{agent} sent typing indicators faster than "
                f"{rate:g} a second; retry in {grant.retry_after:.3g} s",
                reason="RATE_LIMITED",
                hint="send a typing indicator when typing starts and stops, not per key",
                metadata={"retry_after": f"{grant.retry_after:.3f}", "rule": "typing"},
            )
        if typing:
            self.typing.on(org, cid, agent)
        else:
            self.typing.off(org, cid, agent)
        self._typing_notice(org, cid, agent, typing)

    def _typing_expired(self, org: str, cid: str, agent: str) -> None:
        self._typing_notice(org, cid, agent, False)

    def _typing_notice(self, org: str, cid: str, agent: str, typing: bool) -> None:
        self._notice(
            org,
            cid,
            cs.TYPING,
            "conversation.typing",
            {
                "agent": agent,
                "typing": "true" if typing else "false",
                "ttl_ms": str(int(self.config.typing_ttl * 1000)),
            },
        )

    def _notice(self, org: str, cid: str, kind: str, type_: str, attrs: Mapping[str, str]) -> None:
        self.host.notify_live(org, cs.subject_of(cid, kind), conversation_event(cid, type_, attrs))

    def _announce(self, who: Agent, online: bool) -> None:
        """Sends a presence notice to each conversation of the agent."""
        org, agent = who
        for cid in self._conversations_of(who):
            self._notice(
                org,
                cid,
                cs.PRESENCE,
                "conversation.presence",
                {"agent": agent, "status": "online" if online else "offline"},
            )

    async def presence_of(self, rec: ConversationRecord) -> list[tuple[str, PresenceState]]:
        """Each participant's presence, as every node answers it (``SharedPresence``)."""
        return [(m.agent, await self.shared.state((rec.org, m.agent))) for m in rec.members]

    async def keep_presence(self, leases: Leases, node_id: str) -> None:
        """See :meth:`SharedPresence.run` (runs until cancelled)."""
        await self.shared.run(leases, node_id)

    def close(self) -> None:
        self.shared.close()
        self.typing.close()
