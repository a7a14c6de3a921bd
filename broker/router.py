"""Which subscriptions receive an event of a subject: per org, patterns to targets.

A publish batch has one subject, so the match runs once per batch; results are cached per
(org, subject) and the cache is dropped whenever a subscription comes or goes. Patterns are
indexed in the subject trie of :mod:`policy.subjects`, so a pattern starting with a wildcard
never receives the broker's own ``$`` subjects. Queue-group members share their group's events:
a batch is cut into one run of consecutive events per member (a single event goes to the next
member in turn), so a batch of 500 tasks keeps every worker busy, and each member still sees
its events in publish order.

Read decisions hold per delivered subject: a target with a ``reader`` and a wildcard
pattern is left out of a subject's match when its reader may not subscribe to that concrete
subject (``>`` does not reach ``secret.payroll`` past a deny). The decision is taken when
the (org, subject) match is built and cached with it, so routing costs nothing more per
batch; the node forgets the matches when the policy set changes.

A cluster backbone watches the router's interests (:meth:`Router.watch`: which patterns have
subscribers on their own, which have members of which queue group) to subscribe on NATS only
to what this node needs, and hands a batch to one interest (:meth:`Router.route_to`): the
subscribers of one pattern, or one queue group that NATS picked this node for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from lockgate.broker import wire
from lockgate.broker.auth import Principal
from lockgate.broker.backbone import Interest, InterestWatcher
from lockgate.broker.deadletters import is_dead_letter, original_subject
from lockgate.broker.subjects import PatternTrie, is_literal

__all__ = ["Router", "Target"]


class Target(Protocol):
    """Something that takes routed frames: an ephemeral subscription or a request inbox."""

    org: str
    pattern: str
    queue: str
    reader: Principal | None
    """Whose read permission the target's events need (None: not checked)."""

    def offer(self, frames: bytes, count: int, ids: list[int] | None) -> bool:
        """Takes ``count`` events already encoded as delivery frames; False when it cannot."""
        ...


@dataclass
class _Entry:
    singles: list[Target] = field(default_factory=list)
    groups: dict[str, list[Target]] = field(default_factory=dict)


_Match = tuple[tuple[Target, ...], tuple[list[Target], ...]]


MayRead = Callable[[Principal, str], bool]


