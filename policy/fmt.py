"""Canonical formatting of policy source: ``format_source(format_source(x)) == format_source(x)``
and the result parses to the same policies. Comments are kept: a comment on its own line
stays above the rule or policy that follows it; a comment after code stays at the end of that
rule.
"""

from __future__ import annotations

import json
from decimal import Decimal

from . import ast as A
from .parser import PolicyParser, parse

__all__ = ["format_expr", "format_rule", "format_source", "shape"]

_WIDTH = 100
# Binding strength: or < and < not < comparison < + - < atom.
_PREC = {A.Or: 1, A.And: 2, A.Not: 3, A.Compare: 4, A.Binary: 5}


def _prec(e: A.Expr) -> int:
    return _PREC.get(type(e), 6)


def _num(v: float) -> str:
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e15):
        return str(int(v))
    text = repr(v)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text


def _lit(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return _num(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    assert isinstance(v, A.Duration)
    return v.text


def format_expr(e: A.Expr, need: int = 0) -> str:
    """Canonical text of an expression, with parentheses only where binding requires."""
    if isinstance(e, A.Literal):
        text = _lit(e.value)
    elif isinstance(e, A.ListLit):
        text = "[" + ", ".join(format_expr(i) for i in e.items) + "]"
    elif isinstance(e, A.Path):
        text = e.dotted
    elif isinstance(e, A.Call):
        text = f"{e.name}(" + ", ".join(format_expr(a) for a in e.args) + ")"
    elif isinstance(e, A.Compare):
        text = f"{format_expr(e.left, 5)} {e.op} {format_expr(e.right, 5)}"
    elif isinstance(e, A.Binary):
        text = f"{format_expr(e.left, 5)} {e.op} {format_expr(e.right, 6)}"
    elif isinstance(e, A.Not):
        text = f"not {format_expr(e.item, 3)}"
    elif isinstance(e, A.And):
        text = " and ".join(format_expr(i, 3) for i in e.items)
    else:
        text = " or ".join(format_expr(i, 2) for i in e.items)
    return f"({text})" if _prec(e) < need else text


def _clauses(r: A.Rule) -> tuple[str, list[str]]:
    """The head of a rule and its trailing clauses (each wrapped onto its own line if long)."""
    acts = ", ".join(getattr(r, "actions", ()))
    when = getattr(r, "when", None)
    tail = [f"when {format_expr(when)}"] if when is not None else []
    if isinstance(r, A.AllowRule):
        return f"allow {acts}", tail
    if isinstance(r, A.DenyRule):
        if r.unless is not None:
            tail.append(f"unless {format_expr(r.unless)}")
        if r.because is not None:
            tail.append(f"because {_lit(r.because)}")
        return f"deny {acts}", tail
    if isinstance(r, A.RequireRule):
        head = "require " + ("" if r.actions == ("publish",) else acts + " ")
        tail = [f"because {_lit(r.because)}"] if r.because is not None else []
        return head + format_expr(r.expr), tail
    if isinstance(r, A.LimitRule):
        head = f"limit {acts} {_num(r.count)} per {r.unit}"
        extra = [f"burst {_num(r.burst)}"] if r.burst is not None else []
        extra += [f"by {format_expr(r.by)}"] if r.by is not None else []
        return head, extra + tail
    if isinstance(r, A.RouteRule):
        return f"route {r.mode} to {_lit(r.target)}", tail
    if isinstance(r, A.DedupRuleNode):
        of = f" of {format_expr(r.key)}" if r.key is not None else ""
        return f"reject duplicates{of} within {r.window.text}", tail
    assert isinstance(r, A.TagRule)
    return f"tag {_lit(r.name)} = {format_expr(r.value)}", tail


def format_rule(r: A.Rule, indent: str = "  ") -> list[str]:
    """Lines of one rule: on one line if it fits in 100 columns, else one clause per line."""
    head, tail = _clauses(r)
    if r.label is not None:
        head = f"{r.label}: {head}"
    one = indent + " ".join([head, *tail])
    if len(one) <= _WIDTH or not tail:
        return [one]
    return [indent + head] + [indent + "    " + t for t in tail]


def shape(e: object) -> object:
    """A position-free structure of a node, for comparing parses."""
    if isinstance(e, tuple):
        return tuple(shape(i) for i in e)
    if hasattr(e, "__dataclass_fields__"):
        skip = {"line", "column", "depth", "file", "pattern_columns", "target_column"}
        fields = e.__dataclass_fields__
        return (type(e).__name__, *(shape(getattr(e, f)) for f in fields if f not in skip))
    return e


def _comments(text: str) -> list[tuple[int, str, bool]]:
    """(line, comment, alone on its line) for each ``#`` comment outside strings."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        in_str = esc = False
        for i, ch in enumerate(line):
            if in_str:
                esc, in_str = (not esc and ch == "\\"), in_str and (esc or ch != '"')
            elif ch == '"':
                in_str = True
            elif ch == "#":
                out.append((n, line[i:].rstrip(), not line[:i].strip()))
                break
    return out


def format_source(text: str, file: str = "<policy>", parser: PolicyParser | None = None) -> str:
    """Canonical text of a policy file (raises :class:`PolicyError` on a syntax error)."""
    policies = parse(text, file, parser)
    items: list[tuple[int, object]] = []
    for p in policies:
        items.append((p.line, p))
        items.extend((r.line, r) for r in p.rules)
    lead: dict[int, list[str]] = {}
    trail: dict[int, list[str]] = {}
    end: list[str] = []
    for line, comment, alone in _comments(text):
        if alone:
            nxt = next((k for k, (ln, _) in enumerate(items) if ln > line), None)
            (end if nxt is None else lead.setdefault(nxt, [])).append(comment)
        else:
            prev = max((k for k, (ln, _) in enumerate(items) if ln <= line), default=None)
            (end if prev is None else trail.setdefault(prev, [])).append(comment)
    out: list[str] = []
    k = 0
    for pi, p in enumerate(policies):
        if pi:
            out.append("")
        out.extend(
            _with_comments(
                [f"policy {p.name} on " + ", ".join(_lit(s) for s in p.patterns) + " {"],
                lead.get(k, []),
                trail.get(k, []),
                "",
            )
        )
        k += 1
        for r in p.rules:
            out.extend(_with_comments(format_rule(r), lead.get(k, []), trail.get(k, []), "  "))
            k += 1
        out.append("}")
    if end:
        if out:
            out.append("")
        out.extend(end)
    return "\n".join(out) + "\n" if out else ""


def _with_comments(lines: list[str], lead: list[str], trail: list[str], indent: str) -> list[str]:
    if len(trail) > 1:
        lead = lead + trail[:-1]
        trail = trail[-1:]
    body = list(lines)
    if trail:
        body[-1] += "  " + trail[0]
    return [indent + c for c in lead] + body
