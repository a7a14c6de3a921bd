"""What the dashboard reads of a broker in this process, behind the same permissions as every
other surface: subject rates, live subscriptions and durables with their lag, dead letters
(and their redrive), policy versions and their diff, recent denials, and the nodes.

It wraps :class:`broker.api.LocalAPI` (the gateways' contract inside ``lockgate serve``);
a gateway in front of a remote broker has no such view (these are no gRPC calls), so the
dashboard is served by ``lockgate serve``'s own HTTP gateway.

Example::

    view = AdminView(LocalAPI(broker, auth))
    rates = await view.subject_rates(admin_key)
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import time
from dataclasses import dataclass

from lockgate.broker.activity import Denial, SubjectRate
from lockgate.broker.api import LocalAPI, StoredEvent
from lockgate.broker.errors import BrokerError, NotFound
from lockgate.broker.permissions import BROKER
from lockgate.broker.redaction import shown_url
from lockgate.broker.roster import RosterEntry
from lockgate.broker.store import DeadLetterRecord, PolicyVersionRecord

__all__ = [
    "AdminView",
    "DeadLetterView",
    "NodeView",
    "PolicyDiff",
    "RatesView",
    "SubscriptionView",
]


@dataclass(frozen=True, slots=True)
class RatesView:
    """Events stored per subject in buckets of ``bucket_seconds``, oldest first, the last
    bucket ending at ``now_ms``."""

    bucket_seconds: float
    buckets: int
    now_ms: int
    subjects: list[SubjectRate]


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    """One live ephemeral subscription or one durable on this node."""

    kind: str
    """``ephemeral`` or ``durable``."""
    org: str
    name: str
    pattern: str
    pending: int
    """Durable: delivered and not yet acknowledged; ephemeral: frames waiting for the stream."""
    ready: int
    """Durable: read from the log and waiting for room to be delivered."""
    lag: int
    """Durable: log batches after its read position (ephemeral: 0)."""
    connected: int
    endpoint_url: str = ""
    agent: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    record: DeadLetterRecord
    event: StoredEvent | None
    """The original event, or None where it is gone (retention)."""


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    org: str
    old: str
    new: str
    diff: str
    """A unified diff of every file of the two versions."""


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: str
    store: str
    history_lag: int | None
    roster: list[RosterEntry]
    """The live nodes (this one too), by node id."""


def diff_versions(old: PolicyVersionRecord, new: PolicyVersionRecord) -> str:
    """A unified diff of the files of two policy versions, file by file, by name."""
    out: list[str] = []
    for name in sorted(set(old.files) | set(new.files)):
        a = old.files.get(name, "").splitlines(keepends=True)
        b = new.files.get(name, "").splitlines(keepends=True)
        lines = difflib.unified_diff(
            a, b, f"{old.version}/{name}", f"{new.version}/{name}", lineterm="\n"
        )
        out.extend(line if line.endswith("\n") else line + "\n" for line in lines)
    return "".join(out)


class AdminView:
    """The dashboard's reads and its one write (redrive), each authorized per call."""

    def __init__(self, api: LocalAPI, *, max_subscriptions: int = 1000) -> None:
        self.api = api
        self.broker = api.broker
        self.max_subscriptions = max_subscriptions
        self._diffs = asyncio.Semaphore(1)  # one diff's thread at a time

    async def subject_rates(self, key: str | None) -> RatesView:
        await self.api.principal(key, "activity.read", BROKER)
        rates = self.broker.pipeline.rates
        bucket = rates.bucket_seconds
        end_ms = int((time.time() // bucket + 1) * bucket * 1000)
        return RatesView(bucket, rates.buckets, end_ms, rates.snapshot())

    async def denials(self, key: str | None, limit: int = 100) -> list[Denial]:
        await self.api.principal(key, "activity.read", BROKER)
        return self.broker.policy.denials.latest(limit)

    async def subscriptions(self, key: str | None) -> list[SubscriptionView]:
        await self.api.principal(key, "activity.read", BROKER)
        out: list[SubscriptionView] = []
        durables = self.broker.durables
        for (org, name), c in sorted(self.broker.consumers.items()):
            out.append(
                SubscriptionView(
                    "durable",
                    org,
                    name,
                    c.rec.pattern,
                    len(c.pending),
                    len(c.ready),
                    durables.lag_of(c),
                    len(c.sessions),
                    shown_url(c.rec.endpoint_url),
                )
            )
        for sub in self.broker.ephemerals.live_subscriptions()[: self.max_subscriptions]:
            out.append(
                SubscriptionView(
                    "ephemeral",
                    sub.org,
                    sub.queue or sub.name,
                    sub.pattern,
                    sub.outbox.buffered,
                    0,
                    0,
                    1,
                    agent=sub.reader.agent if sub.reader is not None else "",
                )
            )
        return out[: self.max_subscriptions]

    async def dead_letters(
        self, key: str | None, org: str, durable: str = "", limit: int = 100
    ) -> list[DeadLetterView]:
        """The oldest ``limit`` dead letters of ``org`` ("": the caller's), of ``durable``
        or of all its durables."""
        p = await self.api.principal(key, "dead_letters.manage", org)
        org = org or p.org
        if durable:
            await self.broker.durable_view(org, durable)  # NOT_FOUND for an unknown one
        recs = await self.broker.store.list_dead_letters(org, durable, (0, 0), limit)
        out = []
        for r in recs:
            event = None
            # The caller may manage this org's dead letters, so it may read them whole.
            with contextlib.suppress(BrokerError):
                event = await self.broker.history.get_event(org, r.id)
            out.append(DeadLetterView(r, event))
        return out

    async def redrive(self, key: str | None, org: str, durable: str, ids: list[int]) -> int:
        """Gives dead letters (``ids``; empty: all of the durable's) back to ``durable``."""
        p = await self.api.principal(key, "dead_letters.manage", org)
        n = await self.broker.redrive(org or p.org, durable, ids or None)
        detail = {"count": str(n), "ids": ",".join(map(str, ids[:100])) or "all"}
        if org and org != p.org:
            detail["org"] = org
        self.broker.audit.record("dlq.redrive", target=durable, detail=detail)
        return n

    async def policy_versions(self, key: str | None, org: str | None) -> list[PolicyVersionRecord]:
        """The versions of ``org``'s own set ("": the caller's; None: the global set)."""
        p = await self.api.principal(key, "policy.read", org)
        return await self.broker.store.list_policy_versions("" if org is None else (org or p.org))

    async def policy_diff(
        self, key: str | None, org: str | None, old: str = "", new: str = ""
    ) -> PolicyDiff:
        """The diff from version ``old`` (default: the one before ``new``) to ``new``
        (default: the running one)."""
        versions = await self.policy_versions(key, org)  # newest first
        names = [v.version for v in versions]

        def find(version: str) -> int:
            if version not in names:
                raise NotFound(
                    f"policy version {version} does not exist",
                    reason="UNKNOWN_VERSION",
                    hint="list the versions with GET /v1/policies/versions",
                )
            return names.index(version)

        if not versions:
            raise NotFound("there is no policy version", reason="UNKNOWN_VERSION")
        running = [i for i, v in enumerate(versions) if v.active]
        to = find(new) if new else (running[0] if running else 0)
        frm = find(old) if old else min(to + 1, len(versions) - 1)
        a, b = versions[frm], versions[to]
        # Off the event loop: difflib is quadratic on many lines repeating a few, and an
        # org-admin writes the versions (a 40 KB pair costs seconds).
        async with self._diffs:
            text = await asyncio.to_thread(diff_versions, a, b)
        return PolicyDiff(org or "", a.version, b.version, text)

    async def nodes(self, key: str | None) -> NodeView:
        await self.api.principal(key, "activity.read", BROKER)
        b = self.broker
        return NodeView(
            b.node_id,
            b.store_kind,
            b.history_lag(),
            b.roster.alive(),
        )
