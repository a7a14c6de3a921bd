"""One org's decisions: the operator's global policy set, the org's own set, and default deny.

Each org may have a policy set of its own (``PolicyService`` with ``org``, by that org's
administrator). Subjects live inside an org, so an org's set is consulted only for that
org's events, subscriptions and requests: its patterns can name no other org's subjects and
its rules see no other org's principals. Both sets decide each request on their own, and a
refusal in either wins (the global set is asked first). When both allow, the effects of both
apply; the org's limit buckets and duplicate windows are kept under the org's name, so an
org's rule can never charge or fill another org's (or the operator's) state, and the
operator's tags are written last, so they win over the org's on the same name. With
default deny on, a request that neither set covers is refused (effect ``default``), as in
Cedar; otherwise it is allowed, as in one set.

:class:`OrgPolicies` has the two methods of :class:`~policy.PolicySet` the broker's gate
uses (``decide`` and ``event_inputs``), so the batch decisions and their memo work on it
unchanged. The gate builds one only for orgs that have a set of their own or default deny;
every other org's batches go to the global set directly, as before.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from lockgate.policy import Decision, PolicySet, Request
from lockgate.policy.inputs import EventInputs

__all__ = ["Decider", "OrgPolicies"]

_UNCOVERED = Decision(True, "default", "no policy covers this subject", "")
_DEFAULT_DENY = Decision(
    False, "default", "no policy covers this subject, and default deny is on", "default_deny"
)


class Decider(Protocol):
    """What the gate needs of a policy set (``PolicySet`` and :class:`OrgPolicies`)."""

    @property
    def version(self) -> str: ...

    def decide(self, request: Request) -> Decision: ...

    def event_inputs(self, subject: str) -> EventInputs: ...


def _uncovered(d: Decision) -> bool:
    return d.allowed and d.effect == "default"


class OrgPolicies:
    """The decisions of one org (see the module): ``outer`` is the global set, ``inner``
    the org's own; either may be absent."""

    __slots__ = ("_inputs", "default_deny", "inner", "org", "outer", "version")

    def __init__(
        self, outer: PolicySet | None, inner: PolicySet | None, org: str, *, default_deny: bool
    ) -> None:
        self.outer = outer
        self.inner = inner
        self.org = org
        self.default_deny = default_deny
        self.version = (outer.version if outer is not None else "none") + (
            f"+{org}:{inner.version}" if inner is not None else ""
        )
        self._inputs: dict[str, EventInputs] = {}

    def decide(self, request: Request) -> Decision:
        g = self.outer.decide(request) if self.outer is not None else _UNCOVERED
        if not g.allowed:
            return g
        o = self.inner.decide(request) if self.inner is not None else _UNCOVERED
        if not o.allowed:
            return dataclasses.replace(o, rule=self._name(o.rule))
        if _uncovered(o):
            if _uncovered(g) and self.default_deny:
                return _DEFAULT_DENY
            return g
        o = self._scoped(o)
        if _uncovered(g):
            # Named as its denials are: the decisions metric and the audit tell orgs apart.
            return dataclasses.replace(o, rule=self._name(o.rule))
        return Decision(
            True,
            g.effect,
            g.reason,
            g.rule,
            g.limits + o.limits,
            g.routes + o.routes,
            o.tags + g.tags,  # the operator's last: the later of two equal names wins
            g.dedup + o.dedup,
        )

    def _name(self, rule: str) -> str:
        """A rule of the org's set, as messages name it (``acme/billing.policy:4``)."""
        return f"{self.org}/{rule}" if rule else rule

    def _scoped(self, d: Decision) -> Decision:
        """``d`` with its limit and duplicate state keyed under the org: two orgs' rules of
        the same identity (or an org's and the operator's) never share a bucket or window."""
        if not (d.limits or d.dedup):
            return d
        prefix = f"org:{self.org}/"
        return dataclasses.replace(
            d,
            limits=tuple(dataclasses.replace(x, key=prefix + x.key) for x in d.limits),
            dedup=tuple(
                dataclasses.replace(x, key=prefix + x.key, identity=prefix + x.identity)
                if x.key != "@content"
                else dataclasses.replace(x, identity=prefix + x.identity)
                for x in d.dedup
            ),
        )

    def event_inputs(self, subject: str) -> EventInputs:
        hit = self._inputs.get(subject)
        if hit is None:
            sets = [s.event_inputs(subject) for s in (self.outer, self.inner) if s is not None]
            names = tuple(sorted({n for s in sets for n in s.names}))
            hit = EventInputs(names, any(s.data for s in sets))
            if len(self._inputs) < 8192:
                self._inputs[subject] = hit
        return hit
