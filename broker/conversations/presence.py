"""Presence from live connections, with a grace period, and typing indicators that end by
themselves. Pure bookkeeping on the event loop's timers: what to announce is handed to
``announce`` (the conversations service sends it to the right conversations).

An agent is online while it holds at least one live subscription (a gRPC Subscribe stream or
a WebSocket subscription) on this node; when its last one ends it stays online for
``grace`` seconds, so a reconnect within the grace period announces nothing.

Across nodes (:class:`SharedPresence`) a node holds a lease ``presence/<org>/<agent>`` for
each agent online on it, renewed three times a grace period, so every node answers alike and
a node that dies lets its agents' leases run out within the grace period; the other nodes
watch the agents it announced online (notice ``presence_online``) and one of them, the one
that takes the lease ``presence-offline/<org>/<agent>``, announces the dead node's agents
offline. A node announcing its own agent offline takes that lease too, so no one repeats it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from lockgate.broker.errors import BrokerError
from lockgate.broker.leases import Leases

__all__ = ["PresenceBoard", "PresenceState", "SharedPresence", "TypingTimers"]

log = logging.getLogger("lockgate.conversations")

Agent = tuple[str, str]
"""(org, agent)."""


@dataclass(slots=True)
class PresenceState:
    online: bool
    since_ms: int


class PresenceBoard:
    """Live connections per agent -> online/offline, announced on change."""

    def __init__(self, grace: float, announce: Callable[[Agent, bool], None]) -> None:
        self.grace = grace
        self._announce = announce
        self._live: dict[Agent, int] = {}
        self._state: dict[Agent, PresenceState] = {}
        self._leaving: dict[Agent, asyncio.TimerHandle] = {}

    def connected(self, who: Agent) -> None:
        self._live[who] = self._live.get(who, 0) + 1
        pending = self._leaving.pop(who, None)
        if pending is not None:
            pending.cancel()  # back within the grace period: it never went offline
            return
        st = self._state.get(who)
        if st is None or not st.online:
            self._state[who] = PresenceState(True, int(time.time() * 1000))
            self._announce(who, True)

    def disconnected(self, who: Agent) -> None:
        n = self._live.get(who, 0) - 1
        if n > 0:
            self._live[who] = n
            return
        self._live.pop(who, None)
        if who in self._leaving:
            return
        loop = asyncio.get_running_loop()
        self._leaving[who] = loop.call_later(self.grace, self._gone, who)

    def _gone(self, who: Agent) -> None:
        self._leaving.pop(who, None)
        if self._live.get(who):
            return
        self._state[who] = PresenceState(False, int(time.time() * 1000))
        self._announce(who, False)

    def state(self, who: Agent) -> PresenceState:
        return self._state.get(who) or PresenceState(False, 0)

    def online(self) -> list[Agent]:
        """The agents online here now (live, or within their grace period)."""
        return [who for who, st in self._state.items() if st.online]

    def close(self) -> None:
        for h in self._leaving.values():
            h.cancel()
        self._leaving.clear()


def _presence_lease(who: Agent) -> str:
    return f"presence/{who[0]}/{who[1]}"


def _offline_lease(who: Agent) -> str:
    return f"presence-offline/{who[0]}/{who[1]}"


class SharedPresence:
    """This node's :class:`PresenceBoard` made one view with the other nodes' through
    leases (see the module). ``announce(who, online)`` sends the notices; ``tell_others(who)``
    sends the ``presence_online`` notice. Until :meth:`run` starts, it is this node alone."""

    def __init__(
        self,
        grace: float,
        announce: Callable[[Agent, bool], None],
        tell_others: Callable[[Agent], None],
    ) -> None:
        self.grace = grace
        self.board = PresenceBoard(grace, self._changed)
        self._announce = announce
        self._tell_others = tell_others
        self._leases: Leases | None = None
        self._node_id = ""
        self._tasks: set[asyncio.Future[None]] = set()
        self._remote: set[Agent] = set()
        """Agents another node announced online: whose offline this node may have to
        announce should that node die."""

    async def state(self, who: Agent) -> PresenceState:
        """Online here, or online on another node (it holds the agent's lease)."""
        st = self.board.state(who)
        leases = self._leases
        if not st.online and leases is not None and await leases.holder(_presence_lease(who)):
            return PresenceState(True, 0)
        return st

    async def run(self, leases: Leases, node_id: str) -> None:
        """Renews the leases of this node's online agents and watches the others' agents,
        three times a grace period (runs until cancelled)."""
        self._leases, self._node_id = leases, node_id
        while True:
            for who in self.board.online():
                try:
                    await leases.acquire(_presence_lease(who), node_id, self.grace)
                except BrokerError as exc:
                    log.warning("presence.lease.renew_failed: %s/%s: %s", *who, exc)
            for who in list(self._remote):
                try:
                    await self._watch_remote(who)
                except BrokerError as exc:
                    log.warning("presence.check_failed: %s/%s: %s", *who, exc)
            await asyncio.sleep(max(0.05, self.grace / 3))

    def remote_online(self, who: Agent) -> None:
        self._remote.add(who)

    def _changed(self, who: Agent, online: bool) -> None:
        if self._leases is None:
            self._announce(who, online)
            return
        if online:
            self._announce(who, True)
        task = asyncio.ensure_future(self._came_online(who) if online else self._went_offline(who))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_remote(self, who: Agent) -> None:
        """An agent online elsewhere whose lease ran out went offline with no announcement
        from its node (it died): the node that takes the announcement's lease announces."""
        assert self._leases is not None
        if self.board.state(who).online:
            self._remote.discard(who)  # this node speaks for it now
            return
        if await self._leases.holder(_presence_lease(who)) is not None:
            return
        self._remote.discard(who)
        if await self._leases.acquire(_offline_lease(who), self._node_id, self.grace):
            self._announce(who, False)

    async def _came_online(self, who: Agent) -> None:
        """Takes the agent's lease before telling the other nodes, so none of them finds it
        without one and takes it for gone."""
        assert self._leases is not None
        try:
            await self._leases.acquire(_presence_lease(who), self._node_id, self.grace)
        except BrokerError as exc:
            log.warning("presence.lease.take_failed: %s/%s: %s", *who, exc)
        self._tell_others(who)

    async def _went_offline(self, who: Agent) -> None:
        """Announced once (the announcement's lease keeps the other nodes from repeating
        it), then the agent's lease is given up."""
        assert self._leases is not None
        try:
            if await self._leases.acquire(_offline_lease(who), self._node_id, self.grace):
                self._announce(who, False)
            await self._leases.release(_presence_lease(who), self._node_id)
        except BrokerError as exc:
            log.warning("presence.release_failed: %s/%s: %s", *who, exc)
            self._announce(who, False)

    def close(self) -> None:
        self.board.close()


class TypingTimers:
    """A typing-on lasts ``ttl`` seconds unless renewed; then ``expire`` is called (to
    send the typing-off the typist never sent)."""

    def __init__(self, ttl: float, expire: Callable[[str, str, str], None]) -> None:
        self.ttl = ttl
        self._expire = expire
        self._timers: dict[tuple[str, str, str], asyncio.TimerHandle] = {}

    def on(self, org: str, conversation_id: str, agent: str) -> None:
        key = (org, conversation_id, agent)
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(self.ttl, self._fire, key)

    def off(self, org: str, conversation_id: str, agent: str) -> bool:
        """Stops the timer; False when none ran (nothing to turn off)."""
        old = self._timers.pop((org, conversation_id, agent), None)
        if old is None:
            return False
        old.cancel()
        return True

    def _fire(self, key: tuple[str, str, str]) -> None:
        self._timers.pop(key, None)
        self._expire(*key)

    def close(self) -> None:
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
