"""Subject patterns (NATS style) and the token trie that indexes policies by pattern.

A subject is dot-separated tokens. In a pattern ``*`` matches exactly one token and ``>``
matches one or more trailing tokens (only as the last token). A pattern whose first token is
a wildcard does not match a subject whose first token starts with ``$`` (the broker's own
subjects): name ``$sys.>`` explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["PatternTrie", "covers", "match", "overlaps", "pattern_problem", "subject_problem"]


def _token_problem(tok: str) -> str | None:
    if not tok:
        return "has an empty token"
    if any(c.isspace() for c in tok):
        return "contains white space"
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid subject pattern, or None when it is."""
    tokens = pattern.split(".")
    for i, tok in enumerate(tokens):
        if (p := _token_problem(tok)) is not None:
            return p
        if tok == ">" and i != len(tokens) - 1:
            return "has '>' before its last token"
        if ("*" in tok or ">" in tok) and tok not in ("*", ">"):
            return f"mixes a wildcard into the token {tok!r}"
    return None


def subject_problem(subject: str) -> str | None:
    """Why ``subject`` is not a valid concrete subject (no wildcards), or None."""
    for tok in subject.split("."):
        if (p := _token_problem(tok)) is not None:
            return p
        if tok in ("*", ">"):
            return "contains a wildcard"
    return None


def match(pattern: str, subject: str) -> bool:
    """True when ``subject`` matches ``pattern``."""
    return _match(pattern.split("."), subject.split("."))


def _match(p: list[str], s: list[str]) -> bool:
    if p and p[0] in ("*", ">") and s and s[0].startswith("$"):
        return False
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(s) == len(p)


def covers(broad: str, narrow: str) -> bool:
    """True when every subject matching ``narrow`` also matches ``broad``."""
    b, n = broad.split("."), narrow.split(".")
    for i, tok in enumerate(b):
        if tok == ">":
            return len(n) > i and not (i == 0 and n[0].startswith("$"))
        if i >= len(n):
            return False
        if tok == "*":
            if n[i] == ">":
                return False
            continue
        if tok != n[i]:
            return False
    return len(n) == len(b)


def overlaps(a: str, b: str) -> bool:
    """True when some subject matches both patterns."""
    x, y = a.split("."), b.split(".")
    for i in range(max(len(x), len(y))):
        if i >= len(x) or i >= len(y):
            return False
        s, t = x[i], y[i]
        if s == ">" or t == ">":
            return True
        if s != t and s != "*" and t != "*":
            return False
    return len(x) == len(y)


class _Node:
    __slots__ = ("children", "ends", "tails")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.ends: list[int] = []  # values of patterns ending exactly here
        self.tails: list[int] = []  # values of patterns ending with ">" here


class PatternTrie:
    """Maps subject patterns to integer values; ``lookup`` walks only matching branches.

    >>> t = PatternTrie([("billing.>", 0), ("billing.*", 1), ("ops.x", 2)])
    >>> t.lookup("billing.eu")
    (0, 1)
    """

    def __init__(self, items: Iterable[tuple[str, int]] = ()) -> None:
        self._root = _Node()
        for pattern, value in items:
            self.add(pattern, value)

    def add(self, pattern: str, value: int) -> None:
        node = self._root
        tokens = pattern.split(".")
        for tok in tokens[:-1]:
            node = node.children.setdefault(tok, _Node())
        last = tokens[-1]
        if last == ">":
            node.tails.append(value)
        else:
            node.children.setdefault(last, _Node()).ends.append(value)

    def lookup(self, subject: str) -> tuple[int, ...]:
        """The sorted, distinct values of every pattern matching ``subject``."""
        tokens = subject.split(".")
        found: set[int] = set()
        n = len(tokens)
        dollar = tokens[0].startswith("$")
        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            if i == n:
                found.update(node.ends)
                continue
            if node.tails and not (i == 0 and dollar):
                found.update(node.tails)
            child = node.children.get(tokens[i])
            if child is not None:
                stack.append((child, i + 1))
            if not (i == 0 and dollar):
                star = node.children.get("*")
                if star is not None:
                    stack.append((star, i + 1))
        return tuple(sorted(found))
