"""Replay recorded requests through two policy sets and report the decisions that change.

>>> from lockgate.policy import PolicySet, Request, Principal
>>> r = Request("publish", "a.b", Principal("acme", "bot"))
>>> diff_decisions(PolicySet.empty(), PolicySet.empty(), [r]).changed
0
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .engine import PolicySet
from .model import Decision, Request

__all__ = ["ChangedDecision", "ReplayReport", "diff_decisions"]


@dataclass(frozen=True, slots=True)
class ChangedDecision:
    """One request whose decision differs between the old and the new set."""

    index: int
    request: Request
    old: Decision
    new: Decision


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """Counts of a replay; ``changes`` lists at most ``max_listed`` changed decisions."""

    total: int
    changed: int
    newly_denied: int
    newly_allowed: int
    changes: tuple[ChangedDecision, ...] = field(default=())

    def summary(self) -> str:
        return (
            f"{self.changed} of {self.total} decisions change: {self.newly_denied} newly denied, "
            f"{self.newly_allowed} newly allowed, "
            f"{self.changed - self.newly_denied - self.newly_allowed} with other effects"
        )


def _outcome(d: Decision) -> tuple[object, ...]:
    """What a decision does, leaving out rule positions and wording (which move with edits)."""
    return (
        d.allowed,
        d.effect,
        tuple((x.rate_per_second, x.burst) for x in d.limits),
        tuple((x.subject, x.mode) for x in d.routes),
        tuple((x.name, x.value) for x in d.tags),
        tuple(x.window_seconds for x in d.dedup),
    )


def diff_decisions(
    old: PolicySet, new: PolicySet, requests: Iterable[Request], max_listed: int = 1000
) -> ReplayReport:
    """Decide every request under both sets; count and list those whose outcome differs.

    An outcome is allowed/denied, the effect, and the limits (rate, burst), routes, tags and
    duplicate windows; a change of rule position or reason alone does not count.
    """
    total = changed = denied = allowed = 0
    changes: list[ChangedDecision] = []
    for i, req in enumerate(requests):
        total += 1
        a, b = old.decide(req), new.decide(req)
        if _outcome(a) == _outcome(b):
            continue
        changed += 1
        if a.allowed and not b.allowed:
            denied += 1
        elif b.allowed and not a.allowed:
            allowed += 1
        if len(changes) < max_listed:
            changes.append(ChangedDecision(i, req, a, b))
    return ReplayReport(total, changed, denied, allowed, tuple(changes))
