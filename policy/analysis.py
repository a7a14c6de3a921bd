"""Load-time checks on policies: per rule (names, types, patterns, limits, tags, routes) and
across the set (unreachable and shadowed rules, allow/deny conflicts, route loops).

Errors stop a set from loading; warnings are reported and the set loads:

==========================================  ========
check                                       severity
==========================================  ========
syntax, unknown names, type mismatches      error
invalid subject pattern / route subject     error
invalid regex, over-long regex              error
rule after an unconditional deny (same      error
policy, same action): unreachable
limit with rate 0 or burst < 1              error
limit on an action denied unconditionally   error
route loop where every hop is unconditional error
duplicate policy name                       error
label used twice in one policy              error
allow shadowed by an earlier unconditional  warning
allow, or a duplicate rule
rule of another policy covered by an        warning
unconditional deny for its actions
(shadowed)
unconditional allow and deny on             warning
overlapping patterns in two policies
route loop with a conditional hop           warning
limit or duplicate rule without a label     warning
deny/require but no allow for an action     warning
==========================================  ========
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from . import ast as A
from .attributes import NAME_RULE, is_extension_name
from .checker import EVENT_STRING_ATTRS, Checker
from .errors import PolicyError
from .fmt import format_rule
from .subjects import PatternTrie, covers, overlaps, pattern_problem, subject_problem

__all__ = ["check_policy", "check_set"]

_Add = Callable[[A.Policy, "A.Rule | A.Policy", str, str, str], None]


def _uncond_deny(r: A.Rule) -> bool:
    return isinstance(r, A.DenyRule) and r.when is None and r.unless is None


def check_policy(ck: Checker, p: A.Policy) -> None:
    """Names, types and per-rule checks of one policy; errors go to ``ck.errors``."""
    for pattern, (_line, col) in zip(p.patterns, p.pattern_columns, strict=False):
        problem = pattern_problem(pattern)
        if problem:
            ck.error(
                p,
                f"subject pattern {pattern!r} is invalid: {problem}",
                'tokens are separated by "."; "*" is one token, ">" the rest',
                column=col,
            )
    for r in p.rules:
        _check_rule(ck, r)
    _reachability(ck, p)


def _check_rule(ck: Checker, r: A.Rule) -> None:
    for e in (getattr(r, "when", None), getattr(r, "unless", None)):
        if e is not None:
            ck.condition(e)
    if isinstance(r, A.RequireRule):
        ck.condition(r.expr)
    elif isinstance(r, A.LimitRule):
        if r.by is not None:
            ck.infer(r.by)
        if r.count <= 0:
            ck.error(
                r,
                f"a limit of {r.count:g} per {r.unit} never lets anything through",
                "use deny to refuse everything",
            )
        if r.burst is not None and r.burst < 1:
            ck.error(
                r,
                f"a burst of {r.burst:g} never lets anything through",
                "burst is the largest number of events at once; it must be at least 1",
            )
    elif isinstance(r, A.RouteRule):
        problem = subject_problem(r.target)
        if problem:
            ck.error(
                r,
                f"route subject {r.target!r} is invalid: {problem}",
                'route to one concrete subject, e.g. "audit.billing"',
                column=r.target_column,
            )
    elif isinstance(r, A.DedupRuleNode):
        if r.key is not None:
            ck.infer(r.key)
        if r.window.seconds <= 0:
            ck.error(r, "a duplicate window must be longer than 0")
    elif isinstance(r, A.TagRule):
        ck.infer(r.value)
        if not is_extension_name(r.name) or r.name in (*EVENT_STRING_ATTRS, "time", "data"):
            ck.error(
                r,
                f"{r.name!r} is not a CloudEvents extension name",
                f"use {NAME_RULE}, not a core attribute",
            )


def _reachability(ck: Checker, p: A.Policy) -> None:
    first_deny: dict[str, A.DenyRule] = {}
    first_allow: dict[str, A.AllowRule] = {}
    for r in p.rules:
        if isinstance(r, A.DenyRule) and r.when is None and r.unless is None:
            for a in r.actions:
                first_deny.setdefault(a, r)
    seen: dict[tuple[str, ...], int] = {}
    labels: dict[str, int] = {}
    for r in p.rules:
        _check_label(ck, r, labels)
        acts = A.rule_actions(r)
        dead = [
            a
            for a in acts
            if a in first_deny
            and first_deny[a] is not r
            and (not isinstance(r, A.DenyRule) or first_deny[a].line < r.line)
        ]
        if dead:
            d = first_deny[dead[0]]
            kind = A.rule_kind(r)
            msg = (
                (
                    f"this limit can never trigger: {dead[0]} is denied unconditionally at line"
                    f" {d.line}"
                )
                if kind == "limit"
                else (
                    f"unreachable {kind} rule: {dead[0]} is denied unconditionally at line {d.line}"
                )
            )
            sev = "error" if len(dead) == len(acts) else "warning"
            ck.errors.append(
                PolicyError(
                    ck.file,
                    r.line,
                    r.column,
                    msg,
                    "remove the rule or give the deny a condition",
                    severity=sev,
                ).with_source(ck.text)
            )
            continue
        key = (A.rule_kind(r), *acts, *format_rule(r, ""))
        if key in seen:
            _warn(ck, r, f"duplicate of the rule at line {seen[key]}", "remove one of them")
        seen.setdefault(key, r.line)
        if isinstance(r, A.AllowRule):
            earlier = [first_allow[a] for a in r.actions if a in first_allow]
            if earlier and len(earlier) == len(r.actions):
                _warn(
                    ck,
                    r,
                    f"shadowed: line {earlier[0].line} already allows "
                    f"{', '.join(r.actions)} unconditionally",
                    "remove this rule",
                )
            if r.when is None:
                for a in r.actions:
                    first_allow.setdefault(a, r)


def _check_label(ck: Checker, r: A.Rule, labels: dict[str, int]) -> None:
    """Labels name a rule's limit buckets and duplicate window: unique within their policy,
    and worth giving to every limit and duplicate rule."""
    if r.label is not None:
        if r.label in labels:
            ck.error(
                r,
                f"the label {r.label!r} is already used at line {labels[r.label]}",
                "labels name one rule each within a policy",
            )
        labels.setdefault(r.label, r.line)
    elif isinstance(r, A.LimitRule | A.DedupRuleNode):
        what = "limit" if isinstance(r, A.LimitRule) else "duplicate rule"
        _warn(
            ck,
            r,
            f"this {what} has no label, so any edit of it starts its state over",
            f"name it: `{_suggest(r)}: {format_rule(r, '')[0]}`",
        )


def _suggest(r: A.Rule) -> str:
    return "rate" if isinstance(r, A.LimitRule) else "dedup"


def _warn(ck: Checker, node: A.Rule | A.Policy, msg: str, hint: str = "") -> None:
    ck.errors.append(
        PolicyError(ck.file, node.line, node.column, msg, hint, severity="warning").with_source(
            ck.text
        )
    )


def check_set(policies: Sequence[A.Policy], sources: Mapping[str, str]) -> list[PolicyError]:
    """Checks across policies; returns errors and warnings (see ``severity``)."""
    out: list[PolicyError] = []

    def add(p: A.Policy, node: A.Rule | A.Policy, msg: str, hint: str, sev: str) -> None:
        out.append(
            PolicyError(p.file, node.line, node.column, msg, hint, severity=sev).with_source(
                sources.get(p.file, "")
            )
        )

    names: dict[str, A.Policy] = {}
    for p in policies:
        if p.name in names:
            q = names[p.name]
            add(
                p,
                p,
                f"policy {p.name!r} is already defined at {q.file}:{q.line}",
                "give each policy its own name",
                "error",
            )
        names.setdefault(p.name, p)
    denies = [(p, r) for p in policies for r in p.rules if _uncond_deny(r)]
    index = _Near(policies)
    for p, d in denies:
        assert isinstance(d, A.DenyRule)
        where = f"{p.file}:{d.line}"
        for q in index.near(p):
            if q is p:
                continue
            covered = all(any(covers(a, b) for a in p.patterns) for b in q.patterns)
            if not covered and not any(overlaps(a, b) for a in p.patterns for b in q.patterns):
                continue
            for r in q.rules:
                if not set(A.rule_actions(r)) & set(d.actions) or isinstance(r, A.DenyRule):
                    continue
                kind = A.rule_kind(r)
                if covered and set(A.rule_actions(r)) <= set(d.actions):
                    add(
                        q,
                        r,
                        f"shadowed: {where} denies {', '.join(d.actions)} on "
                        f"{', '.join(p.patterns)} unconditionally, so this {kind} never takes "
                        "effect",
                        "remove the rule or narrow the deny",
                        "warning",
                    )
                elif isinstance(r, A.AllowRule) and r.when is None:
                    add(
                        q,
                        r,
                        f"conflict: {where} denies what this rule allows on overlapping "
                        "subjects; deny wins",
                        "make the subject patterns disjoint",
                        "warning",
                    )
    _route_loops(policies, add)
    _allow_missing(policies, add)
    return out


def _route_loops(policies: Sequence[A.Policy], add: _Add) -> None:
    trie = PatternTrie((pat, i) for i, p in enumerate(policies) for pat in p.patterns)
    routes = [(i, r) for i, p in enumerate(policies) for r in p.rules if isinstance(r, A.RouteRule)]
    by_policy: dict[int, list[int]] = {}
    for k, (i, _) in enumerate(routes):
        by_policy.setdefault(i, []).append(k)
    edges = [[k2 for j in trie.lookup(r.target) for k2 in by_policy.get(j, [])] for _, r in routes]
    color = [0] * len(routes)
    for start in range(len(routes)):
        if color[start]:
            continue
        stack: list[tuple[int, int]] = [(start, 0)]
        path: list[int] = []
        while stack:
            node, nxt = stack.pop()
            if nxt == 0:
                color[node] = 1
                path.append(node)
            if nxt < len(edges[node]):
                stack.append((node, nxt + 1))
                child = edges[node][nxt]
                if color[child] == 1:
                    cycle = path[path.index(child) :]
                    _report_loop(policies, routes, cycle, add)
                elif color[child] == 0:
                    stack.append((child, 0))
            else:
                color[node] = 2
                path.pop()


def _report_loop(
    policies: Sequence[A.Policy], routes: list[tuple[int, A.RouteRule]], cycle: list[int], add: _Add
) -> None:
    hops = [routes[k] for k in cycle]
    chain = " -> ".join(f"{policies[i].file}:{r.line}" for i, r in [*hops, hops[0]])
    conditional = any(r.when is not None for _, r in hops)
    i, r = hops[0]
    add(
        policies[i],
        r,
        f"route loop: {chain}",
        "route to a subject outside the policies that route back",
        "warning" if conditional else "error",
    )


class _Near:
    """Index of policies by the first token of their patterns, so a cross-policy check only
    compares policies whose subjects could meet (the set checks stay near-linear)."""

    def __init__(self, policies: Sequence[A.Policy]) -> None:
        self.policies = policies
        self._by_first: dict[str, list[int]] = {}
        self._wild: list[int] = []
        for i, p in enumerate(policies):
            firsts = {pat.split(".")[0] for pat in p.patterns}
            if firsts & {"*", ">"}:
                self._wild.append(i)
            else:
                for t in firsts:
                    self._by_first.setdefault(t, []).append(i)

    def near(self, p: A.Policy) -> list[A.Policy]:
        """The policies (in load order) that might share a subject with ``p``."""
        firsts = {pat.split(".")[0] for pat in p.patterns}
        if firsts & {"*", ">"}:
            return list(self.policies)
        found = set(self._wild)
        for t in firsts:
            found.update(self._by_first.get(t, ()))
        return [self.policies[i] for i in sorted(found)]


def _allow_missing(policies: Sequence[A.Policy], add: _Add) -> None:
    allowed_lists: dict[str, list[A.Policy]] = {a: [] for a in A.ACTIONS}
    for p in policies:
        for r in p.rules:
            if isinstance(r, A.AllowRule):
                for a in r.actions:
                    if not allowed_lists[a] or allowed_lists[a][-1] is not p:
                        allowed_lists[a].append(p)
    allowed = {a: _Near(ps) for a, ps in allowed_lists.items()}
    warned: set[tuple[int, str]] = set()
    for p in policies:
        for r in p.rules:
            if not isinstance(r, A.DenyRule | A.RequireRule):
                continue
            for a in r.actions:
                if (id(p), a) in warned:
                    continue
                warned.add((id(p), a))
                if any(
                    any(overlaps(x, y) for x in p.patterns for y in q.patterns)
                    for q in allowed[a].near(p)
                ):
                    continue
                add(
                    p,
                    r,
                    f"no rule allows {a} on {', '.join(p.patterns)}, so every {a} there"
                    " is denied by default",
                    f"add `allow {a}` if this rule is an exception",
                    "warning",
                )
