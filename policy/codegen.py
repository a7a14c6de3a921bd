"""Turn checked expressions into Python source text (never from user strings: literals are
written with ``repr`` and regexes and sets become named constants).

Missing values are ``None`` at run time. Logic is three-valued: a comparison that reads a
missing value is *unknown*. :meth:`ExprGen.true` writes "definitely true" and
:meth:`ExprGen.false` "definitely false", so ``not``, ``and`` and ``or`` follow Kleene logic
while the generated code stays plain short-circuit Python.
"""

from __future__ import annotations

from . import ast as A
from .checker import compile_regex, infer, may_be_missing
from .durations import rfc3339_seconds
from .runtime import CachedSearch

__all__ = ["Constants", "ExprGen"]


class Constants:
    """The namespace of the generated module: each constant once, under a short name."""

    def __init__(self) -> None:
        self.ns: dict[str, object] = {}
        self._by_key: dict[tuple[str, object], str] = {}

    def add(self, kind: str, value: object, key: object = None) -> str:
        k = (kind, key if key is not None else value)
        name = self._by_key.get(k)
        if name is None:
            name = f"_{kind}{len(self.ns)}"
            self.ns[name] = value
            self._by_key[k] = name
        return name


class ExprGen:
    """Writes expressions for one generated function; records which locals it needs."""

    def __init__(self, consts: Constants) -> None:
        self.c = consts
        self.uses: set[str] = set()
        self._tmp = 0

    def temp(self) -> str:
        self._tmp += 1
        return f"_t{self._tmp}"

    # ---- values (None when missing)
    def value(self, e: A.Expr) -> str:
        if isinstance(e, A.Literal):
            return _lit(e.value)
        if isinstance(e, A.ListLit):
            items = [_const(i) for i in e.items]
            return self.c.add("list", items, key=tuple(items))
        if isinstance(e, A.Path):
            return self._path(e)
        if isinstance(e, A.Call):
            if e.name == "timestamp":
                arg = e.args[0]
                assert isinstance(arg, A.Literal) and isinstance(arg.value, str)
                return repr(rfc3339_seconds(arg.value))
            if e.name == "size":
                return f"_size({self.value(e.args[0])})"
            return f"({self.true(e)})"
        if isinstance(e, A.Binary):
            fn = "_add" if e.op == "+" else "_sub"
            if may_be_missing(e):
                return f"{fn}({self.value(e.left)}, {self.value(e.right)})"
            return f"({self.value(e.left)} {e.op} {self.value(e.right)})"
        # a condition used as a value: True, False, or None (unknown)
        return f"_tri({self.true(e)}, {self.false(e)})"

    def _path(self, e: A.Path) -> str:
        root, rest = e.parts[0], e.parts[1:]
        if root in ("action", "now"):
            self.uses.add(root)
            return root
        if root == "subject":
            if not rest:
                self.uses.add("subject")
                return "subject"
            self.uses.add("toks")
            i = rest[0]
            return f"(toks[{i}] if len(toks) > {i} else None)"
        attr = rest[0]
        if root == "principal":
            self.uses.add("pr")
            if attr == "attrs":
                return f"pr.attrs.get({rest[1]!r})"
            return f"pr.{attr}"
        if attr == "data":
            self.uses.add("data")
            keys = rest[1:]
            if not keys:
                return "(data if data is not _MISSING else _load(req))"
            if len(keys) == 1 and isinstance(keys[0], str):
                return (
                    f"(data.get({keys[0]!r}) if data.__class__ is dict else _dig(data, req, "
                    f"{tuple(keys)!r}))"
                )
            return f"_dig(data, req, {tuple(keys)!r})"
        self.uses.add("ev")
        if attr == "time":
            return "_ts(ev.get('time'))"
        return f"ev.get({attr!r})"

    # ---- conditions
    def true(self, e: A.Expr) -> str:
        """Python text that is True exactly when ``e`` is definitely true."""
        return self._logic(e, True)

    def false(self, e: A.Expr) -> str:
        """Python text that is True exactly when ``e`` is definitely false."""
        return self._logic(e, False)

    def _logic(self, e: A.Expr, want: bool) -> str:
        if isinstance(e, A.Not):
            return self._logic(e.item, not want)
        if isinstance(e, A.And | A.Or):
            joiner = " and " if isinstance(e, A.And) == want else " or "
            return "(" + joiner.join(self._logic(i, want) for i in e.items) + ")"
        if isinstance(e, A.Compare):
            return self._compare(e, want)
        if isinstance(e, A.Call) and e.name == "exists":
            v = self.value(e.args[0])
            return f"({v} is not None)" if want else f"({v} is None)"
        if isinstance(e, A.Literal) and isinstance(e.value, bool):
            return repr(e.value is want)
        v = self.value(e)
        return f"({v} is {want!r})"

    def _side(self, e: A.Expr, guards: list[str]) -> str:
        """The value of one side; a side that may be missing gets a temp and a guard."""
        text = self.value(e)
        if not may_be_missing(e):
            return text
        t = self.temp()
        guards.append(f"({t} := {text}) is not None")
        return t

    def _compare(self, e: A.Compare, want: bool) -> str:
        guards: list[str] = []
        op = e.op
        # x == literal is false for a missing x already: no guard needed for "definitely true".
        if (
            op == "=="
            and want
            and isinstance(e.right, A.Literal)
            and not isinstance(e.right.value, A.Duration | A.Timestamp)
        ):
            return f"({self.value(e.left)} == {self.value(e.right)})"
        left = self._side(e.left, guards)
        if op in ("in", "has_any", "has_all") and isinstance(e.right, A.ListLit):
            right = self.c.add("set", frozenset(_const(i) for i in e.right.items))
        elif op == "matches":
            assert isinstance(e.right, A.Literal) and isinstance(e.right.value, str)
            right = self.c.add("re", CachedSearch(compile_regex(e.right.value)), key=e.right.value)
        else:
            right = self._side(e.right, guards)
        test = self._op(op, left, right, e)
        if want:
            body = test
        elif test.startswith("(not ") and test.endswith(")"):
            body = f"({test[5:-1]})"
        else:
            body = f"not {test}"
        return "(" + " and ".join([*guards, body]) + ")"

    def _op(self, op: str, left: str, right: str, e: A.Compare) -> str:
        if op in ("==", "!=") and "list" in (infer(e.left)[:4], infer(e.right)[:4]):
            return f"({'' if op == '==' else 'not '}_list_eq({left}, {right}))"
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return f"({left} {op} {right})"
        if op in ("in", "contains"):
            a, b = (left, right) if op == "in" else (right, left)
            return f"({a} in {b})"
        if op in ("has_any", "has_all"):
            left_is_set = infer(e.left) == "list<string>" and isinstance(e.left, A.Path)
            if isinstance(e.right, A.ListLit) and left_is_set:
                if op == "has_any":
                    return f"(not {right}.isdisjoint({left}))"
                return f"{right}.issubset({left})"
            return f"_{op}({left}, {right})"
        if op in ("starts_with", "ends_with"):
            method = op.replace("_", "")
            if infer(e.left) == "string" and infer(e.right) == "string":
                return f"{left}.{method}({right})"
            return f"_{method}({left}, {right})"
        return f"{right}({left})"


def _const(e: A.Expr) -> object:
    assert isinstance(e, A.Literal)
    v = e.value
    return v.seconds if isinstance(v, A.Duration | A.Timestamp) else v


def _lit(v: object) -> str:
    if isinstance(v, A.Duration | A.Timestamp):
        return repr(v.seconds)
    return repr(v)
