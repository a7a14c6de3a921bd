"""Parse policy text into :mod:`policy.ast` nodes. This module alone owns the Lark options.

The caller owns a :class:`PolicyParser` (no process-wide parser here; the tables' cache on disk
is chosen at the edge, :mod:`policy.files`). The tree is built by an inline transformer while
the parser runs, so deep nesting never recurses; nesting beyond :data:`policy.ast.MAX_DEPTH` is
a syntax error.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import ast as A
from .durations import UNIT_WORD_SECONDS, parse_duration
from .errors import PolicyError

__all__ = ["PolicyParser", "parse"]


# How terminals read in "expected ..." hints.
_TERMINAL_TEXT = {
    "LBRACE": "{",
    "RBRACE": "}",
    "LPAR": "(",
    "RPAR": ")",
    "LSQB": "[",
    "RSQB": "]",
    "COMMA": ",",
    "DOT": ".",
    "EQUAL": "=",
    "STRING": "a string",
    "NUMBER": "a number",
    "NAME": "a name",
    "ACTION": "publish, subscribe or request",
    "UNIT": "a unit (second, minute, hour, day)",
    "ROUTE_MODE": "copy or redirect",
    "CMP_OP": "an operator",
    "DURATION": "a duration (10m)",
    "POLICY": "policy",
    "LABEL": "a label (name:)",
    "MINUS": "-",
    "PLUS": "+",
    "$END": "end of input",
}


class _Nesting(Exception):
    def __init__(self, line: int, column: int) -> None:
        super().__init__("nesting")
        self.line = line
        self.column = column


def _pos(tok: Token) -> tuple[int, int]:
    return (tok.line or 0, tok.column or 0)


def _depth(*items: A.Expr, line: int, column: int) -> int:
    d = 1 + max((i.depth for i in items), default=0)
    if d > A.MAX_DEPTH:
        raise _Nesting(line, column)
    return d


def _string(tok: Token) -> str:
    try:
        value = json.loads(str(tok))
    except ValueError as exc:
        line, col = _pos(tok)
        raise PolicyError(
            "", line, col, "invalid escape in string", hint='use \\" \\\\ \\n \\t or \\uXXXX'
        ) from exc
    assert isinstance(value, str)
    return value


#: Longest accepted number, in digits before the decimal point.
MAX_DIGITS = 18


def _digits_ok(tok: Token, text: str) -> None:
    if len(text.split(".")[0]) > MAX_DIGITS:
        line, col = _pos(tok)
        raise PolicyError(
            "", line, col, f"number longer than {MAX_DIGITS} digits", hint="use a smaller number"
        )


def _number(tok: Token, negative: bool = False) -> int | float:
    text = str(tok)
    _digits_ok(tok, text)
    value: int | float = float(text) if "." in text else int(text)
    return -value if negative else value


def _duration(tok: Token) -> A.Duration:
    text = str(tok)
    _digits_ok(tok, text)
    return A.Duration(parse_duration(text), text)


def _unit_seconds(tok: Token) -> float:
    return UNIT_WORD_SECONDS[str(tok).rstrip("s")]


# Children of a tree node as Lark hands them over: tokens and already-built nodes.
_C = list[Any]


@v_args(inline=False)
class _Build(Transformer[Token, object]):
    """Builds AST nodes bottom-up; runs inside the LALR parser (no recursion)."""

    # ---- literals and atoms
    def string(self, c: _C) -> A.Literal:
        return A.Literal(_string(c[0]), *_pos(c[0]))

    def number_lit(self, c: _C) -> tuple[int | float, Token]:
        if len(c) == 2:
            return (_number(c[1], negative=True), c[0])
        return (_number(c[0]), c[0])

    def number(self, c: _C) -> A.Literal:
        value, tok = c[0]
        return A.Literal(value, *_pos(tok))

    def duration(self, c: _C) -> A.Literal:
        return A.Literal(_duration(c[0]), *_pos(c[0]))

    def true(self, c: _C) -> A.Literal:
        return A.Literal(True, *_pos(c[0]))

    def false(self, c: _C) -> A.Literal:
        return A.Literal(False, *_pos(c[0]))

    def path(self, c: _C) -> A.Path:
        parts: list[str | int] = []
        for tok in c:
            if tok.type == "NAME":
                parts.append(str(tok))
            elif tok.type == "NUMBER":
                if "." in tok:
                    line, col = _pos(tok)
                    raise PolicyError("", line, col, "an index must be a whole number")
                _digits_ok(tok, str(tok))
                parts.append(int(tok))
        return A.Path(tuple(parts), *_pos(c[0]))

    def call(self, c: _C) -> A.Call:
        name = c[0]
        args = tuple(a for a in c[1:] if a is not None)
        line, col = _pos(name)
        return A.Call(str(name), args, line, col, _depth(*args, line=line, column=col))

    def list_lit(self, c: _C) -> A.ListLit:
        items = tuple(a for a in c[1:] if a is not None)
        line, col = _pos(c[0])
        return A.ListLit(items, line, col, _depth(*items, line=line, column=col))

    # ---- operators
    def compare(self, c: _C) -> A.Compare:
        left, op, right = c
        line, col = _pos(op)
        return A.Compare(
            str(op), left, right, line, col, _depth(left, right, line=line, column=col)
        )

    def binary(self, c: _C) -> A.Binary:
        left, op, right = c
        line, col = _pos(op)
        return A.Binary(str(op), left, right, line, col, _depth(left, right, line=line, column=col))

    def and_(self, c: _C) -> A.And:
        line, col = c[0].line, c[0].column
        return A.And(tuple(c), line, col, _depth(*c, line=line, column=col))

    def or_(self, c: _C) -> A.Or:
        line, col = c[0].line, c[0].column
        return A.Or(tuple(c), line, col, _depth(*c, line=line, column=col))

    def not_(self, c: _C) -> A.Not:
        tok, item = c
        line, col = _pos(tok)
        return A.Not(item, line, col, _depth(item, line=line, column=col))

    # ---- clauses: (name, value) pairs gathered by the rules below
    def actions(self, c: _C) -> tuple[str, ...]:
        seen = [str(t) for t in c]
        return tuple(a for a in A.ACTIONS if a in seen)

    def when(self, c: _C) -> tuple[str, A.Expr]:
        return ("when", c[0])

    def unless(self, c: _C) -> tuple[str, A.Expr]:
        return ("unless", c[0])

    def by(self, c: _C) -> tuple[str, A.Expr]:
        return ("by", c[0])

    def dedup_key(self, c: _C) -> tuple[str, A.Expr]:
        return ("of", c[0])

    def because(self, c: _C) -> tuple[str, str]:
        return ("because", _string(c[0]))

    def burst(self, c: _C) -> tuple[str, float]:
        return ("burst", float(c[0][0]))

    def window(self, c: _C) -> tuple[str, A.Duration]:
        if len(c) == 1:
            return ("window", _duration(c[0]))
        (value, _tok), unit = c
        return ("window", A.Duration(float(value) * _unit_seconds(unit), f"{value} {unit}"))

    # ---- rules
    def allow(self, c: _C) -> A.AllowRule:
        kw, actions, *rest = c
        return A.AllowRule(actions, dict(rest).get("when"), *_pos(kw))

    def deny(self, c: _C) -> A.DenyRule:
        kw, actions, *rest = c
        o = dict(rest)
        return A.DenyRule(actions, o.get("when"), o.get("unless"), o.get("because"), *_pos(kw))

    def require(self, c: _C) -> A.RequireRule:
        kw, *rest = c
        actions: tuple[str, ...] = ("publish",)
        if isinstance(rest[0], tuple):
            actions = rest.pop(0)
        expr = rest.pop(0)
        return A.RequireRule(actions, expr, dict(rest).get("because"), *_pos(kw))

    def limit(self, c: _C) -> A.LimitRule:
        kw, actions, (count, _tok), unit, *rest = c
        o = dict(rest)
        return A.LimitRule(
            actions,
            float(count),
            str(unit).rstrip("s"),
            o.get("burst"),
            o.get("by"),
            o.get("when"),
            *_pos(kw),
        )

    def route(self, c: _C) -> A.RouteRule:
        kw, mode, target, *rest = c
        return A.RouteRule(
            str(mode),
            _string(target),
            dict(rest).get("when"),
            *_pos(kw),
            target_column=target.column or 0,
        )

    def dedup(self, c: _C) -> A.DedupRuleNode:
        kw, *rest = c
        o = dict(rest)
        return A.DedupRuleNode(o.get("of"), o["window"], o.get("when"), *_pos(kw))

    def tag(self, c: _C) -> A.TagRule:
        kw, name, value, *rest = c
        return A.TagRule(_string(name), value, dict(rest).get("when"), *_pos(kw))

    def labelled(self, c: _C) -> A.Rule:
        label, rule = c
        line, column = _pos(label)
        labelled: A.Rule = dataclasses.replace(
            rule, label=str(label)[:-1], line=line, column=column
        )
        return labelled

    def patterns(self, c: _C) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
        return tuple(_string(t) for t in c), tuple(_pos(t) for t in c)

    def policy(self, c: _C) -> A.Policy:
        kw, name, (patterns, cols), *rules = c
        return A.Policy(str(name), patterns, tuple(rules), *_pos(kw), pattern_columns=cols)

    def start(self, c: _C) -> tuple[A.Policy, ...]:
        return tuple(c)


class PolicyParser:
    """One LALR parser for the policy language. Building one takes tens of milliseconds (less
    with ``cache``, a file where Lark keeps its tables: see :func:`policy.files.new_parser`),
    so a caller builds one and reuses it; :meth:`parse` is thread-safe (the transformer keeps
    no state).

    >>> [p] = PolicyParser().parse('policy a on "a.>" { allow publish }')
    >>> p.name, p.rules[0].actions
    ('a', ('publish',))
    """

    __slots__ = ("_lark",)

    def __init__(self, *, cache: str | bool = False) -> None:
        grammar = resources.files("lockgate.policy").joinpath("grammar.lark").read_text("utf-8")
        self._lark = Lark(
            grammar,
            parser="lalr",
            lexer="contextual",
            start="start",
            transformer=_Build(),
            cache=cache,
            maybe_placeholders=True,
        )

    def parse(self, text: str, file: str = "<policy>") -> tuple[A.Policy, ...]:
        """Parse a policy file; raise :class:`PolicyError` (with position) on a syntax error."""
        result = _run(self._lark, text, file)
        assert isinstance(result, tuple)
        return tuple(
            A.Policy(p.name, p.patterns, p.rules, p.line, p.column, file, p.pattern_columns)
            for p in result
        )


def _syntax_error(exc: UnexpectedInput, file: str, text: str) -> PolicyError:
    line, col = exc.line or 1, exc.column or 1
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream or 0
        ch = text[pos] if pos < len(text) else "?"
        err = PolicyError(
            file,
            line,
            col,
            f"unexpected character {ch!r}",
            hint="strings use double quotes; comments start with #",
        )
    elif isinstance(exc, UnexpectedEOF):
        lines = text.splitlines() or [""]
        err = PolicyError(
            file,
            len(lines),
            len(lines[-1]) + 1,
            "unexpected end of input",
            hint="a policy ends with }",
        )
    else:
        assert isinstance(exc, UnexpectedToken)
        tok = exc.token
        shown = "end of input" if tok.type == "$END" else repr(str(tok))
        expected = sorted({_TERMINAL_TEXT.get(t, t.lower().strip("_")) for t in exc.expected})
        if tok.type == "$END":
            lines = text.splitlines() or [""]
            line, col = len(lines), len(lines[-1]) + 1
        err = PolicyError(
            file, line, col, f"unexpected {shown}", hint="expected " + ", ".join(expected[:8])
        )
    return err.with_source(text)


def _run(lark: Lark, text: str, file: str) -> object:
    try:
        return lark.parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, file, text) from None
    except _Nesting as exc:
        raise PolicyError(
            file,
            exc.line,
            exc.column,
            f"expression nested deeper than {A.MAX_DEPTH} levels",
            hint="split the condition into several rules",
        ).with_source(text) from None
    except PolicyError as exc:
        exc.file = file
        raise exc.with_source(text) from None


def parse(
    text: str, file: str = "<policy>", parser: PolicyParser | None = None
) -> tuple[A.Policy, ...]:
    """Parse a policy file with ``parser`` (a new one when None: pass yours when parsing many).
    Raises :class:`PolicyError` (with position) on a syntax error."""
    return (parser or PolicyParser()).parse(text, file)
