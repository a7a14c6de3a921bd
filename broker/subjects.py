"""Subjects and subject patterns: validation and matching (pure, no I/O).

A subject is dot-separated tokens, ``billing.invoices.eu``. A pattern may use ``*`` for
exactly one token and ``>`` as its last token for one or more trailing tokens, as in NATS.

Limits: at most 256 characters and 16 tokens; tokens are non-empty and hold no
whitespace, no ``.``, and (in subjects) no ``*`` or ``>``. Subjects that start with ``$``
belong to the broker (``$dlq.…``, ``$inbox.…``, ``$sys.…``); clients may publish only to
``$inbox.`` subjects (replies).
"""

from __future__ import annotations

from collections.abc import Callable

from broker.errors import InvalidSubject

__all__ = [
    "MAX_SUBJECT_LENGTH",
    "MAX_TOKENS",
    "compile_pattern",
    "is_literal",
    "matches",
    "validate_pattern",
    "validate_subject",
]

MAX_SUBJECT_LENGTH = 256
MAX_TOKENS = 16
_BAD_CHARS = frozenset(" \t\r\n\x00\x0b\x0c")


def _check_common(text: str) -> list[str]:
    if not text:
        raise InvalidSubject(text, "it is empty")
    if len(text) > MAX_SUBJECT_LENGTH:
        raise InvalidSubject(
            text, f"it has {len(text)} characters, more than the limit of {MAX_SUBJECT_LENGTH}"
        )
    if not _BAD_CHARS.isdisjoint(text):
        raise InvalidSubject(text, "it contains whitespace or a control character")
    tokens = text.split(".")
    if len(tokens) > MAX_TOKENS:
        raise InvalidSubject(
            text, f"it has {len(tokens)} tokens, more than the limit of {MAX_TOKENS}"
        )
    for i, tok in enumerate(tokens):
        if not tok:
            raise InvalidSubject(text, f"token {i + 1} is empty")
    return tokens


def validate_subject(subject: str, *, allow_system: bool = False) -> list[str]:
    """Checks a concrete subject and returns its tokens; raises :class:`InvalidSubject`.

    >>> validate_subject("billing.eu")
    ['billing', 'eu']
    """
    tokens = _check_common(subject)
    for tok in tokens:
        if "*" in tok or ">" in tok:
            raise InvalidSubject(
                subject, "wildcards '*' and '>' are only allowed in subscription patterns"
            )
    if subject[0] == "$" and not allow_system and not subject.startswith("$inbox."):
        raise InvalidSubject(
            subject,
            "subjects starting with '$' belong to the broker",
            hint="publish to a subject that does not start with '$'",
        )
    return tokens


def validate_pattern(pattern: str) -> list[str]:
    """Checks a subscription pattern and returns its tokens; raises :class:`InvalidSubject`."""
    tokens = _check_common(pattern)
    last = len(tokens) - 1
    for i, tok in enumerate(tokens):
        if tok == ">":
            if i != last:
                raise InvalidSubject(pattern, "'>' may only be the last token")
        elif tok != "*" and ("*" in tok or ">" in tok):
            raise InvalidSubject(pattern, f"token {tok!r} mixes a wildcard with other characters")
    return tokens


def is_literal(pattern: str) -> bool:
    """True when ``pattern`` has no wildcard token."""
    return not any(t in ("*", ">") for t in pattern.split("."))


def matches(pattern: str, subject: str) -> bool:
    """True when ``subject`` matches ``pattern``.

    >>> matches("billing.*.eu", "billing.invoices.eu"), matches("billing.>", "billing")
    (True, False)
    """
    return compile_pattern(pattern)(subject)


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A fast predicate for one pattern (used where a trie is overkill: history queries)."""
    ptoks = pattern.split(".")
    if ">" not in ptoks and "*" not in ptoks:
        return pattern.__eq__
    if ptoks[-1] == ">" and "*" not in ptoks:
        prefix = pattern[:-1]  # "a.b.>" -> "a.b."
        return lambda s: s.startswith(prefix) and len(s) > len(prefix)
    tail = ptoks[-1] == ">"
    fixed = ptoks[:-1] if tail else ptoks
    n = len(fixed)

    def pred(subject: str) -> bool:
        stoks = subject.split(".")
        if tail:
            if len(stoks) <= n:
                return False
        elif len(stoks) != n:
            return False
        return all(p in ("*", s) for p, s in zip(fixed, stoks, strict=False))

    return pred
