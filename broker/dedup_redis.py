"""The dedup window shared by the nodes of a cluster, in Redis.

A publish retried through another node (the client failing over) must be stored once, and a
publish whose append failed must not be remembered. Each event's key ``(org, source, id)``
is one Redis key, expiring after the window (Redis's clock, so the nodes' clocks need not
agree). It names the *frame* that claimed it (``c<frame>:<n>``, the n-th key of that claim);
each frame has a *pending* marker while its append runs and a *stored* record once it
committed (its events' ids), so a publish costs Redis one write per event and a few per
frame:

1. :meth:`RedisDedupWindow.lookup` *claims* every new key before the batch is appended:
   ``SET key c<frame>:<n> NX PX window GET`` for each, and sets the frame's pending marker
   (``PX claim``), in one script. The node whose ``SET`` wins appends the event. A node that
   finds another frame's claim reads that frame's stored record (the id: a duplicate) or its
   pending marker (another node is appending that event right now: it waits, then decides
   again); with neither, that frame died or failed, and the claim is taken over.
2. :meth:`RedisDedupWindow.remember` notes the staged events' ids, in the node only.
3. :meth:`RedisDedupWindow.stored` (after the append committed) writes the frames' stored
   records (their ids, 8 bytes each) for the window, in the background, coalescing the
   frames of many publishes.
4. :meth:`RedisDedupWindow.forget` deletes the keys and their frame's marker when the append
   failed, so a retry is accepted.

A *fresh* frame (``PublishRequest.fresh``: its client generated every id for this first
send) almost never finds its keys there, so :meth:`RedisDedupWindow.record` claims them with
``SET key c<frame>:<n> NX PX window`` and the pending marker, in a script call of its own
that does not queue behind the node's other claims (see :meth:`RedisDedupWindow._send_claim`):
the frames of a stream claim concurrently instead of one round trip at a time. The keys that
were there after all (a resend that overtook its first send, a client that flags old ids) are
looked up as in 1, so no answer depends on the flag, and the claim is made before the append
as 1's is.

An id is therefore only answered as a duplicate once its event is in the log: a node killed
between staging and committing leaves a claim whose frame has no stored record, and the retry
through another node stores the event (it was an answered duplicate of an event never stored,
so an acknowledged event lost, before claims were held until the commit).

Pending markers last ``claim`` seconds (1 by default) and the node that holds them renews
those older than an eighth of that every quarter of it until the frame is stored or
forgotten, so a slow append (a loaded machine, a backbone that takes its time) keeps its
claims however long it takes, and those of a node that died (kill -9 between 1 and 3) lapse
within ``claim`` seconds of its last renewal. That bounds how long a publish retried through
another node waits for a dead node's events: the client's failover resumes within about
``claim`` seconds (it was a fixed 5 s claim, which a failover that met one waited out in
full). A node that dies after its answer and before 3 leaves claims that lapse: a later
retry of those events would be stored again (a duplicate, never a loss).

Redis runs the window's commands one at a time for every node, so its work per event bounds
the cluster's publish rate: one ``SET`` per event now. The first version wrote each key three
times (claim, pending id, id) and renewed every held key every quarter period, about 3.8
commands per event in all, which made Redis the cluster's bottleneck on a loaded machine
(LOCKGATE_STAGE_LOG: frames waited 30-300 ms for their claim). Each step is one command per
batch, never a command per event: a Lua script given the batch's key digests back to back in
one argument, or one ``DEL``. redis-py spends about 20 us of Python per pipelined command and
a few per argument, which cost more than the whole embedded publish path. The scripts name
their keys themselves, so the window needs one Redis server (not Redis Cluster, which the
limiter's multi-key script does not support either). Its keys live under ``<prefix>dd2:``:
the first version's (``dd:``) are another format, so nodes of both versions in one cluster
would not see each other's keys (run one version, or expect duplicates across the upgrade).

Keys are compact: a 128-bit BLAKE2b digest of the key under the prefix, whatever the lengths
of ``source`` and ``id`` (about 90 bytes of Redis memory per event).

Example::

    window = RedisDedupWindow("redis://127.0.0.1:6379/0", 120.0)
    assert await window.lookup([("acme", "src", "e1")]) == [0]  # claimed: append it
    await window.remember([(("acme", "src", "e1"), 42)])
    window.stored([("acme", "src", "e1")])  # appended: its id is answered from now on
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lockgate.broker.dedup import DedupKey, RecentLog
from lockgate.broker.errors import Unavailable
from lockgate.broker.redisconn import REDIS_ERRORS, connect, redis_failed

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["DEFAULT_CLAIM", "RedisDedupWindow"]

DEFAULT_CLAIM = 1.0
"""Seconds a frame's claims hold after its node's last renewal: when the node died before
its append committed, a retry through another node waits at most this long for it."""
_WHAT = "the Redis dedup window"

MAX_HOLD = 30.0
"""Seconds a node renews one frame's claims at most (a publish takes milliseconds between its
claim and its commit; this bounds a claim that a bug left behind)."""

_log = logging.getLogger("lockgate.dedup")

_MEMO_MAX = 50_000
"""Keys whose digests are kept between the steps of their publishes (a cache: cleared when
this full, which only costs digests computed again)."""
_DIGEST = 16
"""Bytes of a key's digest; the scripts take a batch's digests back to back."""
_ID_BYTES = 8
_CLAIMING = """
local prefix, window, blob, frame, px = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
redis.call('SET', prefix .. 'f:' .. frame .. ':p', '1', 'PX', px)
local mine = 'c' .. frame .. ':'
local out = {}
for i = 1, #blob, 16 do
  local n = (i - 1) / 16
  local k = prefix .. string.sub(blob, i, i + 15)
