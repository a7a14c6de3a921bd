"""Compile checked policies into Python functions by generating source and ``compile()``-ing it.

Per policy and action the generated module holds one fused function (deny, require, allow and
effects, straight-line) used when a subject matches that policy alone, and four stage
functions used to combine several policies (all denies first, so deny overrides allow). Per
rule it holds small functions that :meth:`PolicySet.explain` calls to trace each rule.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import ast as A
from .codegen import Constants, ExprGen
from .durations import UNIT_WORD_SECONDS
from .fmt import format_rule
from .model import DEDUP_BY_CONTENT, Decision, DedupRule, Limit, Request, Route, Tag
from .runtime import HELPERS, no_rule, text_of

__all__ = ["CompiledPolicy", "CompiledRule", "compile_module", "rule_identities"]


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


_PRELUDE = {
    "ev": ["ev = req.event or _EMPTY"],
    "data": ["data = req.data"],
    "pr": ["pr = req.principal"],
    "subject": ["subject = req.subject"],
    "toks": ["toks = req.subject.split('.')"],
    "now": ["now = req.now", "if now is None:", "    now = _time()"],
}


class _Module:
    def __init__(self) -> None:
        self.c = Constants()
        self.lines: list[str] = []

    def function(
        self, name: str, args: str, gen: ExprGen, body: list[str], action: str | None
    ) -> None:
        self.lines.append(f"def {name}({args}):")
        for use in sorted(gen.uses):
            if use == "action":
                self.lines.append("    action = " + (repr(action) if action else "req.action"))
            else:
                self.lines.extend("    " + ln for ln in _PRELUDE[use])
        self.lines.extend("    " + ln for ln in (body or ["return None"]))
        self.lines.append("")


def rule_identities(pol: A.Policy) -> list[str]:
    """The stable identity of each rule of ``pol``: ``policy/label``, or for a rule without a
    label ``policy/kind#hash`` of its canonical text. Limit buckets and duplicate windows are
    kept under it, so moving or reformatting a rule keeps them; ``file:line`` only names a
    rule in messages. Identical unlabelled rules get ``~2``, ``~3``... in order.

    >>> from lockgate.policy.parser import parse
    >>> [p] = parse('policy b on "b.>" { rate: limit publish 5 per second }')
    >>> rule_identities(p)
    ['b/rate']
    """
    out: list[str] = []
    seen: dict[str, int] = {}
    for r in pol.rules:
        if r.label is not None:
            base = f"{pol.name}/{r.label}"
        else:
            text = " ".join(line.strip() for line in format_rule(r, ""))
            digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            base = f"{pol.name}/{A.rule_kind(r)}#{digest}"
        n = seen[base] = seen.get(base, 0) + 1
        out.append(base if n == 1 else f"{base}~{n}")
    return out


def _guarded(rule_id: str, cond: str, then: list[str], c: Constants) -> list[str]:
    r = c.add("id", rule_id)
    return [
        "try:",
        f"    if {cond}:",
        *("        " + t for t in then),
        "except Exception as _e:",
        f"    return _fail({r}, _e)",
    ]


class _PolicyWriter:
    """Writes the functions of one policy into the module."""

    def __init__(self, mod: _Module, pol: A.Policy, idx: int) -> None:
        self.m, self.p, self.i = mod, pol, idx
        self.c = mod.c
        self._identity = dict(zip(map(id, pol.rules), rule_identities(pol), strict=True))

    def rid(self, r: A.Rule) -> str:
        return f"{self.p.file}:{r.line}"

    def deny_body(self, g: ExprGen, action: str) -> list[str]:
        out: list[str] = []
        for r in self.p.rules:
            if isinstance(r, A.DenyRule) and action in r.actions:
                parts = [g.true(r.when) if r.when else "True"]
                if r.unless is not None:
                    parts.append(f"not {g.true(r.unless)}")
                d = self.c.add("D", _deny_decision(r, self.rid(r)), key=("deny", self.rid(r)))
                out += _guarded(self.rid(r), " and ".join(parts), [f"return {d}"], self.c)
        return out

    def require_body(self, g: ExprGen, action: str) -> list[str]:
        out: list[str] = []
        for r in self.p.rules:
            if isinstance(r, A.RequireRule) and action in r.actions:
                d = self.c.add("D", _require_decision(r, self.rid(r)), key=("req", self.rid(r)))
                out += _guarded(self.rid(r), f"not {g.true(r.expr)}", [f"return {d}"], self.c)
        return out

    def allow_body(self, g: ExprGen, action: str, fired: list[str]) -> list[str]:
        """Lines that set ``_ok`` to the first allow rule's decision that fires."""
        out = ["_ok = None"]
        for r in self.p.rules:
            if isinstance(r, A.AllowRule) and action in r.actions:
                d = self.c.add("A", _allow_decision(r, self.rid(r)), key=("allow", self.rid(r)))
                if r.when is None:
                    lines = [f"_ok = {d}"]
                else:
                    lines = [
                        "try:",
                        f"    if {g.true(r.when)}:",
                        f"        _ok = {d}",
                        "except Exception:",
                        "    pass",
                    ]
                if fired:  # an earlier allow may have fired already
                    lines = ["if _ok is None:", *("    " + ln for ln in lines)]
                fired.append(d)
                out += lines
                if r.when is None:  # later allows can never be the first to fire
                    fired.append("certain")
                    break
        return out

    def fx_body(self, g: ExprGen, action: str) -> list[str]:
        """Lines that append effects to _lim/_rt/_tg/_dd (or return a failure decision)."""
        out: list[str] = []
        for r in self.p.rules:
            if action not in A.rule_actions(r):
                continue
            item = self._effect(r, g)
            if item is None:
                continue
            lst, expr = item
            when = getattr(r, "when", None)
            cond = g.true(when) if when is not None else "True"
            out += _guarded(self.rid(r), cond, [f"{lst}.append({expr})"], self.c)
        return out

    def _effect(self, r: A.Rule, g: ExprGen) -> tuple[str, str] | None:
        rid = self.rid(r)
        ident = self._identity[id(r)]
        if isinstance(r, A.LimitRule):
            rate = r.count / UNIT_WORD_SECONDS[r.unit]
            burst = r.burst if r.burst is not None else r.count
            if r.by is None:
                return "_lim", self.c.add("L", Limit(ident, rate, burst, rid))
            pre = self.c.add("id", ident + "|")
            return "_lim", f"Limit({pre} + _s({g.value(r.by)}), {rate!r}, {burst!r}, {rid!r})"
        if isinstance(r, A.RouteRule):
            return "_rt", self.c.add("R", Route(r.target, r.mode, rid))
        if isinstance(r, A.TagRule):
            if isinstance(r.value, A.Literal):
                return "_tg", self.c.add("G", Tag(r.name, _lit_str(r.value), rid))
            v = g.temp()
            return (
                "_tg",
                f"Tag({r.name!r}, _s({v}), {rid!r})) if ({v} := {g.value(r.value)}) "
                "is not None else (None",
            )
        if isinstance(r, A.DedupRuleNode):
            w = r.window.seconds
            if r.key is None:
                return "_dd", self.c.add("U", DedupRule(DEDUP_BY_CONTENT, w, rid, ident))
            v = g.temp()
            pre = self.c.add("id", ident + "|")
            return (
                "_dd",
                f"DedupRule({pre} + _s({v}), {w!r}, {rid!r}, {ident!r})) if "
                f"({v} := {g.value(r.key)}) is not None else (None",
            )
        return None

    def write_fused(self) -> dict[str, str]:
        """One straight-line function per action that has rules; returns action -> name."""
        names: dict[str, str] = {}
        for action in A.ACTIONS:
            if not any(action in A.rule_actions(r) for r in self.p.rules):
                continue
            g = ExprGen(self.c)
            body = self.deny_body(g, action) + self.require_body(g, action)
            fired: list[str] = []
            body += self.allow_body(g, action, fired)
            fx = self.fx_body(g, action)
            if "certain" not in fired:
                body += ["if _ok is None:", "    return _no_rule(req)"]
            if fx:
                body += ["_lim = []; _rt = []; _tg = []; _dd = []", *fx]
                body += ["return _with(_ok, _lim, _rt, _tg, _dd)"]
            else:
                body += ["return _ok"]
            names[action] = f"p{self.i}_{action}"
            self.m.function(names[action], "req", g, body, action)
        return names

    def write_stages(self) -> dict[str, dict[str, str]]:
        """The deny/req/allow/fx stage functions of each action, where the stage has rules."""
        names: dict[str, dict[str, str]] = {k: {} for k in ("deny", "req", "allow", "fx")}
        for action in A.ACTIONS:
            base = f"p{self.i}_{action}"
            for stage, make in (("deny", self.deny_body), ("req", self.require_body)):
                g = ExprGen(self.c)
                body = make(g, action)
                if body:
                    names[stage][action] = f"{base}_{stage}"
                    self.m.function(f"{base}_{stage}", "req", g, body, action)
            g = ExprGen(self.c)
            allow = self.allow_body(g, action, [])
            if len(allow) > 1:
                names["allow"][action] = f"{base}_allow"
                self.m.function(f"{base}_allow", "req", g, [*allow, "return _ok"], action)
            g = ExprGen(self.c)
            fx = self.fx_body(g, action)
            if fx:
                names["fx"][action] = f"{base}_fx"
                args = "req, _lim, _rt, _tg, _dd"
                self.m.function(f"{base}_fx", args, g, [*fx, "return None"], action)
        return names

    def rule_helpers(self) -> list[dict[str, str]]:
        """Per rule: names of its when/unless/test/value functions (action read at run time)."""
        out: list[dict[str, str]] = []
        for k, r in enumerate(self.p.rules):
            names: dict[str, str] = {}
            parts: list[tuple[str, A.Expr | None, bool]] = [
                ("when", getattr(r, "when", None), True),
                ("unless", getattr(r, "unless", None), True),
                ("test", r.expr if isinstance(r, A.RequireRule) else None, True),
                (
                    "value",
                    getattr(r, "by", None) or getattr(r, "key", None) or getattr(r, "value", None),
                    False,
                ),
            ]
            for part, e, cond in parts:
                if e is None:
                    continue
                g = ExprGen(self.c)
                name = f"r{self.i}_{k}_{part}"
                text = g.true(e) if cond else g.value(e)
                self.m.function(name, "req", g, [f"return {text}"], None)
                names[part] = name
            out.append(names)
        return out


