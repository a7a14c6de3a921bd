"""What the broker has been doing lately, kept in bounded memory for the dashboard: events
stored per subject in time buckets (:class:`SubjectRates`), the recent policy denials with
the rule that decided them (:class:`RecentDenials`). (The cluster's nodes are
:mod:`broker.roster`'s.)

Each is fed once per batch (never per event) and holds a fixed most: a broker that sees a
million subjects keeps the first ``max_subjects`` and counts the rest under one
``(other subjects)`` row, so neither the memory nor the per-batch cost grows with traffic.
Each org holds at most ``org_share`` of those rows (its further subjects count under its own
``(other subjects)`` row) and denials are kept per org, so one tenant's flood never pushes
another tenant out of the view.

Example::

    rates = SubjectRates(bucket_seconds=5, buckets=60)
    rates.add("acme", "orders.created", 500)       # one stored batch of 500 events
    rates.snapshot()[0].counts                      # events per bucket, oldest first
"""

from __future__ import annotations

import collections
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["OTHER_SUBJECTS", "Denial", "RecentDenials", "SubjectRate", "SubjectRates"]

OTHER_SUBJECTS = "(other subjects)"
"""The row that counts the subjects past ``max_subjects``."""


@dataclass(frozen=True, slots=True)
class SubjectRate:
    """Events stored on one subject of one org per bucket, oldest first (the last bucket is
    the one filling now)."""

    org: str
    subject: str
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.counts)


class SubjectRates:
    """Events stored per (org, subject) over the last ``bucket_seconds * buckets`` seconds."""

    def __init__(
        self,
        *,
        bucket_seconds: float = 5.0,
        buckets: int = 60,
        max_subjects: int = 500,
        org_share: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bucket_seconds = bucket_seconds
        self.buckets = buckets
        self.max_subjects = max_subjects
        self.org_share = org_share
        self._per_org: collections.Counter[str] = collections.Counter()
        self._clock = clock
        # (org, subject) -> [the bucket number of its last count, counts in a ring]
        self._rows: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        self._swept = -1
        """The bucket of the last sweep for idle rows: at most one sweep per bucket, so a
        flood of new subjects past the bound costs one dict lookup a batch, not a scan."""

    def _bucket(self) -> int:
        return int(self._clock() // self.bucket_seconds)

    def add(self, org: str, subject: str, count: int) -> None:
        """Counts ``count`` events stored on ``subject`` now (one call per stored batch)."""
        key = (org, subject)
        row = self._rows.get(key)
        if row is None:
            full = len(self._rows) >= self.max_subjects
            if (full or self._per_org[org] >= self.org_share) and self._swept != self._bucket():
                self._swept = self._bucket()
                self._forget_idle()
            if self._per_org[org] >= self.org_share:
                key = (org, OTHER_SUBJECTS)
                row = self._rows.get(key)
            if row is None and len(self._rows) >= self.max_subjects:
                key = ("", OTHER_SUBJECTS)
                row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = ([self._bucket()], [0] * self.buckets)
                self._per_org[key[0]] += 1
        last, ring = row
        now = self._bucket()
        self._advance(last, ring, now)
        ring[now % self.buckets] += count

    def _advance(self, last: list[int], ring: list[int], now: int) -> None:
        """Zeroes the buckets passed since the row's last count."""
        gap = now - last[0]
        if gap > 0:
            for b in range(last[0] + 1, last[0] + 1 + min(gap, self.buckets)):
                ring[b % self.buckets] = 0
            last[0] = now

    def _forget_idle(self) -> None:
        """Drops the rows with nothing in the window, making room for new subjects."""
        oldest = self._bucket() - self.buckets
        for key in [k for k, (last, _) in self._rows.items() if last[0] <= oldest]:
            del self._rows[key]
            self._per_org[key[0]] -= 1
            if not self._per_org[key[0]]:
                del self._per_org[key[0]]

    def snapshot(self) -> list[SubjectRate]:
        """Every subject with events in the window, busiest first."""
        now = self._bucket()
        out = []
        for (org, subject), (last, ring) in list(self._rows.items()):
            self._advance(last, ring, now)
            start = now + 1  # the oldest bucket of the window sits just after ``now``
            counts = tuple(ring[(start + i) % self.buckets] for i in range(self.buckets))
            if any(counts):
                out.append(SubjectRate(org, subject, counts))
        out.sort(key=lambda r: (-r.total, r.org, r.subject))
        return out


@dataclass(frozen=True, slots=True)
class Denial:
    """One refused batch (or part of one): who, what, and the rule that decided."""

    time_ms: int
    org: str
    agent: str
    action: str
    subject: str
    count: int
    reason: str
    rule: str
    effect: str
    message: str
    policy_version: str


class RecentDenials:
    """The last ``size`` policy denials of each of the ``max_orgs`` orgs denied most recently
    (one entry per refused batch and rule, with the number of events it refused): one org's
    flood of denials never evicts another's."""

    def __init__(
        self, size: int = 200, clock: Callable[[], float] = time.time, *, max_orgs: int = 32
    ) -> None:
        self._size = size
        self._max_orgs = max_orgs
        # org -> its ring of (sequence, denial), the org denied last at the end
        self._orgs: collections.OrderedDict[str, collections.deque[tuple[int, Denial]]] = (
            collections.OrderedDict()
        )
        self._seq = itertools.count()
        self._clock = clock

    def add(
        self,
        org: str,
        agent: str,
        action: str,
        subject: str,
        count: int,
        *,
        reason: str,
        rule: str,
        effect: str,
        message: str,
        policy_version: str,
    ) -> None:
        ring = self._orgs.get(org)
        if ring is None:
            ring = self._orgs[org] = collections.deque(maxlen=self._size)
            if len(self._orgs) > self._max_orgs:
                self._orgs.popitem(last=False)
        else:
            self._orgs.move_to_end(org)
        denial = Denial(
            int(self._clock() * 1000),
            org,
            agent,
            action,
            subject,
            count,
            reason,
            rule,
            effect,
            message[:500],
            policy_version,
        )
        ring.append((next(self._seq), denial))

    def latest(self, limit: int = 100) -> list[Denial]:
        """The newest ``limit`` denials of every org, newest first."""
        rings = (reversed(r) for r in self._orgs.values())
        newest = heapq.merge(*rings, key=lambda e: -e[0])
        return [d for _, d in itertools.islice(newest, limit)]
