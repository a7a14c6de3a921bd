"""Subjects and subject patterns: the one validity rule, the one ``$`` rule, matching, and the
token trie (pure, no I/O). The router, the store, the consumers and the policies all use it.

A subject is dot-separated tokens, ``billing.invoices.eu``: at most 256 characters and 16
tokens; tokens are non-empty and hold no ``.``, no space and no character that
:meth:`str.isprintable` refuses: no whitespace (NBSP, U+2028, NEL), control (Cc: ANSI escapes,
DEL), format (Cf: zero-width and bidi marks), surrogate, private-use or unassigned character.
A pattern may use ``*`` for exactly one token and ``>`` as its last token for one or more
trailing tokens, as in NATS; a concrete subject holds neither.

The ``$`` rule: subjects whose first token starts with ``$`` belong to the broker
(``$dlq.…``, ``$inbox.…``, ``$sys.…``). A pattern whose **first** token is a wildcard never
matches them (the MQTT rule), so ``>`` does not receive dead letters; name them explicitly
(``$dlq.>``, ``$dlq.orders``). Clients publish to ``$`` subjects only for replies
(``$inbox.…``) and subscribe only to ``$dlq.…``, ``$inbox.…`` and ``$conv.…`` (a
conversation's subjects, which the broker lets its participants alone read).

Problems are returned as sentences ("token 2 is empty"), never raised: the broker turns them
into its ``InvalidSubject`` error, the policy checker into a load error.

>>> subject_problem("billing..eu")
'token 2 is empty'
>>> match(">", "$dlq.orders"), match("$dlq.>", "$dlq.orders")
(False, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = [
    "MAX_SUBJECT_LENGTH",
    "MAX_TOKENS",
    "PatternTrie",
    "compile_pattern",
    "covers",
    "is_literal",
    "is_system",
    "match",
    "overlaps",
    "pattern_problem",
    "publish_problem",
    "subject_problem",
    "subscribe_problem",
]

MAX_SUBJECT_LENGTH = 256
MAX_TOKENS = 16
_WILD = ("*", ">")


def is_system(subject: str) -> bool:
    """True for the broker's own subjects (and patterns): the first token starts with ``$``."""
    return subject[:1] == "$"


def _bad_character(text: str) -> str | None:
    """The first character a subject may not hold, or None. ``isprintable()`` is False for
    exactly the Unicode categories Cc, Cf, Cs, Co, Cn, Zl, Zp and Zs but the ASCII space, so
    the common case costs one C call and one ``in``."""
    if text.isprintable() and " " not in text:
        return None
    return next(c for c in text if c == " " or not c.isprintable())


def _common_problem(text: str) -> str | None:
    if not text:
        return "it is empty"
    if len(text) > MAX_SUBJECT_LENGTH:
        return f"it has {len(text)} characters, more than the limit of {MAX_SUBJECT_LENGTH}"
    bad = _bad_character(text)
    if bad is not None:
        return f"it contains U+{ord(bad):04X}, a whitespace, control or invisible character"
    tokens = text.split(".")
    if len(tokens) > MAX_TOKENS:
        return f"it has {len(tokens)} tokens, more than the limit of {MAX_TOKENS}"
    for i, tok in enumerate(tokens):
        if not tok:
            return f"token {i + 1} is empty"
    return None


def subject_problem(subject: str) -> str | None:
    """Why ``subject`` is not a valid concrete subject, or None (``$`` subjects are valid here;
    whether a client may publish to one is :func:`publish_problem`)."""
    problem = _common_problem(subject)
    if problem is None and ("*" in subject or ">" in subject):
        return "wildcards '*' and '>' are only allowed in subscription patterns"
    return problem


