"""Static checks on one expression or rule: names and types.

Types are ``string``, ``number``, ``bool``, ``duration``, ``timestamp``, ``list<T>`` and
``dyn`` (a value only known at run time: ``event.data.*`` and extension attributes). ``dyn``
is compatible with every type; mismatches between known types are load errors.

Set-level checks (reachability, shadowing, conflicts, route loops) live in
:mod:`policy.analysis`.
"""

from __future__ import annotations

import difflib

import re2

from . import ast as A
from .attributes import NAME_RULE, is_extension_name
from .durations import rfc3339_seconds
from .errors import PolicyError

__all__ = ["MAX_REGEX_LENGTH", "Checker", "compile_regex", "infer", "may_be_missing"]

#: Longest accepted regular expression, in characters.
MAX_REGEX_LENGTH = 1000

EVENT_STRING_ATTRS = (
    "id",
    "source",
    "type",
    "specversion",
    "subject",
    "datacontenttype",
    "dataschema",
)
PRINCIPAL_ATTRS = ("org", "agent", "roles", "attrs")
ROOTS = ("event", "principal", "action", "subject", "now")
FUNCTIONS = ("exists", "size", "timestamp")
_ORDERED = ("number", "duration", "timestamp", "string")

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 8 << 20


def compile_regex(pattern: str) -> re2._Regexp[str]:
    """Compile with RE2 (linear time, no backtracking); raise ``ValueError`` on a bad pattern."""
    if len(pattern) > MAX_REGEX_LENGTH:
        raise ValueError(f"pattern is {len(pattern)} characters, over {MAX_REGEX_LENGTH}")
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as exc:
        msg = exc.args[0] if exc.args else "invalid"
        text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
        raise ValueError(text) from None


def _is_list(t: str) -> bool:
    return t.startswith("list")


def _elem(t: str) -> str:
    return t[5:-1] if t.startswith("list<") else "dyn"


def _compatible(a: str, b: str) -> bool:
    return a == "dyn" or b == "dyn" or a == b


def may_be_missing(e: A.Expr) -> bool:
    """True when ``e`` can evaluate to "missing" at run time."""
    if isinstance(e, A.Path):
        root = e.parts[0]
        if root == "event":
            return True
        if root == "principal":
            return len(e.parts) > 1 and e.parts[1] == "attrs"
        return root == "subject" and len(e.parts) > 1
    if isinstance(e, A.Binary):
        return may_be_missing(e.left) or may_be_missing(e.right)
    if isinstance(e, A.Call) and e.name == "size":
        return any(may_be_missing(a) for a in e.args)
    return False


