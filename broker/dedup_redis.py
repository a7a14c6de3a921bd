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
import time
from collections.abc import Sequence

from lockgate.broker.dedup import DedupKey, RecentLog
from lockgate.broker.dedup_redis_claims import (
    _WHAT,
    DEFAULT_CLAIM,
    RedisClaims,
    _Frame,
    _log,
)
from lockgate.broker.dedup_redis_scripts import _DIGEST, _FRESH, _ID_BYTES, _STORED
from lockgate.broker.errors import Unavailable
from lockgate.broker.redisconn import REDIS_ERRORS, redis_failed

__all__ = ["DEFAULT_CLAIM", "RedisDedupWindow"]

_MEMO_MAX = 50_000
"""Keys whose digests are kept between the steps of their publishes (a cache: cleared when
this full, which only costs digests computed again)."""


class RedisDedupWindow(RedisClaims):
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
        super().__init__(url, window, prefix=prefix, claim=claim)
        self.claims = True
        self.waits = 0
        """How many times a lookup met a key claimed elsewhere and waited for its outcome."""
        self.records = 0
        """How many fresh frames this node recorded without a lookup (:meth:`record`)."""
        self._store = self._redis.register_script(_STORED)
        self._fresh = self._redis.register_script(_FRESH)
        self._committed: list[_Frame] = []  # stored: records to write
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
        # A key per digest through a dict: rkeys.index per key was quadratic in a frame a
        # client flagged fresh whose keys are all there (a lying or replaying client).
        key_of = dict(zip(rkeys, keys, strict=True))
        again = [key_of[todo[i]] for i in there]
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