class Router:
    def __init__(self, may_read: MayRead | None = None) -> None:
        self._may_read = may_read
        self._orgs: dict[str, dict[str, _Entry]] = {}
        self._tries: dict[str, PatternTrie[str]] = {}  # per org: pattern -> itself
        self._cache: dict[tuple[str, str], _Match] = {}
        self._names: dict[tuple[str, str], tuple[str, ...]] = {}  # the group names of _cache
        self._turn = 0
        self._watcher: InterestWatcher | None = None

    def watch(self, watcher: InterestWatcher | None) -> None:
        """Tells ``watcher`` every current interest, then each one that comes or goes."""
        self._watcher = watcher
        if watcher is None:
            return
        for org, patterns in list(self._orgs.items()):
            for pattern, entry in list(patterns.items()):
                if entry.singles:
                    watcher(Interest(org, pattern), True)
                for queue in list(entry.groups):
                    watcher(Interest(org, pattern, queue), True)

    def add(self, target: Target) -> None:
        patterns = self._orgs.setdefault(target.org, {})
        entry = patterns.get(target.pattern)
        if entry is None:
            entry = patterns[target.pattern] = _Entry()
            self._tries.setdefault(target.org, PatternTrie()).add(target.pattern, target.pattern)
        members = entry.groups.setdefault(target.queue, []) if target.queue else entry.singles
        members.append(target)
        self._cache.clear()
        self._names.clear()
        if len(members) == 1 and self._watcher is not None:
            self._watcher(Interest(target.org, target.pattern, target.queue), True)

    def remove(self, target: Target) -> None:
        patterns = self._orgs.get(target.org, {})
        entry = patterns.get(target.pattern)
        if entry is None:
            return
        members = entry.groups.get(target.queue, []) if target.queue else entry.singles
        if target not in members:
            return
        members.remove(target)
        if target.queue and not members:
            entry.groups.pop(target.queue, None)
        if not entry.singles and not entry.groups:
            del patterns[target.pattern]
            self._tries[target.org].remove(target.pattern, target.pattern)
        self._cache.clear()
        self._names.clear()
        if not members and self._watcher is not None:
            self._watcher(Interest(target.org, target.pattern, target.queue), False)

    def _match(self, org: str, subject: str) -> _Match:
        key = (org, subject)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        singles: list[Target] = []
        groups: dict[str, list[Target]] = {}
        trie = self._tries.get(org)
        patterns = self._orgs.get(org, {})
        may_read = self._may_read
        for pattern in trie.lookup(subject) if trie is not None else ():
            entry = patterns[pattern]
            if may_read is None or (is_literal(pattern) and pattern[:6] != "$conv."):
                # A literal pattern's subscribe decision was on this very subject (not so a
                # conversation's: its participants change while subscriptions stay).
                singles.extend(entry.singles)
                for name, members in entry.groups.items():
                    # The same group name on two matching patterns is still one group.
                    groups.setdefault(name, []).extend(members)
                continue
            singles.extend(t for t in entry.singles if _reads(may_read, t, subject))
            for name, members in entry.groups.items():
                allowed = [t for t in members if _reads(may_read, t, subject)]
                if allowed:
                    groups.setdefault(name, []).extend(allowed)
        result: _Match = (tuple(singles), tuple(groups.values()))
        if len(self._cache) > 65_536:
            self._cache.clear()
            self._names.clear()
        self._cache[key] = result
        self._names[key] = tuple(groups)
        return result

    def forget_matches(self) -> None:
        """Drops the cached matches (their read decisions were the old policy set's)."""
        self._cache.clear()
        self._names.clear()

    def route(
        self,
        org: str,
        subject: str,
        frames: bytes,
        count: int,
        ids: list[int],
        *,
        queues: bool = True,
    ) -> int:
        """Offers one batch to every matching target (``queues=False``: but the members of
        queue groups); returns how many took some of it."""
        singles, groups = self._match(org, subject)
        return self._dispatch(subject, singles, groups if queues else (), frames, count, ids)

    def route_to(
        self, interest: Interest, subject: str, frames: bytes, count: int, ids: list[int]
    ) -> int:
        """Offers one batch to the targets of one interest: those of exactly its pattern on
        their own, or its queue group (of every pattern that matches ``subject``)."""
        org = interest.org
        singles, groups = self._match(org, subject)
        if interest.queue:
            names = self._names.get((org, subject), ())
            if interest.queue not in names:
                return 0
            group = groups[names.index(interest.queue)]
            return self._dispatch(subject, (), (group,), frames, count, ids)
        own = tuple(t for t in singles if t.pattern == interest.pattern)
        return self._dispatch(subject, own, (), frames, count, ids) if own else 0

    def _dispatch(
        self,
        subject: str,
        singles: tuple[Target, ...],
        groups: tuple[list[Target], ...],
        frames: bytes,
        count: int,
        ids: list[int],
    ) -> int:
        if self._may_read is not None and is_dead_letter(subject) and (singles or groups):
            return self._route_dead_letters(singles, groups, frames)
        taken = 0
        for target in singles:
            taken += target.offer(frames, count, ids)
        for members in groups:
            if count == 1 or len(members) == 1:
                self._turn += 1
                taken += self._offer_one(members, frames, count, ids)
            else:
                taken += self._spread(members, frames, count)
        return taken

    def _offer_one(self, members: list[Target], frames: bytes, count: int, ids: list[int]) -> int:
        n = len(members)
        for i in range(n):
            # Round robin; a member that refuses (full or closing) passes to the next.
            if members[(self._turn + i) % n].offer(frames, count, ids):
                return 1
        return 0

    def _spread(self, members: list[Target], frames: bytes, count: int) -> int:
        """One run of consecutive events per member, starting at the next member in turn."""
        split = wire.split_frames(frames)
        n = min(len(members), count)
        size = -(-count // n)
        taken = 0
        for k in range(n):
            run = split[k * size : (k + 1) * size]
            if not run:
                break
            body = b"".join(f for _, f in run)
            self._turn += 1  # each run starts at the next member
            taken += self._offer_one(members, body, len(run), [i for i, _ in run])
        return taken

    def _route_dead_letters(
        self, singles: tuple[Target, ...], groups: tuple[list[Target], ...], frames: bytes
    ) -> int:
        """A ``$dlq`` batch: each target gets the dead letters whose original subject its
        reader may read too (a queue group: each event to the next member that may)."""
        may_read = self._may_read
        assert may_read is not None
        # The original subject of each event, decoded once per batch (dead letters only).
        split = [(i, f, original_subject(f)) for i, f in wire.split_frames(frames)]

        def reads(t: Target, orig: str) -> bool:
            return t.reader is None or (bool(orig) and may_read(t.reader, orig))

        taken = 0
        for target in singles:
            run = [(i, f) for i, f, orig in split if reads(target, orig)]
            if run:
                body = b"".join(f for _, f in run)
                taken += target.offer(body, len(run), [i for i, _ in run])
        for members in groups:
            for i, f, orig in split:
                allowed = [t for t in members if reads(t, orig)]
                if allowed:
                    self._turn += 1
                    taken += self._offer_one(allowed, f, 1, [i])
        return taken

    def has_targets(self, org: str, subject: str) -> bool:
        singles, groups = self._match(org, subject)
        return bool(singles or groups)


def _reads(may_read: MayRead, target: Target, subject: str) -> bool:
    return target.reader is None or may_read(target.reader, subject)