def _deny_decision(r: A.DenyRule, rid: str) -> Decision:
    reason = r.because or f"denied by rule {rid}"
    return Decision(False, "deny", reason, rid)


def _require_decision(r: A.RequireRule, rid: str) -> Decision:
    reason = r.because or f"requirement at {rid} not met"
    return Decision(False, "require", reason, rid)


def _allow_decision(r: A.AllowRule, rid: str) -> Decision:
    return Decision(True, "allow", f"allowed by rule {rid}", rid)


def _lit_str(e: A.Literal) -> str:
    v = e.value
    return text_of(v.seconds if isinstance(v, A.Duration | A.Timestamp) else v)


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


def _load_module(mod: _Module, name: str) -> dict[str, object]:
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
    mod = _Module()
    w = _PolicyWriter(mod, pol, 0)
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
    mod = _Module()
    plan = [(pol, _PolicyWriter(mod, pol, i).write_fused()) for i, pol in enumerate(policies)]
    ns = _load_module(mod, "<policy set>")
    out = []
    for pol, names in plan:
        fused: dict[str, Any] = {a: ns[names[a]] if a in names else no_rule for a in A.ACTIONS}
        out.append(CompiledPolicy(pol, fused))
    return out, "\n".join(mod.lines) + "\n"


def _compiled_rule(
    pol: A.Policy, r: A.Rule, h: dict[str, str], ns: dict[str, object], identity: str
) -> CompiledRule:
    rid = f"{pol.file}:{r.line}"
    src = " ".join(line.strip() for line in format_rule(r, ""))
    decision: Decision | None = None
    if isinstance(r, A.DenyRule):
        decision = _deny_decision(r, rid)
    elif isinstance(r, A.RequireRule):
        decision = _require_decision(r, rid)
    elif isinstance(r, A.AllowRule):
        decision = _allow_decision(r, rid)
    effect: Limit | Route | Tag | DedupRule | None = None
    if isinstance(r, A.LimitRule):
        effect = Limit(
            identity,
            r.count / UNIT_WORD_SECONDS[r.unit],
            r.burst if r.burst is not None else r.count,
            rid,
        )
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
