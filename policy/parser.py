"""Parse policy text into :mod:`policy.ast` nodes. This module alone owns the Lark options.

The LALR parser is built once per process, lazily, with its tables cached on disk
(``cache=True``). The tree is built by an inline transformer while the parser runs, so deep
nesting never recurses; nesting beyond :data:`policy.ast.MAX_DEPTH` is a syntax error.
"""

from __future__ import annotations

import json
import threading
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import ast as A
from .errors import PolicyError

__all__ = ["parse", "parse_expr"]

_lock = threading.Lock()
_parsers: dict[str, Lark] = {}

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
UNIT_WORD_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}

# How terminals read in "expected ..." hints.
_TERMINAL_TEXT = {
    "LBRACE": "{", "RBRACE": "}", "LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]",
    "COMMA": ",", "DOT": ".", "EQUAL": "=", "STRING": "a string", "NUMBER": "a number",
    "NAME": "a name", "ACTION": "publish, subscribe or request", "UNIT": "a unit (second, "
    "minute, hour, day)", "ROUTE_MODE": "copy or redirect", "CMP_OP": "an operator",
    "DURATION": "a duration (10m)", "POLICY": "policy", "MINUS": "-", "PLUS": "+",
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


def _number(tok: Token, negative: bool = False) -> int | float:
    text = str(tok)
    value: int | float = float(text) if "." in text else int(text)
    return -value if negative else value


def _duration(tok: Token) -> A.Duration:
    text = str(tok)
    unit = "ms" if text.endswith("ms") else text[-1]
    return A.Duration(float(text[: -len(unit)]) * _UNIT_SECONDS[unit], text)


def _unit_seconds(tok: Token) -> float:
    return UNIT_WORD_SECONDS[str(tok).rstrip("s")]


@v_args(inline=False)
class _Build(Transformer[Token, object]):
    """Builds AST nodes bottom-up; runs inside the LALR parser (no recursion)."""

    # ---- literals and atoms
    def string(self, c: list[Token]) -> A.Literal:
        return A.Literal(_string(c[0]), *_pos(c[0]))

    def number_lit(self, c: list[Token]) -> tuple[int | float, Token]:
        if len(c) == 2:
            return (_number(c[1], negative=True), c[0])
        return (_number(c[0]), c[0])

    def number(self, c: list[tuple[int | float, Token]]) -> A.Literal:
        value, tok = c[0]
        return A.Literal(value, *_pos(tok))

    def duration(self, c: list[Token]) -> A.Literal:
        return A.Literal(_duration(c[0]), *_pos(c[0]))

    def true(self, c: list[Token]) -> A.Literal:
        return A.Literal(True, *_pos(c[0]))

    def false(self, c: list[Token]) -> A.Literal:
        return A.Literal(False, *_pos(c[0]))

    def path(self, c: list[Token]) -> A.Path:
        parts: list[str | int] = []
        for tok in c:
            if tok.type == "NAME":
                parts.append(str(tok))
            elif tok.type == "NUMBER":
                if "." in tok:
                    line, col = _pos(tok)
                    raise PolicyError("", line, col, "an index must be a whole number")
                parts.append(int(tok))
        return A.Path(tuple(parts), *_pos(c[0]))

    def call(self, c: list[object]) -> A.Call:
        name = c[0]
        assert isinstance(name, Token)
        args = tuple(a for a in c[1:] if a is not None)
        line, col = _pos(name)
        return A.Call(str(name), args, line, col, _depth(*args, line=line, column=col))  # type: ignore[arg-type]

    def list(self, c: list[object]) -> A.ListLit:
        tok = c[0]
        assert isinstance(tok, Token)
        items = tuple(a for a in c[1:] if a is not None)
        line, col = _pos(tok)
        return A.ListLit(items, line, col, _depth(*items, line=line, column=col))  # type: ignore[arg-type]

    # ---- operators
    def compare(self, c: list[object]) -> A.Compare:
        left, op, right = c
        assert isinstance(op, Token)
        line, col = _pos(op)
        d = _depth(left, right, line=line, column=col)  # type: ignore[arg-type]
        return A.Compare(str(op), left, right, line, col, d)  # type: ignore[arg-type]

    def binary(self, c: list[object]) -> A.Binary:
        left, op, right = c
        assert isinstance(op, Token)
        line, col = _pos(op)
        d = _depth(left, right, line=line, column=col)  # type: ignore[arg-type]
        return A.Binary(str(op), left, right, line, col, d)  # type: ignore[arg-type]

    def and_(self, c: list[A.Expr]) -> A.And:
        return A.And(tuple(c), c[0].line, c[0].column, _depth(*c, line=c[0].line, column=c[0].column))

    def or_(self, c: list[A.Expr]) -> A.Or:
        return A.Or(tuple(c), c[0].line, c[0].column, _depth(*c, line=c[0].line, column=c[0].column))

    def not_(self, c: list[object]) -> A.Not:
        tok, item = c
        assert isinstance(tok, Token)
        line, col = _pos(tok)
        return A.Not(item, line, col, _depth(item, line=line, column=col))  # type: ignore[arg-type]

    # ---- clauses
    def actions(self, c: list[Token]) -> tuple[str, ...]:
        seen = [str(t) for t in c]
        return tuple(a for a in A.ACTIONS if a in seen)

    def when(self, c: list[A.Expr]) -> tuple[str, A.Expr]:
        return ("when", c[0])

    def unless(self, c: list[A.Expr]) -> tuple[str, A.Expr]:
        return ("unless", c[0])

    def by(self, c: list[A.Expr]) -> tuple[str, A.Expr]:
        return ("by", c[0])

    def dedup_key(self, c: list[A.Expr]) -> tuple[str, A.Expr]:
        return ("of", c[0])

    def because(self, c: list[Token]) -> tuple[str, str]:
        return ("because", _string(c[0]))

    def burst(self, c: list[tuple[int | float, Token]]) -> tuple[str, float]:
        return ("burst", float(c[0][0]))

    def window(self, c: list[object]) -> tuple[str, A.Duration]:
        if len(c) == 1:
            tok = c[0]
            assert isinstance(tok, Token)
            return ("window", _duration(tok))
        (value, _tok), unit = c
        assert isinstance(unit, Token)
        return ("window", A.Duration(float(value) * _unit_seconds(unit), f"{value} {unit}"))  # type: ignore[arg-type]

    # ---- rules
    def allow(self, c: list[object]) -> A.AllowRule:
        kw, actions, *rest = c
        opts = dict(rest)  # type: ignore[arg-type]
        return A.AllowRule(actions, opts.get("when"), *_pos(kw))  # type: ignore[arg-type]

    def deny(self, c: list[object]) -> A.DenyRule:
        kw, actions, *rest = c
        o = dict(rest)  # type: ignore[arg-type]
        return A.DenyRule(actions, o.get("when"), o.get("unless"), o.get("because"), *_pos(kw))  # type: ignore[arg-type]

    def require(self, c: list[object]) -> A.RequireRule:
        kw = c[0]
        rest = list(c[1:])
        actions: tuple[str, ...] = ("publish",)
        if rest and isinstance(rest[0], tuple) and all(isinstance(a, str) for a in rest[0]):
            actions = rest.pop(0)  # type: ignore[assignment]
        expr = rest.pop(0)
        because = dict(rest).get("because")  # type: ignore[arg-type]
        return A.RequireRule(actions, expr, because, *_pos(kw))  # type: ignore[arg-type]

    def limit(self, c: list[object]) -> A.LimitRule:
        kw, actions, (count, _tok), unit, *rest = c  # type: ignore[misc]
        o = dict(rest)  # type: ignore[arg-type]
        return A.LimitRule(
            actions, float(count), str(unit).rstrip("s"), o.get("burst"), o.get("by"),
            o.get("when"), *_pos(kw),
        )  # type: ignore[arg-type]

    def route(self, c: list[object]) -> A.RouteRule:
        kw, mode, target, *rest = c
        o = dict(rest)  # type: ignore[arg-type]
        assert isinstance(target, Token)
        return A.RouteRule(
            str(mode), _string(target), o.get("when"), *_pos(kw), target_column=target.column or 0
        )  # type: ignore[arg-type]

    def dedup(self, c: list[object]) -> A.DedupRuleNode:
        kw, *rest = c
        o = dict(rest)  # type: ignore[arg-type]
        return A.DedupRuleNode(o.get("of"), o["window"], o.get("when"), *_pos(kw))  # type: ignore[arg-type]

    def tag(self, c: list[object]) -> A.TagRule:
        kw, name, value, *rest = c
        o = dict(rest)  # type: ignore[arg-type]
        assert isinstance(name, Token)
        return A.TagRule(_string(name), value, o.get("when"), *_pos(kw))  # type: ignore[arg-type]

    def patterns(self, c: list[Token]) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
        return tuple(_string(t) for t in c), tuple(_pos(t) for t in c)

    def policy(self, c: list[object]) -> A.Policy:
        kw, name, (patterns, cols), *rules = c  # type: ignore[misc]
        return A.Policy(str(name), patterns, tuple(rules), *_pos(kw), pattern_columns=cols)  # type: ignore[arg-type]

    def start(self, c: list[A.Policy]) -> tuple[A.Policy, ...]:
        return tuple(c)


def _parser(start: str) -> Lark:
    with _lock:
        p = _parsers.get(start)
        if p is None:
            grammar = resources.files("policy").joinpath("grammar.lark").read_text("utf-8")
            p = Lark(
                grammar, parser="lalr", lexer="contextual", start=start, transformer=_Build(),
                cache=True, maybe_placeholders=True,
            )
            _parsers[start] = p
        return p


def _syntax_error(exc: UnexpectedInput, file: str, text: str) -> PolicyError:
    line, col = exc.line or 1, exc.column or 1
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else "?"
        err = PolicyError(file, line, col, f"unexpected character {ch!r}",
                          hint="strings use double quotes; comments start with #")
    elif isinstance(exc, UnexpectedEOF):
        lines = text.splitlines() or [""]
        err = PolicyError(file, len(lines), len(lines[-1]) + 1, "unexpected end of input",
                          hint="a policy ends with }")
    else:
        assert isinstance(exc, UnexpectedToken)
        tok = exc.token
        shown = "end of input" if tok.type == "$END" else repr(str(tok))
        expected = sorted({_TERMINAL_TEXT.get(t, t.lower().strip("_")) for t in exc.expected})
        if tok.type == "$END":
            lines = text.splitlines() or [""]
            line, col = len(lines), len(lines[-1]) + 1
        err = PolicyError(file, line, col, f"unexpected {shown}",
                          hint="expected " + ", ".join(expected[:8]))
    return err.with_source(text)


def _run(text: str, file: str, start: str) -> object:
    try:
        return _parser(start).parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, file, text) from None
    except _Nesting as exc:
        raise PolicyError(
            file, exc.line, exc.column, f"expression nested deeper than {A.MAX_DEPTH} levels",
            hint="split the condition into several rules",
        ).with_source(text) from None
    except PolicyError as exc:
        exc.file = file
        raise exc.with_source(text) from None


def parse(text: str, file: str = "<policy>") -> tuple[A.Policy, ...]:
    """Parse a policy file; raise :class:`PolicyError` (with position) on a syntax error."""
    result = _run(text, file, "start")
    assert isinstance(result, tuple)
    return tuple(A.Policy(p.name, p.patterns, p.rules, p.line, p.column, file, p.pattern_columns)
                 for p in result)
