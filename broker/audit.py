"""The audit log: who did what, when, from where, and how it ended.

Security-relevant actions (authentication failures, credentials created and revoked, policy
and configuration changes, durable deletion, dead-letter redrive, denied publishes and
subscriptions) become :class:`~broker.store.AuditRecord` s in the store's audit role.

*Who* and *from where* travel with the call (``broker.actor``: the surface that takes a call
names itself and its peer, authentication adds the principal and the credential, in a context
variable that follows the call's task). So an instrumented place is one line::

    audit.record("durable.delete", target=name)

:meth:`AuditLog.record` is synchronous and O(1): it appends to a bounded in-memory queue that
a background task writes to the store in batches, so nothing on the publish path waits for
the audit log. Floods are bounded twice:

- **Aggregation.** Denials are counted per (org, agent, credential, action, target, rule)
  and authentication failures per peer host: the first of a kind in a window (``window``
  seconds, 10 by default) is recorded at once, the repeats are summed into one record with
  their ``count`` when the window ends. Past ``max_keys`` kinds in one window, new kinds of
  an action share one record (target ``*``).
- **Dropping.** When the queue holds ``max_queue`` records, further ones are dropped and
  counted (in actions), and an ``audit.dropped`` record with that count is written next.

Records older than ``retention`` (90 days by default) are removed once an hour. Reading
them, and who may read which, is ``broker.audit_read``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping

from lockgate.broker.actor import current_actor
from lockgate.broker.auth import Principal
from lockgate.broker.errors import BrokerError
from lockgate.broker.store import AuditQuery, AuditRecord, AuditStore

__all__ = ["AuditLog"]

log = logging.getLogger("lockgate.audit")

DAY = 86_400.0
_TRIM_EVERY = 3600.0
_RETRY = 1.0


def _host(peer: str) -> str:
    """The address of a peer without its port (a flood from one host uses many ports)."""
    for prefix in ("ipv4:", "ipv6:"):
        if peer.startswith(prefix):
            peer = peer[len(prefix) :]
            if peer.startswith("["):
                return peer[1 : peer.find("]")] if "]" in peer else peer
            return peer.rsplit(":", 1)[0] if ":" in peer else peer
    return peer


class _Kind:
    """One aggregation key in the current window: the first record and the repeats."""

    __slots__ = ("first", "last_ms", "repeats", "since_ms")

    def __init__(self, first: AuditRecord) -> None:
        self.first = first
        self.repeats = 0
        self.since_ms = 0
        self.last_ms = 0


class AuditLog:
    """Records audit entries off the caller's path; ``await start()``, ``await stop()``.

    Without a store (``AuditLog(None)``) it records nothing, so code can call it unchecked.
    """

    def __init__(
        self,
        store: AuditStore | None,
        *,
        retention: float = 90 * DAY,
        window: float = 10.0,
        max_queue: int = 10_000,
        max_keys: int = 1000,
    ) -> None:
        self._store = store
        self.retention = retention
        self.window = window
        self.max_queue = max_queue
        self.max_keys = max_keys
        self._queue: collections.deque[AuditRecord] = collections.deque()
        self._kinds: dict[tuple[str, ...], _Kind] = {}
        self.dropped = 0
        """Actions whose records were dropped since the last ``audit.dropped`` was queued."""
        self.dropped_total = 0
        self.high_water = 0
        """The most records the queue ever held (at most ``max_queue``)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- recording (synchronous, O(1)) ---------------------------------------------------------

    def _put(self, rec: AuditRecord) -> None:
        if self._store is None:
            return
        if len(self._queue) >= self.max_queue:
            # Counted in actions, so an aggregated record lost still adds up.
            self.dropped += rec.count
            self.dropped_total += rec.count
            return
        self._queue.append(rec)
        if len(self._queue) > self.high_water:
            self.high_water = len(self._queue)
        self._wake.set()

    def _make(
        self,
        action: str,
        outcome: str,
        target: str,
        detail: Mapping[str, str] | None,
        principal: Principal | None,
        count: int = 1,
    ) -> AuditRecord:
        a = current_actor()
        org, agent = (principal.org, principal.agent) if principal is not None else (a.org, a.agent)
        return AuditRecord(
            int(time.time() * 1000),
            action,
            outcome,
            org,
            agent,
            a.credential,
            target,
            a.surface,
            a.peer,
            count,
            dict(detail or {}),
        )

    def record(
        self,
        action: str,
        outcome: str = "ok",
        *,
        target: str = "",
        detail: Mapping[str, str] | None = None,
        principal: Principal | None = None,
    ) -> None:
        """Records one action by the current caller (or by ``principal``)."""
        if self._store is not None:
            self._put(self._make(action, outcome, target, detail, principal))

    def denied(
        self,
        action: str,
        target: str,
        err: BrokerError,
        count: int = 1,
        *,
        principal: Principal | None = None,
        policy_version: str = "",
    ) -> None:
        """Records ``count`` ``action`` s on ``target`` refused with ``err`` (a policy
        denial carries its rule, ``file:line`` in ``policy_version``, and effect),
        aggregated per principal, action, target, rule."""
        if self._store is None:
            return
        a = current_actor()
        org, agent = (principal.org, principal.agent) if principal is not None else (a.org, a.agent)
        rule = err.metadata.get("rule", "")
        key = ("denied", org, agent, a.credential, action, target, rule)
        self._aggregate(
            key, count, lambda: self._denial(action, target, err, principal, policy_version)
        )

    def _denial(
        self,
        action: str,
        target: str,
        err: BrokerError,
        principal: Principal | None,
        policy_version: str,
    ) -> AuditRecord:
        detail = {"reason": err.reason, "message": err.message[:500]}
        if policy_version:
            detail["policy_version"] = policy_version
        for name in ("rule", "effect", "role", "needs"):
            if err.metadata.get(name):
                detail[name] = err.metadata[name]
        return self._make(action, "denied", target, detail, principal)

    def auth_failed(self, err: BrokerError) -> None:
        """Records a refused authentication of the current call, aggregated per peer host
        (a flood from one host, with a new key or port each time, is one record a window)."""
        if self._store is None:
            return
        a = current_actor()
        key = ("auth", a.surface, _host(a.peer))
        self._aggregate(
            key,
            1,
            lambda: self._make(
                "auth", "failed", "", {"reason": err.reason, "message": err.message[:500]}, None
            ),
        )

    def _aggregate(self, key: tuple[str, ...], count: int, make: Callable[[], AuditRecord]) -> None:
        kind = self._kinds.get(key)
        if kind is None:
            if len(self._kinds) >= self.max_keys:
                # Too many kinds this window: what is new shares one record per action.
                first = make()
                key = ("overflow", first.action, first.outcome)
                kind = self._kinds.get(key)
                if kind is None:
                    kind = self._kinds[key] = _Kind(
                        dataclasses.replace(
                            first,
                            org="*",
                            agent="*",
                            credential="*",
                            target="*",
                            peer="*",
                            detail={"aggregated": "more kinds than audit max_keys in a window"},
                            count=0,
                        )
                    )
            else:
                first = make()
                self._kinds[key] = _Kind(first)
                if count > 1:
                    first = dataclasses.replace(first, count=count)
                self._put(first)
                return
        now = int(time.time() * 1000)
        if not kind.repeats:
            kind.since_ms = now
        kind.repeats += count
        kind.last_ms = now

    def _roll(self) -> None:
        """Ends the window: one record per kind with repeats, carrying their count."""
        kinds, self._kinds = self._kinds, {}
        for kind in kinds.values():
            if kind.repeats:
                detail = dict(kind.first.detail)
                detail["last_time_ms"] = str(kind.last_ms)
                self._put(
                    dataclasses.replace(
                        kind.first, time_ms=kind.since_ms, count=kind.repeats, detail=detail
                    )
                )

    # -- writing -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._store is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="lockgate-audit")

    async def stop(self) -> None:
        """Writes what is queued and what the window aggregated, then stops."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._roll()
        try:
            await self._flush()
        except BrokerError as exc:
            log.error("audit.write.failed: %d records lost at stop: %s", len(self._queue), exc)

    async def config_loaded(self, settings: Mapping[str, object]) -> None:
        """Records the configuration a broker starts with (``settings``: redacted plain
        data) and which settings changed since the previous start recorded."""
        if self._store is None:
            return
        last = await self._store.query_audit(
            AuditQuery(action="config.load", limit=1, newest_first=True)
        )
        before: dict[str, object] = {}
        if last:
            try:
                before = json.loads(last[0].detail.get("settings", "{}"))
            except ValueError:
                before = {}
        now = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
        changed = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
        detail = {
            "changed": ",".join(changed) if last else "(first start)",
            "settings": json.dumps(now, sort_keys=True),
        }
        self._put(self._make("config.load", "ok", "", detail, None))

    async def flush(self) -> None:
        """Writes what is queued now (tests and the CLI use it; the task does it anyway)."""
        await self._flush()

    async def _flush(self) -> None:
        if self._store is None:
            return
        while self._queue or self.dropped:
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                self._queue.append(
                    AuditRecord(
                        int(time.time() * 1000),
                        "audit.dropped",
                        "failed",
                        count=dropped,
                        detail={"why": "the audit queue was full"},
                    )
                )
            batch = list(self._queue)
            self._queue.clear()
            try:
                await self._store.append_audit(batch)
            except BrokerError:
                # Put back what fits, so a short store outage loses nothing it need not.
                room = max(0, self.max_queue - len(self._queue))
                self._queue.extendleft(reversed(batch[:room]))
                self.dropped += sum(r.count for r in batch[room:])
                raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_roll = loop.time() + self.window
        next_trim = loop.time()
        while True:
            if loop.time() >= next_roll:
                self._roll()
                next_roll = loop.time() + self.window
            try:
                await self._flush()
                if loop.time() >= next_trim:
                    next_trim = loop.time() + _TRIM_EVERY
                    await self._trim()
            except BrokerError as exc:
                log.error("audit.write.failed: %s; retrying", exc)
                await asyncio.sleep(_RETRY)
            # Clear before waiting: a record put during the flush above set it, and waits.
            if not self._queue and not self.dropped:
                self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_roll - loop.time()))

    async def _trim(self) -> None:
        assert self._store is not None
        if self.retention > 0:
            cutoff = int((time.time() - self.retention) * 1000)
            removed = await self._store.trim_audit(cutoff)
            if removed:
                log.info("audit.retention.removed: %d records", removed)
