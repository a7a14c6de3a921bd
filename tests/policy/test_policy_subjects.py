"""Subject patterns: matching, coverage, overlap, and the trie index."""

from __future__ import annotations

import random

import pytest

from policy.subjects import PatternTrie, covers, match, overlaps, pattern_problem

MATCH = [
    ("a.b", "a.b", True),
    ("a.b", "a.c", False),
    ("a.*", "a.b", True),
    ("a.*", "a.b.c", False),
    ("a.*", "a", False),
    ("a.>", "a.b", True),
    ("a.>", "a.b.c", True),
    ("a.>", "a", False),
    ("*.b", "a.b", True),
    (">", "a", True),
    (">", "$sys.x", False),
    ("*.x", "$sys.x", False),
    ("$sys.>", "$sys.x", True),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.b.d", False),
]


@pytest.mark.parametrize(("pattern", "subject", "want"), MATCH)
def test_match(pattern: str, subject: str, want: bool) -> None:
    assert match(pattern, subject) is want
    assert (0 in PatternTrie([(pattern, 0)]).lookup(subject)) is want


@pytest.mark.parametrize(
    ("broad", "narrow", "want"),
    [
        ("a.>", "a.b", True),
        ("a.>", "a.*.c", True),
        ("a.*", "a.b", True),
        ("a.*", "a.>", False),
        ("a.b", "a.*", False),
        (">", "x.y.z", True),
        ("a.*.c", "a.b.c", True),
    ],
)
def test_covers(broad: str, narrow: str, want: bool) -> None:
    assert covers(broad, narrow) is want


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [("a.*", "*.b", True), ("a.b", "a.c", False), ("a.>", "a.b.c", True), ("a.*", "a.b.c", False)],
)
def test_overlaps(a: str, b: str, want: bool) -> None:
    assert overlaps(a, b) is want
    assert overlaps(b, a) is want


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("a..b", "has an empty token"),
        ("a.>.b", "has '>' before its last token"),
        ("a.b*", "mixes a wildcard into the token 'b*'"),
        ("a b", "contains white space"),
        ("a.*.>", None),
    ],
)
def test_pattern_problem(pattern: str, problem: str | None) -> None:
    assert pattern_problem(pattern) == problem


def test_trie_agrees_with_match() -> None:
    rng = random.Random(5)
    tokens = ["a", "b", "c", "*", ">"]
    patterns = []
    for _ in range(300):
        toks = [rng.choice(tokens[:4]) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            toks.append(">")
        patterns.append(".".join(toks))
    trie = PatternTrie((p, i) for i, p in enumerate(patterns))
    for _ in range(500):
        subject = ".".join(rng.choice("abc") for _ in range(rng.randint(1, 5)))
        want = tuple(i for i, p in enumerate(patterns) if match(p, subject))
        assert trie.lookup(subject) == want
