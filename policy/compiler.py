"""Compile checked policies into Python functions by generating source and ``compile()``-ing it.

Per policy and action the generated module holds one fused function (deny, require, allow and
effects, straight-line) used when a subject matches that policy alone, and four stage
functions used to combine several policies (all denies first, so deny overrides allow). Per
rule it holds small functions that :meth:`PolicySet.explain` calls to trace each rule.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from . import ast as A
from .codegen import Constants, ExprGen
from .model import DEDUP_BY_CONTENT, MISSING, Decision, DedupRule, Limit, Request, Route, Tag
from .parser import UNIT_WORD_SECONDS

__all__ = ["CompiledPolicy", "CompiledRule", "compile_module"]

Fn = Callable[..., object]


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


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    name: str
    patterns: tuple[str, ...]
    fused: Mapping[str, Callable[[Request], Decision]]
    deny: Mapping[str, Callable[[Request], Decision | None]]
    require: Mapping[str, Callable[[Request], Decision | None]]
    allow: Mapping[str, Callable[[Request], Decision | None]]
    fx: Mapping[str, Callable[..., Decision | None]]
    rules: tuple[CompiledRule, ...] = field(default=())


# ---- run-time helpers named by the generated code
def _load(req: Request) -> object:
    raw = req.data_bytes
    data: object = None
    if raw is not None:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
    req.data = data
    return data


def _dig(data: object, keys: tuple[str | int, ...]) -> object:
    for k in keys:
        if isinstance(k, int):
            if data.__class__ is not list or not -1 < k < len(data):  # type: ignore[arg-type]
                return None
            data = data[k]  # type: ignore[index]
        elif data.__class__ is dict:
            data = data.get(k)  # type: ignore[attr-defined]
        else:
            return None
    return data


def _ts(v: object) -> float | None:
    if v is None:
        return None
    if isinstance(v, int | float):
        return float(v)
    return datetime.fromisoformat(str(v)).timestamp()


def _size(v: object) -> int | None:
    return None if v is None else len(v)  # type: ignore[arg-type]


def _add(a: object, b: object) -> object:
    return None if a is None or b is None else a + b  # type: ignore[operator]


def _sub(a: object, b: object) -> object:
    return None if a is None or b is None else a - b  # type: ignore[operator]


def _tri(t: bool, f: bool) -> bool | None:
    return True if t else (False if f else None)


def _aslist(v: object) -> frozenset[object]:
    if isinstance(v, list | tuple | set | frozenset):
        return frozenset(v)
    raise TypeError(f"expected a list, found {type(v).__name__}")


def _has_any(a: object, b: object) -> bool:
    return not _aslist(a).isdisjoint(_aslist(b))


def _has_all(a: object, b: object) -> bool:
    return _aslist(b).issubset(_aslist(a))


def _s(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"))


def _fail(rule: str, exc: BaseException) -> Decision:
    return Decision(False, "deny", f"rule {rule} failed to evaluate ({type(exc).__name__}: "
                    f"{exc}), so it denies", rule)


def _with(ok: Decision, lim: list[Limit], rt: list[Route], tg: list[Tag],
          dd: list[DedupRule]) -> Decision:
    return Decision(True, ok.effect, ok.reason, ok.rule, tuple(lim), tuple(rt), tuple(tg),
                    tuple(dd))


def _no_rule(req: Request) -> Decision:
    return Decision(False, "default", f"no rule allows {req.action} on {req.subject}", "")


_HELPERS: dict[str, object] = {
    "_load": _load, "_dig": _dig, "_ts": _ts, "_size": _size, "_add": _add, "_sub": _sub,
    "_tri": _tri, "_has_any": _has_any, "_has_all": _has_all, "_s": _s, "_fail": _fail,
    "_with": _with, "_no_rule": _no_rule, "_MISSING": MISSING, "_EMPTY": {},
    "_time": time.time, "Limit": Limit, "Route": Route, "Tag": Tag, "DedupRule": DedupRule,
}

_PRELUDE = {
    "ev": ["ev = req.event or _EMPTY"],
    "data": ["data = req.data", "if data is _MISSING:", "    data = _load(req)"],
    "pr": ["pr = req.principal"],
    "subject": ["subject = req.subject"],
    "toks": ["toks = req.subject.split('.')"],
    "now": ["now = req.now", "if now is None:", "    now = _time()"],
}


class _Module:
    def __init__(self) -> None:
        self.c = Constants()
        self.lines: list[str] = []

    def function(self, name: str, args: str, gen: ExprGen, body: list[str],
                 action: str | None) -> None:
        self.lines.append(f"def {name}({args}):")
        for use in sorted(gen.uses):
            if use == "action":
                self.lines.append("    action = " + (repr(action) if action else "req.action"))
            else:
                self.lines.extend("    " + ln for ln in _PRELUDE[use])
        self.lines.extend("    " + ln for ln in (body or ["return None"]))
        self.lines.append("")


def _guarded(rule_id: str, cond: str, then: list[str], c: Constants) -> list[str]:
    r = c.add("id", rule_id)
    return ["try:", f"    if {cond}:", *("        " + t for t in then),
            "except Exception as _e:", f"    return _fail({r}, _e)"]


class _PolicyWriter:
    """Writes the functions of one policy into the module."""

    def __init__(self, mod: _Module, pol: A.Policy, idx: int) -> None:
        self.m, self.p, self.i = mod, pol, idx
        self.c = mod.c

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
                fired.append(d)
                if r.when is None:
                    out += ["if _ok is None:", f"    _ok = {d}"]
                else:
                    out += ["if _ok is None:", "    try:", f"        if {g.true(r.when)}:",
                            f"            _ok = {d}", "    except Exception:", "        pass"]
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
        if isinstance(r, A.LimitRule):
            rate = r.count / UNIT_WORD_SECONDS[r.unit]
            burst = r.burst if r.burst is not None else r.count
            if r.by is None:
                return "_lim", self.c.add("L", Limit(rid, rate, burst, rid))
            pre = self.c.add("id", rid + "|")
            return "_lim", f"Limit({pre} + _s({g.value(r.by)}), {rate!r}, {burst!r}, {rid!r})"
        if isinstance(r, A.RouteRule):
            return "_rt", self.c.add("R", Route(r.target, r.mode, rid))
        if isinstance(r, A.TagRule):
            if isinstance(r.value, A.Literal):
                return "_tg", self.c.add("G", Tag(r.name, _lit_str(r.value), rid))
            v = g.temp()
            return "_tg", f"Tag({r.name!r}, _s({v}), {rid!r})) if ({v} := {g.value(r.value)}) " \
                "is not None else (None"
        if isinstance(r, A.DedupRuleNode):
            w = r.window.seconds
            if r.key is None:
                return "_dd", self.c.add("U", DedupRule(DEDUP_BY_CONTENT, w, rid))
            v = g.temp()
            pre = self.c.add("id", rid + "|")
            return "_dd", f"DedupRule({pre} + _s({v}), {w!r}, {rid!r})) if " \
                f"({v} := {g.value(r.key)}) is not None else (None"
        return None

    def write(self) -> dict[str, dict[str, str]]:
        names: dict[str, dict[str, str]] = {k: {} for k in ("fused", "deny", "req", "allow", "fx")}
        for action in A.ACTIONS:
            base = f"p{self.i}_{action}"
            g = ExprGen(self.c)
            fired: list[str] = []
            body = self.deny_body(g, action) + self.require_body(g, action)
            body += self.allow_body(g, action, fired)
            fx = self.fx_body(g, action)
            body += ["if _ok is None:", "    return _no_rule(req)"]
            if fx:
                body += ["_lim = []; _rt = []; _tg = []; _dd = []", *fx]
                body += ["return _with(_ok, _lim, _rt, _tg, _dd)"]
            else:
                body += ["return _ok"]
            self.m.function(base, "req", g, body, action)
            names["fused"][action] = base
            for stage, make in (("deny", self.deny_body), ("req", self.require_body)):
                g = ExprGen(self.c)
                self.m.function(f"{base}_{stage}", "req", g, make(g, action), action)
                names[stage][action] = f"{base}_{stage}"
            g = ExprGen(self.c)
            self.m.function(f"{base}_allow", "req", g,
                            [*self.allow_body(g, action, []), "return _ok"], action)
            names["allow"][action] = f"{base}_allow"
            g = ExprGen(self.c)
            self.m.function(f"{base}_fx", "req, _lim, _rt, _tg, _dd", g,
                            [*self.fx_body(g, action), "return None"], action)
            names["fx"][action] = f"{base}_fx"
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
                ("value", getattr(r, "by", None) or getattr(r, "key", None)
                 or getattr(r, "value", None), False),
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
    return _s(v.seconds if isinstance(v, A.Duration | A.Timestamp) else v)


def compile_module(policies: Sequence[A.Policy], sources: Mapping[str, str]
                   ) -> tuple[list[CompiledPolicy], str]:
    """Generate, compile and load the module for ``policies``; return them and the source."""
    mod = _Module()
    plan = []
    for i, pol in enumerate(policies):
        w = _PolicyWriter(mod, pol, i)
        plan.append((pol, w.write(), w.rule_helpers()))
    source = "\n".join(mod.lines) + "\n"
    ns: dict[str, object] = {**_HELPERS, **mod.c.ns}
    exec(compile(source, "<policy set>", "exec"), ns)  # source built from AST nodes only
    out = []
    for pol, names, helpers in plan:
        rules = tuple(_compiled_rule(pol, r, h, ns, sources) for r, h in zip(pol.rules, helpers,
                                                                               strict=True))
        out.append(CompiledPolicy(
            pol.name, pol.patterns,
            {a: ns[n] for a, n in names["fused"].items()},  # type: ignore[misc]
            {a: ns[n] for a, n in names["deny"].items()},  # type: ignore[misc]
            {a: ns[n] for a, n in names["req"].items()},  # type: ignore[misc]
            {a: ns[n] for a, n in names["allow"].items()},  # type: ignore[misc]
            {a: ns[n] for a, n in names["fx"].items()},  # type: ignore[misc]
            rules,
        ))
    return out, source


def _compiled_rule(pol: A.Policy, r: A.Rule, h: dict[str, str], ns: dict[str, object],
                   sources: Mapping[str, str]) -> CompiledRule:
    rid = f"{pol.file}:{r.line}"
    lines = sources.get(pol.file, "").splitlines()
    src = lines[r.line - 1].strip() if 0 < r.line <= len(lines) else ""
    decision: Decision | None = None
    if isinstance(r, A.DenyRule):
        decision = _deny_decision(r, rid)
    elif isinstance(r, A.RequireRule):
        decision = _require_decision(r, rid)
    elif isinstance(r, A.AllowRule):
        decision = _allow_decision(r, rid)
    effect: Limit | Route | Tag | DedupRule | None = None
    if isinstance(r, A.LimitRule):
        effect = Limit(rid, r.count / UNIT_WORD_SECONDS[r.unit],
                       r.burst if r.burst is not None else r.count, rid)
    elif isinstance(r, A.RouteRule):
        effect = Route(r.target, r.mode, rid)
    elif isinstance(r, A.TagRule):
        effect = Tag(r.name, "", rid)
    elif isinstance(r, A.DedupRuleNode):
        effect = DedupRule(DEDUP_BY_CONTENT, r.window.seconds, rid)
    fns: dict[str, Fn] = {k: ns[v] for k, v in h.items()}  # type: ignore[misc]
    return CompiledRule(rid, A.rule_kind(r), A.rule_actions(r), pol.name, src,
                        fns.get("when"), fns.get("unless"), fns.get("test"),  # type: ignore[arg-type]
                        fns.get("value"), decision, effect)
