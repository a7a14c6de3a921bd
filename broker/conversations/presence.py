"""Presence from live connections, with a grace period, and typing indicators that end by
themselves. Pure bookkeeping on the event loop's timers: what to announce is handed to
``announce`` (the conversations service sends it to the right conversations).

An agent is online while it holds at least one live subscription (a gRPC Subscribe stream or
a WebSocket subscription) on this node; when its last one ends it stays online for
``grace`` seconds, so a reconnect within the grace period announces nothing. Across nodes
the conversations service keeps a lease per online agent (``Conversations.keep_presence``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PresenceBoard", "PresenceState", "TypingTimers"]

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
