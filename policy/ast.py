"""The typed syntax tree of the policy language: frozen dataclasses, each with line/column.

Expressions (``Expr``) and rules (``Rule``) are built by :mod:`policy.parser` while the LALR
parser runs, so building never recurses. ``depth`` on an expression is its nesting depth,
bounded by :data:`MAX_DEPTH`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ACTIONS",
    "MAX_DEPTH",
    "AllowRule",
    "And",
    "Binary",
    "Call",
    "Compare",
    "DedupRuleNode",
    "DenyRule",
    "Duration",
    "Expr",
    "LimitRule",
    "ListLit",
    "Literal",
    "Not",
    "Or",
    "Path",
    "Policy",
    "RequireRule",
    "RouteRule",
    "Rule",
    "TagRule",
    "Timestamp",
]

#: Nesting limit of expressions (parentheses, not, lists, calls).
MAX_DEPTH = 32
#: The actions a rule can name, in canonical order.
ACTIONS = ("publish", "subscribe", "request")


@dataclass(frozen=True, slots=True)
class Duration:
    """A duration literal such as ``10m``; ``seconds`` is its value, ``text`` its spelling."""

    seconds: float
    text: str


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A ``timestamp("2024-01-01T00:00:00Z")`` literal, as unix seconds."""

    seconds: float
    text: str


@dataclass(frozen=True, slots=True)
class Literal:
    """A string, number, boolean, duration or timestamp constant."""

    value: str | int | float | bool | Duration | Timestamp
    line: int
    column: int
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class ListLit:
    """``[a, b, c]``: a list of literals."""

    items: tuple[Expr, ...]
    line: int
    column: int
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class Path:
    """A name read from the request: ``event.data.amount``, ``subject[2]``, ``now``.

    ``parts[0]`` is the root name; an ``int`` part is an index (0-based).
    """

    parts: tuple[str | int, ...]
    line: int
    column: int
    depth: int = field(default=1, compare=False)

    @property
    def dotted(self) -> str:
        out = str(self.parts[0])
        for p in self.parts[1:]:
            out += f"[{p}]" if isinstance(p, int) else f".{p}"
        return out


@dataclass(frozen=True, slots=True)
class Call:
    """A built-in function call: ``exists(path)``, ``size(x)``, ``timestamp("...")``."""

    name: str
    args: tuple[Expr, ...]
    line: int
    column: int
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right`` where op is a comparison or a membership/string operator."""

    op: str
    left: Expr
    right: Expr
    line: int
    column: int
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class Binary:
    """``left + right`` or ``left - right`` (numbers, durations, timestamps)."""

    op: str
    left: Expr
    right: Expr
    line: int
    column: int
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]
    line: int
    column: int
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]
    line: int
    column: int
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr
    line: int
    column: int
    depth: int = field(default=1, compare=False)


Expr = Literal | ListLit | Path | Call | Compare | Binary | And | Or | Not


@dataclass(frozen=True, slots=True)
class AllowRule:
    """``allow ACTIONS [when EXPR]``"""

    actions: tuple[str, ...]
    when: Expr | None
    line: int
    column: int
    label: str | None = None
    """The rule's name (``name: limit ...``): its identity for limit and duplicate state."""


@dataclass(frozen=True, slots=True)
class DenyRule:
    """``deny ACTIONS [when EXPR] [unless EXPR] [because "reason"]``"""

    actions: tuple[str, ...]
    when: Expr | None
    unless: Expr | None
    because: str | None
    line: int
    column: int
    label: str | None = None
    """The rule's name (``name: limit ...``): its identity for limit and duplicate state."""


@dataclass(frozen=True, slots=True)
class RequireRule:
    """``require [ACTIONS] EXPR [because "reason"]`` (actions default to publish)."""

    actions: tuple[str, ...]
    expr: Expr
    because: str | None
    line: int
    column: int
    label: str | None = None
    """The rule's name (``name: limit ...``): its identity for limit and duplicate state."""


@dataclass(frozen=True, slots=True)
class LimitRule:
    """``limit ACTIONS N per UNIT [burst N] [by EXPR] [when EXPR]``"""

    actions: tuple[str, ...]
    count: float
    unit: str
    burst: float | None
    by: Expr | None
    when: Expr | None
    line: int
    column: int
    label: str | None = None
    """The rule's name (``name: limit ...``): its identity for limit and duplicate state."""


@dataclass(frozen=True, slots=True)
class RouteRule:
    """``route copy|redirect to "subject" [when EXPR]`` (publish only)."""

    mode: str
    target: str
    when: Expr | None
    line: int
    column: int
    target_column: int = 0
    label: str | None = None
    """The rule's name (``name: limit ...``): its identity for limit and duplicate state."""


@dataclass(frozen=True, slots=True)
class DedupRuleNode:
    """``reject duplicates [of EXPR] within DURATION [when EXPR]`` (publish only)."""

    key: Expr | None
    window: Duration
    when: Expr | None
    line: int
    column: int
    label: str | None = None
    """The rule's name (``name: limit ...``): its identity for limit and duplicate state."""


@dataclass(frozen=True, slots=True)
class TagRule:
    """``tag "name" = EXPR [when EXPR]`` (publish only): adds a CloudEvents extension."""

    name: str
    value: Expr
    when: Expr | None
    line: int
    column: int
    label: str | None = None
    """The rule's name (``name: limit ...``): its identity for limit and duplicate state."""


Rule = AllowRule | DenyRule | RequireRule | LimitRule | RouteRule | DedupRuleNode | TagRule


@dataclass(frozen=True, slots=True)
class Policy:
    """``policy NAME on "pattern", ... { rules }``"""

    name: str
    patterns: tuple[str, ...]
    rules: tuple[Rule, ...]
    line: int
    column: int
    file: str = ""
    pattern_columns: tuple[tuple[int, int], ...] = field(default=(), compare=False)


def rule_actions(rule: Rule) -> tuple[str, ...]:
    """The actions a rule applies to (route, dedup and tag apply to publish)."""
    if isinstance(rule, AllowRule | DenyRule | RequireRule | LimitRule):
        return rule.actions
    return ("publish",)


def rule_kind(rule: Rule) -> str:
    """The keyword that starts a rule: allow, deny, require, limit, route, dedup, tag."""
    return _KINDS[type(rule)]


_KINDS: dict[type, str] = {
    AllowRule: "allow",
    DenyRule: "deny",
    RequireRule: "require",
    LimitRule: "limit",
    RouteRule: "route",
    DedupRuleNode: "dedup",
    TagRule: "tag",
}