"""
"""The start of both claim scripts: the frame's pending marker, then a loop over the batch's
keys (``k``, the ``n``-th) that adds to ``out``."""
_CLAIM = (
    _CLAIMING
    + """  local old = redis.call('SET', k, mine .. n, 'NX', 'PX', window, 'GET')
  if old then
    local other, m = string.match(old, '^c([^:]+):(%d+)$')
    if other then
      local stored = redis.call('GET', prefix .. 'f:' .. other)
      local id = stored and string.sub(stored, m * 8 + 1, m * 8 + 8) or ''
      if #id == 8 and id ~= '\0\0\0\0\0\0\0\0' then
        old = '=' .. id
      elseif stored or redis.call('EXISTS', prefix .. 'f:' .. other .. ':p') == 0 then
        redis.call('SET', k, mine .. n, 'PX', window)
        old = false
      end
    end
    if old then
      out[#out + 1] = n
      out[#out + 1] = old
    end
  end
end
return out
"""
)
"""Claims every key of the batch that is not there yet for ``frame``, and takes over the keys
whose frame neither stored them nor is pending; answers ``[index, value, ...]`` for the
others: ``=<8-byte id>`` (stored), or the claim of a frame still pending."""
_FRESH = (
    _CLAIMING
    + """  if not redis.call('SET', k, mine .. n, 'NX', 'PX', window) then
    out[#out + 1] = n
  end
end
return out
"""
)
"""Claims the keys of a fresh frame for ``frame`` without reading anything; answers the
indexes of the keys that were there (the frame was not fresh after all: they are looked up)."""
_STORED = """
local prefix, window = ARGV[1], ARGV[2]
for i = 3, #ARGV, 2 do
  redis.call('SET', prefix .. 'f:' .. ARGV[i], ARGV[i + 1], 'PX', window)
  redis.call('DEL', prefix .. 'f:' .. ARGV[i] .. ':p')
end
return 0
"""
"""Writes each frame's stored record (``ARGV[i]`` the frame, ``ARGV[i + 1]`` its ids) and
drops its pending marker."""
_RENEW = """
local prefix, px = ARGV[1], ARGV[2]
for i = 3, #ARGV do redis.call('PEXPIRE', prefix .. 'f:' .. ARGV[i] .. ':p', px) end
return 0
"""
"""Extends the pending markers of the frames named."""


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


class RedisDedupWindow:
    """:class:`~broker.dedup.DedupWindow` in Redis under ``prefix``, shared by every node.

    The window outlives the nodes, so :meth:`open` loads nothing from the log.
    """

    def __init__(
        self,
        url: str,
        window: float,
        *,
        prefix: str = "lockgate:",
        claim: float = DEFAULT_CLAIM,
    ) -> None:
        self.window = window
        self.claims = True
        self._redis: redis.asyncio.Redis = connect(url, _WHAT)
        self._prefix = (prefix + "dd2:").encode()
        self._window_ms = max(1, int(window * 1000))
        self._claim_ms = max(1, min(self._window_ms, int(claim * 1000)))
        self.waits = 0
        """How many times a lookup met a key claimed elsewhere and waited for its outcome."""
        self.renewals = 0
        """How many times this node renewed the claims it holds."""
        self.lookups = 0
        """How many claims this node sent through its ordered lane (:meth:`lookup` s)."""
        self.records = 0
        """How many fresh frames this node recorded without a lookup (:meth:`record`)."""
        # register_script's Script runs EVALSHA and loads the script on NOSCRIPT.
        self._claim = self._redis.register_script(_CLAIM)
        self._store = self._redis.register_script(_STORED)
        self._fresh = self._redis.register_script(_FRESH)
        self._renew = self._redis.register_script(_RENEW)
        # Frame names: this window's random part and a count (unique across nodes, restarts).
        self._node = secrets.token_hex(6)
        self._numbers = itertools.count(1)
        self._frames: dict[str, _Frame] = {}
        """Frames held here: claimed, neither stored nor forgotten yet."""
        self._claimed: dict[bytes, tuple[_Frame, int]] = {}
        """Each held key's frame and index in it."""
        self._renewer: asyncio.Task[None] | None = None
        self._committed: list[_Frame] = []  # stored: records to write
        self._confirmer: asyncio.Task[None] | None = None
        self._confirm_wake = asyncio.Event()
        self._memo: dict[DedupKey, bytes] = {}
        """Digests of the keys looked up, until stored or forgotten: one digest per event
        rather than one per step (a BLAKE2b and a string format each)."""
        self._lane: list[tuple[list[bytes | str | int], asyncio.Future[Any]]] = []
        """Claims queued while one is on its way (see :meth:`_send_claim`)."""
        self._sender: asyncio.Task[None] | None = None

    @staticmethod
    def _key(key: DedupKey) -> bytes:
        """The key's digest (the Redis key is it under the prefix)."""
        org, source, eid = key
        # Length-prefixed, so no two keys encode alike.
        raw = f"{len(org)}:{org}{len(source)}:{source}{eid}".encode()
        return hashlib.blake2b(raw, digest_size=_DIGEST).digest()

    async def open(self, log: RecentLog) -> None:
        return None

    async def close(self) -> None:
        """Writes what is stored, stops renewing (what this node still claims lapses) and
        disconnects."""
        if self._committed:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._confirm(self._take_committed())
        for task in (self._renewer, self._confirmer, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._renewer = self._confirmer = self._sender = None
        for _, waiting in self._lane:
            waiting.cancel()
        self._lane.clear()
        self._frames.clear()
        self._claimed.clear()
        await self._redis.aclose()

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

    def _digests(self, keys: Sequence[DedupKey]) -> list[bytes]:
        memo = self._memo
        if len(memo) > _MEMO_MAX:
            memo.clear()  # keys of publishes that never got to stored/forget
        rkeys = []
        for key in keys:
            d = memo.get(key)
            if d is None:
                d = memo[key] = self._key(key)
            rkeys.append(d)
        return rkeys

    async def record(self, keys: Sequence[DedupKey]) -> list[int]:
        """:meth:`lookup` for a fresh frame (ids its client generated for this first send):
        claims the keys with one script call of its own, concurrent with any other, instead
        of a claim in the node's ordered lane. A key that is there already (a resend that
        overtook its first send, a client that flags old ids) is looked up as usual, so the
        answers are :meth:`lookup` 's."""
        rkeys = self._digests(keys)
        todo = list(dict.fromkeys(rkeys))
        name = f"{self._node}{next(self._numbers):x}"
        held_at = time.monotonic()
        args: list[bytes | str | int] = [
            *(self._prefix, self._window_ms, b"".join(todo), name, self._claim_ms)
        ]
        try:
            there = {int(n) for n in await self._fresh(keys=[], args=args)}
        except REDIS_ERRORS as exc:
            raise redis_failed(_WHAT, exc) from exc
        self.records += 1
        frame = _Frame(name, [0] * len(todo), held_at, len(todo) - len(there))
        if frame.live:
            self._hold(frame, [(k, i) for i, k in enumerate(todo) if i not in there])
        if not there:
            return [0] * len(keys)
        # Rare: the claim of those keys decides, through the lane (a node's claims never
        # wait for a later claim of theirs: see _send_claim).
        again = [keys[rkeys.index(todo[i])] for i in there]
        known = dict(zip(again, await self.lookup(again), strict=True))
        return [known.get(key, 0) for key in keys]

    async def lookup(self, keys: Sequence[DedupKey]) -> list[int]:
        """The id stored for each key, or 0 for a key this call claimed (the caller appends
        its event, then :meth:`remember` s or :meth:`forget` s it). Its claim is queued
        before the call first suspends (see :meth:`_send_claim`)."""
        memo = self._memo
        rkeys = self._digests(keys)
        found: dict[bytes, int] = {}
        todo = list(dict.fromkeys(rkeys))  # a key twice in one batch is claimed once
        deadline = time.monotonic() + self._claim_ms / 1000 + 1.0
        pause = 0.005
        while todo:
            name = f"{self._node}{next(self._numbers):x}"
            try:
                args: list[bytes | str | int] = [
                    *(self._prefix, self._window_ms, b"".join(todo), name, self._claim_ms)
                ]
                answers = await self._send_claim(args)
            except REDIS_ERRORS as exc:
                raise redis_failed(_WHAT, exc) from exc
            waiting = []
            there: set[int] = set()
            for n in range(0, len(answers), 2):  # only the keys that were there
                i, old = int(answers[n]), answers[n + 1]
                there.add(i)
                if old[:1] == b"=":
                    found[todo[i]] = int.from_bytes(old[1 : 1 + _ID_BYTES], "big")
                else:
                    waiting.append(todo[i])  # another frame with this event is being appended
            frame = _Frame(name, [0] * len(todo), time.monotonic(), len(todo) - len(there))
            if frame.live:
                self._hold(frame, [(k, i) for i, k in enumerate(todo) if i not in there])
            todo = waiting
            if todo:
                self.waits += 1
                if time.monotonic() > deadline:
                    raise Unavailable(
                        "an event with the same source and id is still being published "
                        "through another node",
                        hint="retry the publish",
                    )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.1)
        answers = [found.get(k, 0) for k in rkeys]
        for key, answer in zip(keys, answers, strict=True):
            if answer:
                memo.pop(key, None)  # a duplicate: neither remembered nor forgotten
        return answers

    async def remember(self, entries: Sequence[tuple[DedupKey, int]]) -> None:
        """Notes the staged events' ids, here (see the module): their keys stay claims, and
        a duplicate is answered with the ids only once :meth:`stored` says their append
        committed and writes them."""
        memo, digest, claimed = self._memo, self._key, self._claimed
        for key, event_id in entries:
            held = claimed.get(memo.get(key) or digest(key))
            if held is not None:
                held[0].ids[held[1]] = event_id

    def stored(self, keys: Sequence[DedupKey]) -> None:
        """The append of these remembered keys' events committed: their frames' ids hold for
        the window from now on (written in the background, many frames at a time)."""
        memo, digest, claimed = self._memo, self._key, self._claimed
        frames: dict[str, _Frame] = {}
        for key in keys:
            held = claimed.pop(memo.pop(key, b"") or digest(key), None)
            if held is not None and held[0].live:
                frames[held[0].name] = held[0]
        if not frames:
            return
        for frame in frames.values():
            if not frame.stored:
                frame.stored = True
                self._committed.append(frame)
        self._confirm_wake.set()
        if self._confirmer is None:
            self._confirmer = asyncio.get_running_loop().create_task(
                self._confirm_loop(), name="lockgate-dedup-stored"
            )

    def _take_committed(self) -> list[_Frame]:
        frames, self._committed = self._committed, []
        return [f for f in frames if f.live]

    async def _confirm(self, frames: Sequence[_Frame]) -> None:
        args: list[bytes | str | int] = [self._prefix, self._window_ms]
        for f in frames:
            args += (f.name, b"".join([i.to_bytes(_ID_BYTES, "big") for i in f.ids]))
        await self._store(keys=[], args=args)
        for f in frames:
            self._drop(f)

    async def _confirm_loop(self) -> None:
        while True:
            await self._confirm_wake.wait()
            self._confirm_wake.clear()
            frames = self._take_committed()
            if not frames:
                continue
            try:
                await self._confirm(frames)
            except REDIS_ERRORS as exc:
                # Still pending, and renewed: tried again with the next ones (a publish
                # meanwhile fails closed on the same Redis anyway).
                self._committed[:0] = frames
                _log.warning("dedup.stored.failed: %s", redis_failed(_WHAT, exc).message)
                await asyncio.sleep(0.1)
                self._confirm_wake.set()

    async def forget(self, keys: Sequence[DedupKey]) -> None:
        if not keys:
            return
        memo, claimed = self._memo, self._claimed
        rkeys = [memo.pop(k, b"") or self._key(k) for k in keys]
        gone: list[bytes] = []
        for k in rkeys:
            held = claimed.pop(k, None)
            if held is None:
                continue
            frame = held[0]
            frame.live -= 1
            if frame.live <= 0 and not frame.stored:  # none of its keys is stored: it goes
                self._drop(frame)
                gone.append(self._prefix + b"f:" + frame.name.encode() + b":p")
        try:
            await self._redis.delete(*[self._prefix + k for k in rkeys], *gone)
        except REDIS_ERRORS as exc:
            raise redis_failed(_WHAT, exc) from exc
