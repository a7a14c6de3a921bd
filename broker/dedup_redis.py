"""The dedup window shared by the nodes of a cluster, in Redis.

A publish retried through another node (the client failing over) must be stored once, and a
publish whose append failed must not be remembered. Each event's key ``(org, source, id)``
is one Redis key holding the id it was stored under, expiring after the window (Redis's
clock, so the nodes' clocks need not agree):

1. :meth:`RedisDedupWindow.lookup` *claims* every new key before the batch is appended:
   ``SET key 0 NX PX claim GET`` for each. The node whose
   ``SET`` wins appends the event; a node that finds an id answers the duplicate with it; a
   node that finds a claim (``0``, or ``p<id>`` written by an older version: another node
   is appending that event right now) waits until it becomes an id or goes away, then
   decides again.
2. :meth:`RedisDedupWindow.remember` notes the staged events' ids as *pending*, in the node
   only: in Redis their keys stay claims, the append has not committed yet.
3. :meth:`RedisDedupWindow.stored` (after the append committed) turns the claims into ids
   for the whole window, in the background, coalescing the batches of many publishes.
4. :meth:`RedisDedupWindow.forget` deletes them when the append failed, so a retry is
   accepted.

An id is therefore only answered as a duplicate once its event is in the log: a node killed
between staging and committing leaves a claim, never an id, and the retry through another
node stores the event (it was an answered duplicate of an event never stored, so an
acknowledged event lost, before claims were held until the commit).

Claims last ``claim`` seconds (1 by default) and the node that holds them renews those older
than an eighth of that every quarter of it until they are ids or deleted, so a slow append
(a loaded machine, a backbone that takes its time) keeps them however long it takes, and
those of a node that died (kill -9 between 1 and 3) run out within ``claim`` seconds of its
last renewal. That bounds how long a publish retried through another node waits for a dead
node's events: the client's failover resumes within about ``claim`` seconds (it was a fixed
5 s claim, which a failover that met one waited out in full). A node that dies after its
answer and before 3 leaves claims that run out: a later retry of those events would be
stored again (a duplicate, never a loss).

Redis runs the window's commands one at a time for every node, so its cost per event bounds
the cluster's publish rate: two writes per event (the claim and the id; step 2 wrote the
pending id too, and every held claim was renewed every quarter period, about 3.8 commands
per event in all). Each step is one command per batch, never a command per event: a Lua
script given the batch's key digests back to back in one argument (and the ids in another),
or one ``DEL``. redis-py spends about 20 us of Python per pipelined command and a few per
argument, which cost more than the whole embedded publish path (46.6 us of CPU per event
for the window in bench/cluster_bench.py, 3.7 us with the scripts). The scripts name their
keys themselves, so the window needs one Redis server (not Redis Cluster, which the
limiter's multi-key script does not support either).

Keys are compact: a 128-bit BLAKE2b digest of the key under the prefix, whatever the lengths
of ``source`` and ``id`` (about 90 bytes of Redis memory per event).

Example::

    window = RedisDedupWindow("redis://127.0.0.1:6379/0", 120.0)
    assert await window.lookup([("acme", "src", "e1")]) == [0]  # claimed: append it
    await window.remember([(("acme", "src", "e1"), 42)])
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lockgate.broker.dedup import DedupKey, RecentLog
from lockgate.broker.errors import Unavailable
from lockgate.broker.redisconn import REDIS_ERRORS, connect, redis_failed

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["DEFAULT_CLAIM", "RedisDedupWindow"]

DEFAULT_CLAIM = 1.0
"""Seconds a claim holds after its node's last renewal: when the node died
before its append committed, a retry through another node waits at most this long for it."""
_WHAT = "the Redis dedup window"

MAX_HOLD = 30.0
"""Seconds a node renews one claim at most (a publish takes milliseconds between its claim
and its id; this bounds a claim that a bug left behind)."""

_log = logging.getLogger("lockgate.dedup")

_MEMO_MAX = 50_000
"""Keys whose digests are kept between the steps of their publishes (a cache: cleared when
this full, which only costs digests computed again)."""
_DIGEST = 16
"""Bytes of a key's digest; the scripts take a batch's digests back to back."""
_CLAIM = """
local prefix, px, blob = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 1, #blob, 16 do
  local old = redis.call('SET', prefix .. string.sub(blob, i, i + 15), '0', 'NX', 'PX', px, 'GET')
  if old then
    out[#out + 1] = (i - 1) / 16
    out[#out + 1] = old
  end
end
return out
"""
"""Claims every key of the batch that is not there yet; answers ``[index, old value, ...]``
for the keys that were there (none, usually)."""
_SET_IDS = """
local prefix, px, blob, tag = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local i = 1
for id in string.gmatch(ARGV[4], '%d+') do
  redis.call('SET', prefix .. string.sub(blob, i, i + 15), tag .. id, 'PX', px)
  i = i + 16
end
return 0
"""
"""Sets each key to its id (``ARGV[4]``, space-separated), tagged ``p`` while pending."""
_RENEW = """
local prefix, px, blob = ARGV[1], ARGV[2], ARGV[3]
for i = 1, #blob, 16 do
  local k = prefix .. string.sub(blob, i, i + 15)
  local v = redis.call('GET', k)
  if v == '0' or (v and string.sub(v, 1, 1) == 'p') then redis.call('PEXPIRE', k, px) end
end
return 0
"""
"""Extends the claims ("0", or "p<id>" from an older version) among the keys: a key that
became an id meanwhile (stored) is left as it is."""


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
        self._prefix = (prefix + "dd:").encode()
        self._window_ms = max(1, int(window * 1000))
        self._claim_ms = max(1, min(self._window_ms, int(claim * 1000)))
        self.waits = 0
        """How many times a lookup met a key claimed elsewhere and waited for its outcome."""
        self.renewals = 0
        """How many times this node renewed the claims it holds."""
        # register_script's Script runs EVALSHA and loads the script on NOSCRIPT.
        self._renew = self._redis.register_script(_RENEW)
        self._claim = self._redis.register_script(_CLAIM)
        self._set_ids = self._redis.register_script(_SET_IDS)
        # Claimed here (or pending) and neither stored nor forgotten yet -> when (monotonic).
        self._held: dict[bytes, float] = {}
        self._pending: dict[bytes, int] = {}  # remembered here, their append not committed
        self._renewer: asyncio.Task[None] | None = None
        self._committed: list[bytes] = []  # stored: to turn into ids
        self._confirmer: asyncio.Task[None] | None = None
        self._confirm_wake = asyncio.Event()
        self._memo: dict[DedupKey, bytes] = {}
        """Digests of the keys looked up, until stored or forgotten: one digest per event
        rather than one per step (a BLAKE2b and a string format each)."""

    @staticmethod
    def _key(key: DedupKey) -> bytes:
        """The key's digest (the Redis key is it under the prefix)."""
        org, source, eid = key
        # Length-prefixed, so no two keys encode alike.
        raw = f"{len(org)}:{org}{len(source)}:{source}{eid}".encode()
        return hashlib.blake2b(raw, digest_size=_DIGEST).digest()

    def _write_ids(self, entries: Sequence[tuple[bytes, int]], px: int, tag: bytes) -> Any:
        """Sets each key (a digest) to its id, tagged, for ``px`` ms: one script call."""
        blob = b"".join([k for k, _ in entries])
        ids = " ".join([str(i) for _, i in entries])
        return self._set_ids(keys=[], args=[self._prefix, px, blob, ids, tag])

    async def open(self, log: RecentLog) -> None:
        return None

    async def close(self) -> None:
        """Turns what is stored into ids, stops renewing (what this node still claims runs
        out) and disconnects."""
        if self._committed:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._confirm(self._take_committed())
        for task in (self._renewer, self._confirmer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._renewer = self._confirmer = None
        self._held.clear()
        self._pending.clear()
        await self._redis.aclose()

    def _hold(self, keys: Sequence[bytes]) -> None:
        now = time.monotonic()
        self._held.update(dict.fromkeys(keys, now))
        if self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_loop(), name="lockgate-dedup-claims"
            )

    def _release(self, keys: Sequence[bytes]) -> None:
        held, pending = self._held, self._pending
        for k in keys:
            held.pop(k, None)
            pending.pop(k, None)

    async def _renew_loop(self) -> None:
        """Renews this node's claims until it holds none (the next claim starts it again:
        an idle node does not wake four times a second for nothing)."""
        every = self._claim_ms / 4000
        while True:
            await asyncio.sleep(every)
            if not self._held:
                self._renewer = None
                return
            # A claim whose publish neither remembered nor forgot it (an error between the
            # two) is renewed no longer than MAX_HOLD: it then runs out as a dead node's does.
            now = time.monotonic()
            oldest = now - MAX_HOLD
            for k in [k for k, at in self._held.items() if at < oldest]:
                del self._held[k]
                self._pending.pop(k, None)
            # Only claims made half a period ago or more: the others still have at least
            # 3/4 of ``claim`` to run, and most are stored before the next turn (renewing
            # every held key cost Redis about one more command per published event).
            recent = now - every / 2
            due = [k for k, at in self._held.items() if at <= recent]
            if not due:
                continue
            try:
                blob = b"".join(due)
                await self._renew(keys=[], args=[self._prefix, self._claim_ms, blob])
                self.renewals += 1
            except REDIS_ERRORS as exc:
                # The append that holds these claims fails on the same Redis; a claim that
                # runs out meanwhile only lets a retry elsewhere in sooner.
                _log.warning("dedup.claims.renew_failed: %s", redis_failed(_WHAT, exc).message)

    async def lookup(self, keys: Sequence[DedupKey]) -> list[int]:
        """The id stored for each key, or 0 for a key this call claimed (the caller appends
        its event, then :meth:`remember` s or :meth:`forget` s it)."""
        memo = self._memo
        if len(memo) > _MEMO_MAX:
            memo.clear()  # keys of publishes that never got to stored/forget
        rkeys = []
        for key in keys:
            d = memo.get(key)
            if d is None:
                d = memo[key] = self._key(key)
            rkeys.append(d)
        found: dict[bytes, int] = {}
        todo = list(dict.fromkeys(rkeys))  # a key twice in one batch is claimed once
        deadline = time.monotonic() + self._claim_ms / 1000 + 1.0
        pause = 0.005
        while todo:
            try:
                args: list[bytes | int] = [self._prefix, self._claim_ms, b"".join(todo)]
                answers = await self._claim(keys=[], args=args)
            except REDIS_ERRORS as exc:
                raise redis_failed(_WHAT, exc) from exc
            waiting = []
            there: set[bytes] = set()
            for n in range(0, len(answers), 2):  # only the keys that were there
                k, old = todo[int(answers[n])], answers[n + 1]
                there.add(k)
                if old == b"0" or old[:1] == b"p":
                    waiting.append(k)  # another publish of this event is being appended
                else:
                    found[k] = int(old)
            won = [k for k in todo if k not in there] if there else todo
            if won:
                self._hold(won)
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
        """Records the staged events' ids as pending, here (see the module): their keys
        stay claimed in Redis, and a duplicate is answered with the ids only once
        :meth:`stored` says their append committed and writes them."""
        if not entries:
            return
        memo, digest = self._memo, self._key
        self._pending.update((memo.get(key) or digest(key), event_id) for key, event_id in entries)

    def stored(self, keys: Sequence[DedupKey]) -> None:
        """The append of these remembered keys' events committed: their ids hold for the
        window from now on (written in the background, many publishes at a time)."""
        pending = self._pending
        memo, digest = self._memo, self._key
        committed = [d for d in [memo.pop(k, b"") or digest(k) for k in keys] if d in pending]
        if not committed:
            return
        self._committed += committed
        self._confirm_wake.set()
        if self._confirmer is None:
            self._confirmer = asyncio.get_running_loop().create_task(
                self._confirm_loop(), name="lockgate-dedup-stored"
            )

    def _take_committed(self) -> list[tuple[bytes, int]]:
        keys, self._committed = self._committed, []
        pending = self._pending
        return [(k, pending[k]) for k in keys if k in pending]

    async def _confirm(self, entries: Sequence[tuple[bytes, int]]) -> None:
        await self._write_ids(entries, self._window_ms, b"")
        self._release([k for k, _ in entries])

    async def _confirm_loop(self) -> None:
        while True:
            await self._confirm_wake.wait()
            self._confirm_wake.clear()
            entries = self._take_committed()
            if not entries:
                continue
            try:
                await self._confirm(entries)
            except REDIS_ERRORS as exc:
                # Still pending, and renewed: tried again with the next ones (a publish
                # meanwhile fails closed on the same Redis anyway).
                self._committed[:0] = [k for k, _ in entries]
                _log.warning("dedup.stored.failed: %s", redis_failed(_WHAT, exc).message)
                await asyncio.sleep(0.1)
                self._confirm_wake.set()

    async def forget(self, keys: Sequence[DedupKey]) -> None:
        if not keys:
            return
        memo = self._memo
        rkeys = [memo.pop(k, b"") or self._key(k) for k in keys]
        try:
            await self._redis.delete(*[self._prefix + k for k in rkeys])
        except REDIS_ERRORS as exc:
            raise redis_failed(_WHAT, exc) from exc
        finally:
            self._release(rkeys)
