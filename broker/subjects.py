"""The broker's side of :mod:`policy.subjects`: the one place where a subject problem becomes an
:class:`~broker.errors.InvalidSubject` (INVALID_SUBJECT) or a ``PermissionDenied``.

The rules themselves (validity, the ``$`` rule, matching, the trie) live in
:mod:`policy.subjects`; matching is re-exported here so that broker modules import one name.
"""

from __future__ import annotations

from lockgate.broker.errors import InvalidSubject, PermissionDenied
from lockgate.policy.subjects import (
    MAX_SUBJECT_LENGTH,
    MAX_TOKENS,
    PatternTrie,
    compile_pattern,
    is_literal,
    match,
    pattern_problem,
    publish_problem,
    subject_problem,
    subscribe_problem,
)

__all__ = [
    "MAX_SUBJECT_LENGTH",
    "MAX_TOKENS",
    "PatternTrie",
    "check_subscribe_pattern",
    "compile_pattern",
    "is_literal",
    "matches",
    "validate_pattern",
    "validate_subject",
]

matches = match

_SYSTEM_HINT = "publish to a subject that does not start with '$'"


def validate_subject(subject: str, *, allow_system: bool = False) -> list[str]:
    """Checks a concrete subject a client publishes to (``allow_system``: one the broker
    itself writes) and returns its tokens; raises :class:`InvalidSubject`.

    >>> validate_subject("billing.eu")
    ['billing', 'eu']
    """
    problem = subject_problem(subject) if allow_system else publish_problem(subject)
    if problem is not None:
        hint = _SYSTEM_HINT if subject_problem(subject) is None else ""
        raise InvalidSubject(subject, problem, hint=hint)
    return subject.split(".")


def validate_pattern(pattern: str) -> list[str]:
    """Checks a subscription pattern and returns its tokens; raises :class:`InvalidSubject`."""
    problem = pattern_problem(pattern)
    if problem is not None:
        raise InvalidSubject(pattern, problem)
    return pattern.split(".")


def check_subscribe_pattern(pattern: str) -> None:
    """A pattern a client may subscribe to: valid, and of the ``$`` subjects only ``$dlq.…``
    and ``$inbox.…``; raises :class:`InvalidSubject` or :class:`PermissionDenied`."""
    validate_pattern(pattern)
    problem = subscribe_problem(pattern)
    if problem is not None:
        raise PermissionDenied(problem, reason="PERMISSION_DENIED")
