from __future__ import annotations

import pytest

from lockgate.broker.errors import InvalidSubject, PermissionDenied
from lockgate.broker.subjects import (
    MAX_SUBJECT_LENGTH,
    MAX_TOKENS,
    check_subscribe_pattern,
    compile_pattern,
    is_literal,
    matches,
    validate_pattern,
    validate_subject,
)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b.c", "a.b.c", True),
        ("a.b.c", "a.b", False),
        ("a.*.c", "a.x.c", True),
        ("a.*.c", "a.x.y.c", False),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c.d", True),
        ("a.>", "a", False),
        (">", "anything.at.all", True),
        ("*", "one", True),
        ("*", "one.two", False),
        ("*.>", "a.b", True),
        ("*.>", "a", False),
        ("a.*.>", "a.b.c", True),
        ("a.*.>", "a.b", False),
        ("ab.>", "a.b", False),
        ("a.b", "a.bc", False),
    ],
)
def test_matching(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected
    assert compile_pattern(pattern)(subject) is expected


@pytest.mark.parametrize(
    ("subject", "problem"),
    [
        ("", "empty"),
        ("a..b", "token 2 is empty"),
        (".a", "token 1 is empty"),
        ("a.", "token 2 is empty"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("a.*", "wildcards"),
        ("a.>", "wildcards"),
        ("x" * (MAX_SUBJECT_LENGTH + 1), "characters"),
        (".".join(["t"] * (MAX_TOKENS + 1)), "tokens"),
        ("$sys.x", "belong to the broker"),
    ],
)
def test_invalid_subjects(subject: str, problem: str) -> None:
    with pytest.raises(InvalidSubject) as info:
        validate_subject(subject)
    assert problem in str(info.value)
    assert info.value.reason == "INVALID_SUBJECT"


def test_inbox_and_system_subjects() -> None:
    assert validate_subject("$inbox.abc") == ["$inbox", "abc"]
    assert validate_subject("$dlq.d", allow_system=True) == ["$dlq", "d"]


@pytest.mark.parametrize("pattern", ["a.>.b", "a*.b", "a.b>", ""])
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(InvalidSubject):
        validate_pattern(pattern)


def test_literal() -> None:
    assert is_literal("a.b")
    assert not is_literal("a.*")
    assert not is_literal("a.>")


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [(">", "$dlq.x", False), ("*.x", "$dlq.x", False), ("$dlq.>", "$dlq.x", True)],
)
def test_wildcards_skip_system_subjects(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected


def test_subscribe_patterns() -> None:
    check_subscribe_pattern("$dlq.>")
    check_subscribe_pattern("$inbox.x")
    with pytest.raises(PermissionDenied, match="belongs to the broker"):
        check_subscribe_pattern("$sys.>")
    with pytest.raises(InvalidSubject):
        check_subscribe_pattern("a.>.b")
