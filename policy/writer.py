"""Writes the Python source of checked policies: the generated module and, per policy, its
fused, stage and per-rule trace functions (``policy.compiler`` compiles and loads them).
"""

from __future__ import annotations

import hashlib

from . import ast as A
from .codegen import Constants, ExprGen
from .durations import UNIT_WORD_SECONDS
from .fmt import format_rule
from .model import DEDUP_BY_CONTENT, Decision, DedupRule, Limit, Route, Tag
from .runtime import text_of

__all__ = [
    "Module",
    "PolicyWriter",
    "allow_decision",
    "deny_decision",
    "guarded",
    "limit_rate",
    "require_decision",
    "rule_id",
    "rule_identities",
]


_PRELUDE = {
    "ev": ["ev = req.event or _EMPTY"],
    "data": ["data = req.data"],
    "pr": ["pr = req.principal"],
    "subject": ["subject = req.subject"],
    "toks": ["toks = req.subject.split('.')"],
    "now": ["now = req.now", "if now is None:", "    now = _time()"],
}


class Module:
    """The generated module: its constants and its source lines, a function at a time."""

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


def limit_rate(r: A.LimitRule) -> tuple[float, float]:
    """A limit rule's tokens a second and its burst (its count unless it names one)."""
    return r.count / UNIT_WORD_SECONDS[r.unit], r.burst if r.burst is not None else r.count


def rule_id(pol: A.Policy, r: A.Rule) -> str:
    """Where a rule stands (``file:line``): how decisions and traces name it."""
    return f"{pol.file}:{r.line}"


def guarded(rule_id: str, cond: str, then: list[str], c: Constants) -> list[str]:
    r = c.add("id", rule_id)
    return [
        "try:",
        f"    if {cond}:",
        *("        " + t for t in then),
        "except Exception as _e:",
        f"    return _fail({r}, _e)",
    ]


class PolicyWriter:
    """Writes the functions of one policy into the module."""

    def __init__(self, mod: Module, pol: A.Policy, idx: int) -> None:
        self.m, self.p, self.i = mod, pol, idx
        self.c = mod.c
        self._identity = dict(zip(map(id, pol.rules), rule_identities(pol), strict=True))

    def rid(self, r: A.Rule) -> str:
        return rule_id(self.p, r)

    def deny_body(self, g: ExprGen, action: str) -> list[str]:
        out: list[str] = []
        for r in self.p.rules:
            if isinstance(r, A.DenyRule) and action in r.actions:
                parts = [g.true(r.when) if r.when else "True"]
                if r.unless is not None:
                    parts.append(f"not {g.true(r.unless)}")
                d = self.c.add("D", deny_decision(r, self.rid(r)), key=("deny", self.rid(r)))
                out += guarded(self.rid(r), " and ".join(parts), [f"return {d}"], self.c)
        return out

    def require_body(self, g: ExprGen, action: str) -> list[str]:
        out: list[str] = []
        for r in self.p.rules:
            if isinstance(r, A.RequireRule) and action in r.actions:
                d = self.c.add("D", require_decision(r, self.rid(r)), key=("req", self.rid(r)))
                out += guarded(self.rid(r), f"not {g.true(r.expr)}", [f"return {d}"], self.c)
        return out

    def allow_body(self, g: ExprGen, action: str, fired: list[str]) -> list[str]:
        """Lines that set ``_ok`` to the first allow rule's decision that fires."""
        out = ["_ok = None"]
        for r in self.p.rules:
            if isinstance(r, A.AllowRule) and action in r.actions:
                d = self.c.add("A", allow_decision(r, self.rid(r)), key=("allow", self.rid(r)))
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
            out += guarded(self.rid(r), cond, [f"{lst}.append({expr})"], self.c)
        return out

    def _effect(self, r: A.Rule, g: ExprGen) -> tuple[str, str] | None:
        rid = self.rid(r)
        ident = self._identity[id(r)]
        if isinstance(r, A.LimitRule):
            rate, burst = limit_rate(r)
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


def deny_decision(r: A.DenyRule, rid: str) -> Decision:
    reason = r.because or f"denied by rule {rid}"
    return Decision(False, "deny", reason, rid)


def require_decision(r: A.RequireRule, rid: str) -> Decision:
    reason = r.because or f"requirement at {rid} not met"
    return Decision(False, "require", reason, rid)


def allow_decision(r: A.AllowRule, rid: str) -> Decision:
    return Decision(True, "allow", f"allowed by rule {rid}", rid)


def _lit_str(e: A.Literal) -> str:
    v = e.value
    return text_of(v.seconds if isinstance(v, A.Duration | A.Timestamp) else v)