def publish_problem(subject: str) -> str | None:
    """Why a client may not publish to ``subject``, or None: :func:`subject_problem`, and the
    ``$`` subjects belong to the broker except reply inboxes (``$inbox.…``)."""
    problem = subject_problem(subject)
    if problem is None and is_system(subject) and not subject.startswith("$inbox."):
        return "subjects starting with '$' belong to the broker"
    return problem


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid subject pattern, or None when it is.

    >>> pattern_problem("a.>.b")
    "'>' may only be the last token"
    """
    problem = _common_problem(pattern)
    if problem is not None:
        return problem
    tokens = pattern.split(".")
    last = len(tokens) - 1
    for i, tok in enumerate(tokens):
        if tok == ">":
            if i != last:
                return "'>' may only be the last token"
        elif tok != "*" and ("*" in tok or ">" in tok):
            return f"token {tok!r} mixes a wildcard with other characters"
    return None


def subscribe_problem(pattern: str) -> str | None:
    """Why a client may not subscribe to ``pattern`` (already valid), or None: of the broker's
    ``$`` subjects only dead letters, reply inboxes and conversations can be subscribed to."""
    if is_system(pattern) and not pattern.startswith(("$dlq.", "$inbox.", "$conv.")):
        return f"subject {pattern!r} belongs to the broker"
    return None


def is_literal(pattern: str) -> bool:
    """True when ``pattern`` has no wildcard token."""
    return not any(t in _WILD for t in pattern.split("."))


def match(pattern: str, subject: str) -> bool:
    """True when ``subject`` matches ``pattern``.

    >>> match("billing.*.eu", "billing.invoices.eu"), match("billing.>", "billing")
    (True, False)
    """
    return compile_pattern(pattern)(subject)


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A fast predicate for one pattern (where a trie is overkill: history queries, retention
    rules, one durable's filter)."""
    ptoks = pattern.split(".")
    if ">" not in ptoks and "*" not in ptoks:
        return pattern.__eq__
    if ptoks[-1] == ">" and "*" not in ptoks:
        if len(ptoks) == 1:  # ">": everything but the broker's own subjects
            return lambda s: s[:1] != "$"
        prefix = pattern[:-1]  # "a.b.>" -> "a.b."
        return lambda s: s.startswith(prefix) and len(s) > len(prefix)
    tail = ptoks[-1] == ">"
    fixed = ptoks[:-1] if tail else ptoks
    n = len(fixed)
    wild_first = ptoks[0] in _WILD

    def pred(subject: str) -> bool:
        if wild_first and subject[:1] == "$":
            return False
        stoks = subject.split(".")
        if tail:
            if len(stoks) <= n:
                return False
        elif len(stoks) != n:
            return False
        return all(p in ("*", s) for p, s in zip(fixed, stoks, strict=False))

    return pred


def covers(broad: str, narrow: str) -> bool:
    """True when every subject matching ``narrow`` also matches ``broad``."""
    b, n = broad.split("."), narrow.split(".")
    if b[0] in _WILD and is_system(n[0]):
        return False
    for i, tok in enumerate(b):
        if tok == ">":
            return len(n) > i
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
    if (x[0] in _WILD and is_system(y[0])) or (y[0] in _WILD and is_system(x[0])):
        return False
    for i in range(max(len(x), len(y))):
        if i >= len(x) or i >= len(y):
            return False
        s, t = x[i], y[i]
        if s == ">" or t == ">":
            return True
        if s != t and s != "*" and t != "*":
            return False
    return len(x) == len(y)


V = TypeVar("V", int, str)


class _Node(Generic[V]):
    __slots__ = ("children", "ends", "tails")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        self.ends: list[V] = []  # values of patterns ending exactly here
        self.tails: list[V] = []  # values of patterns ending with ">" here


class PatternTrie(Generic[V]):
    """Maps subject patterns to values; ``lookup`` walks only matching branches.

    >>> t = PatternTrie([("billing.>", 0), ("billing.*", 1), ("ops.x", 2), (">", 3)])
    >>> t.lookup("billing.eu"), t.lookup("$dlq.x")
    ((0, 1, 3), ())
    """

    def __init__(self, items: Iterable[tuple[str, V]] = ()) -> None:
        self._root: _Node[V] = _Node()
        for pattern, value in items:
            self.add(pattern, value)

    def _leaf(self, pattern: str) -> tuple[_Node[V], bool]:
        node = self._root
        tokens = pattern.split(".")
        for tok in tokens[:-1]:
            node = node.children.setdefault(tok, _Node())
        if tokens[-1] == ">":
            return node, True
        return node.children.setdefault(tokens[-1], _Node()), False

    def add(self, pattern: str, value: V) -> None:
        node, tail = self._leaf(pattern)
        (node.tails if tail else node.ends).append(value)

    def remove(self, pattern: str, value: V) -> None:
        """Forgets one ``(pattern, value)`` pair added before (empty nodes stay; they are few)."""
        node, tail = self._leaf(pattern)
        values = node.tails if tail else node.ends
        if value in values:
            values.remove(value)

    def lookup(self, subject: str) -> tuple[V, ...]:
        """The sorted, distinct values of every pattern matching ``subject``."""
        tokens = subject.split(".")
        found: set[V] = set()
        n = len(tokens)
        system = tokens[0][:1] == "$"
        stack: list[tuple[_Node[V], int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            if i == n:
                found.update(node.ends)
                continue
            wild_ok = i > 0 or not system  # the $ rule: no wildcard at the first token
            if node.tails and wild_ok:
                found.update(node.tails)
            child = node.children.get(tokens[i])
            if child is not None:
                stack.append((child, i + 1))
            if wild_ok:
                star = node.children.get("*")
                if star is not None:
                    stack.append((star, i + 1))
        return tuple(sorted(found))
