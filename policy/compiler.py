"""Compile checked policies into Python functions by generating source and ``compile()``-ing it.

Per policy and action the generated module holds one fused function (deny, require, allow and
effects, straight-line) used when a subject matches that policy alone, and four stage
functions used to combine several policies (all denies first, so deny overrides allow). Per
rule it holds small functions that :meth:`PolicySet.explain` calls to trace each rule. The
source is written by ``policy.writer``; here it is compiled and loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import ast as A
from .fmt import format_rule
from .model import DEDUP_BY_CONTENT, Decision, DedupRule, Limit, Request, Route, Tag
from .runtime import HELPERS, no_rule
from .writer import (
    Module,
    PolicyWriter,
    allow_decision,
    deny_decision,
    limit_rate,
    require_decision,
    rule_id,
    rule_identities,
)

__all__ = ["CompiledPolicy", "CompiledRule", "compile_module"]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule with its trace helpers (``when``/``unless``/``test`` return definitely-true)."""

    id: str
    kind: str
    actions: tuple[str, ...]
    policy: str
    source: str
    when: Callable[[Request], bool] | None = None
    unless: Callable[[Request], bool] | None = None
    test: Callable[[Request], bool] | None = None
    value: Callable[[Request], object] | None = None
    decision: Decision | None = None
    effect: Limit | Route | Tag | DedupRule | None = None
    identity: str = ""
    """The rule's stable identity (see :func:`rule_identities`), which keys its state."""


_CHUNK_LINES = 2000


def _chunks(lines: list[str]) -> list[list[str]]:
    """``lines`` (top-level ``def``s only) cut at function starts into pieces of about
    :data:`_CHUNK_LINES`: ``compile()`` holds the GIL for all of its input, and a 1 MiB set in
    one piece held it (and so the broker's event loop, compiling in a thread) for a second."""
    out: list[list[str]] = [[]]
    for ln in lines:
        if ln.startswith("def ") and len(out[-1]) >= _CHUNK_LINES:
            out.append([])
        out[-1].append(ln)
    return out


def _load_module(mod: Module, name: str) -> dict[str, object]:
    ns: dict[str, object] = {**HELPERS, **mod.c.ns}
    for chunk in _chunks(mod.lines):  # functions find each other in ns when called
        source = "\n".join(chunk) + "\n"
        exec(compile(source, name, "exec"), ns)  # source built from AST nodes only
    return ns


@dataclass(frozen=True, slots=True)
class Stages:
    """The stage functions of a policy (used when several policies cover a subject) and its
    rules with their trace helpers; compiled on first use."""

    deny: Mapping[str, Callable[[Request], Decision | None]]
    require: Mapping[str, Callable[[Request], Decision | None]]
    allow: Mapping[str, Callable[[Request], Decision | None]]
    fx: Mapping[str, Callable[..., Decision | None]]
    rules: tuple[CompiledRule, ...]


class CompiledPolicy:
    """One policy: its fused per-action functions now, its stages when first needed."""

    __slots__ = ("_ast", "_lock", "_stages", "fused", "name", "patterns")

    def __init__(self, pol: A.Policy, fused: Mapping[str, Callable[[Request], Decision]]) -> None:
        self.name = pol.name
        self.patterns = pol.patterns
        self.fused = fused
        self._ast = pol
        self._stages: Stages | None = None
        self._lock = threading.Lock()

    @property
    def ast(self) -> A.Policy:
        """The policy as parsed (for analyses such as ``policy.inputs``)."""
        return self._ast

    def stages(self) -> Stages:
        stages = self._stages
        if stages is None:
            with self._lock:
                if self._stages is None:
                    self._stages = _compile_stages(self._ast)
                stages = self._stages
        return stages


def _compile_stages(pol: A.Policy) -> Stages:
    mod = Module()
    w = PolicyWriter(mod, pol, 0)
    names, helpers = w.write_stages(), w.rule_helpers()
    ns = _load_module(mod, f"<policy {pol.name}>")

    def pick(stage: str) -> dict[str, Any]:
        return {a: ns[n] for a, n in names[stage].items()}

    rules = tuple(
        _compiled_rule(pol, r, h, ns, ident)
        for r, h, ident in zip(pol.rules, helpers, rule_identities(pol), strict=True)
    )
    return Stages(pick("deny"), pick("req"), pick("allow"), pick("fx"), rules)


def compile_module(policies: Sequence[A.Policy]) -> tuple[list[CompiledPolicy], str]:
    """Generate, compile and load the fused functions of ``policies``; return them and the
    generated source. An action without rules in a policy is denied by default."""
    mod = Module()
    plan = [(pol, PolicyWriter(mod, pol, i).write_fused()) for i, pol in enumerate(policies)]
    ns = _load_module(mod, "<policy set>")
    out = []
    for pol, names in plan:
        fused: dict[str, Any] = {a: ns[names[a]] if a in names else no_rule for a in A.ACTIONS}
        out.append(CompiledPolicy(pol, fused))
    return out, "\n".join(mod.lines) + "\n"


def _compiled_rule(
    pol: A.Policy, r: A.Rule, h: dict[str, str], ns: dict[str, object], identity: str
) -> CompiledRule:
    rid = rule_id(pol, r)
    src = " ".join(line.strip() for line in format_rule(r, ""))
    decision: Decision | None = None
    if isinstance(r, A.DenyRule):
        decision = deny_decision(r, rid)
    elif isinstance(r, A.RequireRule):
        decision = require_decision(r, rid)
    elif isinstance(r, A.AllowRule):
        decision = allow_decision(r, rid)
    effect: Limit | Route | Tag | DedupRule | None = None
    if isinstance(r, A.LimitRule):
        effect = Limit(identity, *limit_rate(r), rid)
    elif isinstance(r, A.RouteRule):
        effect = Route(r.target, r.mode, rid)
    elif isinstance(r, A.TagRule):
        effect = Tag(r.name, "", rid)
    elif isinstance(r, A.DedupRuleNode):
        effect = DedupRule(DEDUP_BY_CONTENT, r.window.seconds, rid, identity)
    fns: dict[str, Any] = {k: ns[v] for k, v in h.items()}
    return CompiledRule(
        rid,
        A.rule_kind(r),
        A.rule_actions(r),
        pol.name,
        src,
        fns.get("when"),
        fns.get("unless"),
        fns.get("test"),
        fns.get("value"),
        decision,
        effect,
        identity,
    )
