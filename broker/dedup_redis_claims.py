"""The claims one node holds in the Redis dedup window (see :mod:`broker.dedup_redis`): the
frames claimed and not yet stored or forgotten, the renewal of their pending markers, and the
ordered lane every claim of the node goes through."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lockgate.broker.dedup_redis_scripts import _CLAIM, _RENEW
from lockgate.broker.redisconn import REDIS_ERRORS, connect, redis_failed

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["DEFAULT_CLAIM", "MAX_HOLD", "RedisClaims"]

DEFAULT_CLAIM = 1.0
"""Seconds a frame's claims hold after its node's last renewal: when the node died before
its append committed, a retry through another node waits at most this long for it."""
_WHAT = "the Redis dedup window"

MAX_HOLD = 30.0
"""Seconds a node renews one frame's claims at most (a publish takes milliseconds between its
claim and its commit; this bounds a claim that a bug left behind)."""

_log = logging.getLogger("lockgate.dedup")


@dataclass(eq=False, slots=True)
class _Frame:
    """One claim call's keys, held by this node until stored or forgotten."""

    name: str
    ids: list[int]
    """The id staged for each claimed key, by its index in the claim (0: not staged)."""
    held_at: float
    live: int
    """Its keys neither stored nor forgotten."""
    stored: bool = False
    keys: list[bytes] = field(default_factory=list)
    """The keys it won (to let go of them here when it is held too long)."""


class RedisClaims:
    """The Redis connection of the window under ``prefix`` and the claims this node holds."""

    def __init__(self, url: str, window: float, *, prefix: str, claim: float) -> None:
        self.window = window
        self._redis: redis.asyncio.Redis = connect(url, _WHAT)
        self._prefix = (prefix + "dd2:").encode()
        self._window_ms = max(1, int(window * 1000))
        self._claim_ms = max(1, min(self._window_ms, int(claim * 1000)))
        self.renewals = 0
        """How many times this node renewed the claims it holds."""
        self.lookups = 0
        """How many claims this node sent through its ordered lane (:meth:`lookup` s)."""
        # register_script's Script runs EVALSHA and loads the script on NOSCRIPT.
        self._claim = self._redis.register_script(_CLAIM)
        self._renew = self._redis.register_script(_RENEW)
        # Frame names: this window's random part and a count (unique across nodes, restarts).
        self._node = secrets.token_hex(6)
        self._numbers = itertools.count(1)
        self._frames: dict[str, _Frame] = {}
        """Frames held here: claimed, neither stored nor forgotten yet."""
        self._claimed: dict[bytes, tuple[_Frame, int]] = {}
        """Each held key's frame and index in it."""
        self._renewer: asyncio.Task[None] | None = None
        self._lane: list[tuple[list[bytes | str | int], asyncio.Future[Any]]] = []
        """Claims queued while one is on its way (see :meth:`_send_claim`)."""
        self._sender: asyncio.Task[None] | None = None

    def _hold(self, frame: _Frame, won: Sequence[tuple[bytes, int]]) -> None:
        self._frames[frame.name] = frame
        claimed = self._claimed
        for k, n in won:
            claimed[k] = (frame, n)
        frame.keys = [k for k, _ in won]
        if self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_loop(), name="lockgate-dedup-claims"
            )

    def _drop(self, frame: _Frame) -> None:
        """The frame is no longer held here (stored, forgotten, or held too long)."""
        self._frames.pop(frame.name, None)

    async def _renew_loop(self) -> None:
        """Renews this node's claims until it holds none (the next claim starts it again:
        an idle node does not wake four times a second for nothing)."""
        every = self._claim_ms / 4000
        while True:
            await asyncio.sleep(every)
            if not self._frames:
                self._renewer = None
                return
            # A frame whose publish neither stored nor forgot it (an error between the two)
            # is renewed no longer than MAX_HOLD: it then lapses as a dead node's does.
            now = time.monotonic()
            oldest = now - MAX_HOLD
            for frame in [f for f in self._frames.values() if f.held_at < oldest]:
                self._drop(frame)
                frame.live = 0
                for k in frame.keys:
                    if self._claimed.get(k, (None, 0))[0] is frame:
                        del self._claimed[k]
            # Only frames claimed half a period ago or more: the others still have at least
            # 3/4 of ``claim`` to run, and most are stored before the next turn.
            recent = now - every / 2
            due = [f.name for f in self._frames.values() if f.held_at <= recent]
            if not due:
                continue
            try:
                await self._renew(keys=[], args=[self._prefix, self._claim_ms, *due])
                self.renewals += 1
            except REDIS_ERRORS as exc:
                # The append that holds these claims fails on the same Redis; a claim that
                # lapses meanwhile only lets a retry elsewhere in sooner.
                _log.warning("dedup.claims.renew_failed: %s", redis_failed(_WHAT, exc).message)

    def _send_claim(self, args: list[bytes | str | int]) -> asyncio.Future[Any]:
        """Queues one claim script call; Redis runs the node's claims in the order of these
        calls: one round trip at a time, the claims queued meanwhile in one pipeline behind
        it. So a lookup started before another claims before it, whatever the connections:
        frames prepared concurrently (a Publish stream's) never wait for a later frame's
        claim, and no two streams wait for each other's (every node's claims run in one
        order in Redis)."""
        done = asyncio.get_running_loop().create_future()
        self.lookups += 1
        self._lane.append((args, done))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(
                self._send_claims(), name="lockgate-dedup-claim-lane"
            )
        return done

    async def _send_claims(self) -> None:
        try:
            while self._lane:
                queued, self._lane = self._lane, []
                try:
                    if len(queued) == 1:
                        results: list[Any] = [await self._claim(keys=[], args=queued[0][0])]
                    else:
                        pipe = self._redis.pipeline(transaction=False)
                        for args, _ in queued:
                            await self._claim(keys=[], args=args, client=pipe)
                        results = await pipe.execute(raise_on_error=False)
                except REDIS_ERRORS as exc:
                    results = [exc] * len(queued)
                for (_, done), result in zip(queued, results, strict=True):
                    if done.done():
                        continue
                    if isinstance(result, BaseException):
                        done.set_exception(result)
                    else:
                        done.set_result(result)
        finally:
            self._sender = None