class Checker:
    """Collects name and type errors of expressions in one file."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self.errors: list[PolicyError] = []

    def error(
        self,
        node: A.Expr | A.Rule | A.Policy,
        message: str,
        hint: str = "",
        column: int | None = None,
    ) -> None:
        col = node.column if column is None else column
        self.errors.append(
            PolicyError(self.file, node.line, col, message, hint).with_source(self.text)
        )

    def condition(self, e: A.Expr) -> None:
        """Check ``e`` as a rule condition (it must be a boolean)."""
        t = self.infer(e)
        if t not in ("bool", "dyn"):
            self.error(
                e, f"expected a condition, found a {t}", "compare it: x == ..., x > ..., exists(x)"
            )

    def infer(self, e: A.Expr) -> str:
        if isinstance(e, A.Literal):
            return _literal_type(e.value)
        if isinstance(e, A.ListLit):
            return self._list(e)
        if isinstance(e, A.Path):
            return self._path(e)
        if isinstance(e, A.Call):
            return self._call(e)
        if isinstance(e, A.Compare):
            return self._compare(e)
        if isinstance(e, A.Binary):
            return self._binary(e)
        items = e.items if isinstance(e, A.And | A.Or) else (e.item,)
        for item in items:
            self.condition(item)
        return "bool"

    def _list(self, e: A.ListLit) -> str:
        types = set()
        for item in e.items:
            if not isinstance(item, A.Literal):
                self.error(item, "a list holds literals only", "write strings or numbers")
            types.add(self.infer(item))
        return f"list<{types.pop()}>" if len(types) == 1 else "list"

    def _path(self, e: A.Path) -> str:
        root, rest = e.parts[0], e.parts[1:]
        if root not in ROOTS:
            close = difflib.get_close_matches(str(root), ROOTS, 1)
            hint = f"did you mean {close[0]!r}?" if close else "names are " + ", ".join(ROOTS)
            self.error(e, f"unknown name {root!r}", hint)
            return "dyn"
        if root in ("action", "now") or (root == "subject" and not rest):
            if rest:
                self.error(e, f"{root} has no attributes")
            return "timestamp" if root == "now" else "string"
        if root == "subject":
            if len(rest) != 1 or not isinstance(rest[0], int):
                self.error(e, "a subject token is read as subject[n]", "n counts from 0")
            return "string"
        if not rest or isinstance(rest[0], int):
            self.error(
                e,
                f"{root} is not a value",
                f"name an attribute, e.g. {root}." + ("type" if root == "event" else "agent"),
            )
            return "dyn"
        attr = rest[0]
        if root == "principal":
            return self._principal(e, attr, rest[1:])
        if attr == "data":
            return "dyn"
        if attr in EVENT_STRING_ATTRS or attr == "time":
            if len(rest) > 1:
                self.error(e, f"event.{attr} has no attributes")
            return "timestamp" if attr == "time" else "string"
        if not is_extension_name(attr):
            self.error(
                e,
                f"unknown event attribute {attr!r}",
                f"extension attributes are {NAME_RULE}",
            )
        return "dyn"

    def _principal(self, e: A.Path, attr: str | int, rest: tuple[str | int, ...]) -> str:
        if attr not in PRINCIPAL_ATTRS:
            close = difflib.get_close_matches(str(attr), PRINCIPAL_ATTRS, 1)
            hint = (
                f"did you mean principal.{close[0]}?"
                if close
                else (f"principal has org, agent, roles; key attributes are principal.attrs.{attr}")
            )
            self.error(e, f"unknown principal attribute {attr!r}", hint)
            return "dyn"
        if attr == "attrs":
            if len(rest) != 1 or isinstance(rest[0], int):
                self.error(e, "read one key attribute: principal.attrs.<name>")
            return "string"
        if rest:
            self.error(e, f"principal.{attr} has no attributes")
        return "list<string>" if attr == "roles" else "string"

    def _call(self, e: A.Call) -> str:
        if e.name not in FUNCTIONS:
            close = difflib.get_close_matches(e.name, FUNCTIONS, 1)
            hint = f"did you mean {close[0]}()?" if close else "functions: " + ", ".join(FUNCTIONS)
            self.error(e, f"unknown function {e.name!r}", hint)
            return "dyn"
        if len(e.args) != 1:
            self.error(e, f"{e.name}() takes one argument, got {len(e.args)}")
            return {"exists": "bool", "size": "number"}.get(e.name, "timestamp")
        arg = e.args[0]
        if e.name == "exists":
            if not isinstance(arg, A.Path):
                self.error(arg, "exists() takes a name such as event.data.x")
            else:
                self.infer(arg)
            return "bool"
        if e.name == "size":
            t = self.infer(arg)
            if t not in ("string", "dyn") and not _is_list(t):
                self.error(arg, f"size() takes a string or a list, not a {t}")
            return "number"
        if not (isinstance(arg, A.Literal) and isinstance(arg.value, str)):
            self.error(
                arg, "timestamp() takes a string literal", 'timestamp("2024-01-31T00:00:00Z")'
            )
        else:
            try:
                rfc3339_seconds(arg.value)
            except ValueError:
                self.error(
                    arg,
                    f"not an RFC 3339 timestamp: {arg.value!r}",
                    'write e.g. "2024-01-31T09:30:00Z"',
                )
        return "timestamp"

    def _compare(self, e: A.Compare) -> str:
        lt, rt, op = self.infer(e.left), self.infer(e.right), e.op
        if op in ("==", "!="):
            if not _compatible(lt, rt):
                self.error(e, f"cannot compare a {lt} with a {rt}", _quote_hint(lt, rt))
            self._action_literal(e)
        elif op in ("<", "<=", ">", ">="):
            for t, side in ((lt, e.left), (rt, e.right)):
                if t != "dyn" and t not in _ORDERED:
                    self.error(side, f"'{op}' does not order a {t}")
            if not _compatible(lt, rt):
                self.error(e, f"cannot compare a {lt} with a {rt}", _quote_hint(lt, rt))
        elif op == "in":
            if rt != "dyn" and not _is_list(rt):
                self.error(
                    e.right,
                    f"'in' needs a list on its right, found a {rt}",
                    'use contains for text: x contains "..."',
                )
            elif not _compatible(lt, _elem(rt)):
                self.error(e, f"a {lt} is never in a {rt}", _quote_hint(lt, _elem(rt)))
        elif op in ("has_any", "has_all"):
            for t, side in ((lt, e.left), (rt, e.right)):
                if t != "dyn" and not _is_list(t):
                    self.error(side, f"'{op}' compares lists, found a {t}")
        elif op in ("starts_with", "ends_with", "contains"):
            ok_left = ("string", "dyn") + (("list<string>", "list") if op == "contains" else ())
            if lt not in ok_left and not (op == "contains" and _is_list(lt)):
                self.error(e.left, f"'{op}' needs text on its left, found a {lt}")
            if rt not in ("string", "dyn") and not (op == "contains" and _is_list(lt)):
                self.error(e.right, f"'{op}' needs text on its right, found a {rt}")
        else:  # matches
            if lt not in ("string", "dyn"):
                self.error(e.left, f"'matches' needs text on its left, found a {lt}")
            self._regex(e.right)
        return "bool"

    def _regex(self, e: A.Expr) -> None:
        if not (isinstance(e, A.Literal) and isinstance(e.value, str)):
            self.error(
                e,
                "'matches' takes a string literal pattern",
                "patterns are compiled once, at load time",
            )
            return
        try:
            compile_regex(e.value)
        except ValueError as exc:
            self.error(
                e,
                f"invalid regular expression: {exc}",
                "RE2 syntax: no backreferences or lookaround; at most "
                f"{MAX_REGEX_LENGTH} characters",
            )

    def _action_literal(self, e: A.Compare) -> None:
        for a, b in ((e.left, e.right), (e.right, e.left)):
            if (
                isinstance(a, A.Path)
                and a.parts == ("action",)
                and isinstance(b, A.Literal)
                and b.value not in A.ACTIONS
            ):
                self.error(
                    b, f"{b.value!r} is not an action", "actions are publish, subscribe, request"
                )

    def _binary(self, e: A.Binary) -> str:
        lt, rt = self.infer(e.left), self.infer(e.right)
        if "dyn" in (lt, rt):
            return "dyn" if lt == rt or "number" in (lt, rt) else (lt if rt == "dyn" else rt)
        result = _ARITH.get((lt, e.op, rt))
        if result is None:
            self.error(
                e,
                f"cannot compute {lt} {e.op} {rt}",
                "+ and - take numbers, durations, or a timestamp and a duration",
            )
            return "dyn"
        return result


_ARITH = {
    ("number", "+", "number"): "number",
    ("number", "-", "number"): "number",
    ("duration", "+", "duration"): "duration",
    ("duration", "-", "duration"): "duration",
    ("timestamp", "+", "duration"): "timestamp",
    ("timestamp", "-", "duration"): "timestamp",
    ("duration", "+", "timestamp"): "timestamp",
    ("timestamp", "-", "timestamp"): "duration",
}


def _literal_type(v: object) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "duration" if isinstance(v, A.Duration) else "timestamp"


def _quote_hint(a: str, b: str) -> str:
    if {a, b} == {"number", "string"}:
        return "write numbers without quotes, or quote both sides"
    return "both sides must have the same type"


def infer(e: A.Expr) -> str:
    """The type of ``e`` without reporting errors."""
    return Checker("", "").infer(e)
