"""``PolicySet.explain``: the same decision as ``decide``, reached rule by rule with a trace.

It walks the compiled rules with the per-rule helper functions instead of the fused code,
so the test suite checks that both paths agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from .compiler import CompiledPolicy, CompiledRule
from .model import DEDUP_BY_CONTENT, Decision, DedupRule, Limit, Request, Route, Tag
from .runtime import fail as _fail
from .runtime import no_rule as _no_rule
from .runtime import text_of as _s
from .runtime import with_effects as _with

__all__ = ["explain"]


def _yes(fn: Callable[[Request], bool] | None, req: Request) -> bool:
    return True if fn is None else bool(fn(req))


def explain(pols: Sequence[CompiledPolicy], req: Request) -> Decision:
    """Decide ``req`` against the covering policies ``pols``, recording a trace."""
    trace: list[str] = []
    d = _decide(pols, req, trace)
    trace.append(
        f"=> {'allowed' if d.allowed else 'denied'} ({d.effect}): {d.reason}"
        + (f" [{d.rule}]" if d.rule else "")
    )
    return replace(d, trace=tuple(trace))


def _decide(pols: Sequence[CompiledPolicy], req: Request, trace: list[str]) -> Decision:
    if req.action not in ("publish", "subscribe", "request"):
        return Decision(False, "deny", f"unknown action {req.action!r}", "")
    if not pols:
        trace.append(f"no policy covers {req.subject}")
        return Decision(True, "default", "no policy covers this subject", "")
    trace.append("policies: " + ", ".join(f"{p.name} ({', '.join(p.patterns)})" for p in pols))
    rules = [r for p in pols for r in p.stages().rules if req.action in r.actions]
    for kind in ("deny", "require"):
        for r in (r for r in rules if r.kind == kind):
            try:
                if kind == "deny":
                    fired = _yes(r.when, req) and not (r.unless is not None and r.unless(req))
                else:
                    fired = not _yes(r.test, req)
            except Exception as exc:
                trace.append(f"{r.id} {kind}: error {type(exc).__name__}: {exc} -> deny")
                return _fail(r.id, exc)
            word = "fired" if fired else ("held" if kind == "require" else "did not fire")
            trace.append(f"{r.id} {kind}: {word}  | {r.source}")
            if fired:
                assert r.decision is not None
                return r.decision
    ok: Decision | None = None
    for r in (r for r in rules if r.kind == "allow"):
        if ok is not None:
            trace.append(f"{r.id} allow: not needed")
            continue
        try:
            fired = _yes(r.when, req)
        except Exception as exc:
            trace.append(f"{r.id} allow: error {type(exc).__name__}: {exc} -> skipped")
            continue
        trace.append(f"{r.id} allow: {'fired' if fired else 'did not fire'}  | {r.source}")
        if fired:
            ok = r.decision
    if ok is None:
        trace.append(f"no rule allows {req.action}")
        return _no_rule(req)
    return _effects(rules, req, ok, trace)


def _effects(rules: list[CompiledRule], req: Request, ok: Decision, trace: list[str]) -> Decision:
    lim: list[Limit] = []
    rt: list[Route] = []
    tg: list[Tag] = []
    dd: list[DedupRule] = []
    for r in rules:
        if r.kind not in ("limit", "route", "tag", "dedup"):
            continue
        try:
            if not _yes(r.when, req):
                trace.append(f"{r.id} {r.kind}: condition false")
                continue
            value = r.value(req) if r.value is not None else None
            text = _s(value)
        except Exception as exc:
            trace.append(f"{r.id} {r.kind}: error {type(exc).__name__}: {exc} -> deny")
            return _fail(r.id, exc)
        e = r.effect
        if isinstance(e, Limit):
            key = e.key if r.value is None else f"{r.identity}|{text}"
            lim.append(replace(e, key=key))
        elif isinstance(e, Route):
            rt.append(e)
        elif isinstance(e, Tag):
            if value is None:
                trace.append(f"{r.id} tag: value missing, not added")
                continue
            tg.append(replace(e, value=text))
        elif isinstance(e, DedupRule):
            if r.value is not None and value is None:
                trace.append(f"{r.id} dedup: key missing, not applied")
                continue
            key = DEDUP_BY_CONTENT if r.value is None else f"{r.identity}|{text}"
            dd.append(replace(e, key=key))
        trace.append(f"{r.id} {r.kind}: applies")
    return _with(ok, lim, rt, tg, dd) if lim or rt or tg or dd else ok
