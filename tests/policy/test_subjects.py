"""Subject patterns: matching, coverage, overlap, and the trie index."""

from __future__ import annotations

import random

import pytest

from lockgate.policy.subjects import (
    PatternTrie,
    compile_pattern,
    covers,
    match,
    overlaps,
    pattern_problem,
    publish_problem,
    subject_problem,
    subscribe_problem,
)

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
    (">", "$dlq.orders", False),
    ("*.>", "$dlq.orders", False),
    ("*.orders", "$dlq.orders", False),
    ("$dlq.>", "$dlq.orders", True),
    ("$dlq.*", "$dlq.orders", True),
    ("$dlq.orders", "$dlq.orders", True),
    ("a.>", "a.$x", True),
    ("a.*", "a.$x", True),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.b.d", False),
]


@pytest.mark.parametrize(("pattern", "subject", "want"), MATCH)
def test_match(pattern: str, subject: str, want: bool) -> None:
    assert match(pattern, subject) is want
    assert compile_pattern(pattern)(subject) is want
    assert (0 in PatternTrie([(pattern, 0)]).lookup(subject)) is want
    assert covers(pattern, subject) is want
    assert overlaps(pattern, subject) is want


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
        (">", "$dlq.>", False),
        ("*.x", "$sys.x", False),
        ("$dlq.>", "$dlq.*", True),
    ],
)
def test_covers(broad: str, narrow: str, want: bool) -> None:
    assert covers(broad, narrow) is want


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ("a.*", "*.b", True),
        ("a.b", "a.c", False),
        ("a.>", "a.b.c", True),
        ("a.*", "a.b.c", False),
        (">", "$dlq.>", False),
        ("*.x", "$sys.*", False),
        ("$dlq.>", "$dlq.x", True),
        (">", "*.x", True),
    ],
)
def test_overlaps(a: str, b: str, want: bool) -> None:
    assert overlaps(a, b) is want
    assert overlaps(b, a) is want


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("a..b", "token 2 is empty"),
        ("a.>.b", "'>' may only be the last token"),
        ("a.b*", "token 'b*' mixes a wildcard with other characters"),
        ("a b", "it contains U+0020, a whitespace, control or invisible character"),
        ("a\u00a0b", "it contains U+00A0, a whitespace, control or invisible character"),
        ("a\x01b", "it contains U+0001, a whitespace, control or invisible character"),
        ("a.*.>", None),
        ("$dlq.>", None),
        ("a.ü.é", None),
    ],
)
def test_pattern_problem(pattern: str, problem: str | None) -> None:
    assert pattern_problem(pattern) == problem


def test_trie_agrees_with_match() -> None:
    rng = random.Random(5)
    tokens = ["a", "b", "$c", "*", ">"]
    patterns = []
    for _ in range(300):
        toks = [rng.choice(tokens[:4]) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            toks.append(">")
        patterns.append(".".join(toks))
    trie = PatternTrie((p, i) for i, p in enumerate(patterns))
    for _ in range(500):
        subject = ".".join(rng.choice(["a", "b", "$c"]) for _ in range(rng.randint(1, 5)))
        want = tuple(i for i, p in enumerate(patterns) if match(p, subject))
        assert trie.lookup(subject) == want
        assert want == tuple(i for i, p in enumerate(patterns) if compile_pattern(p)(subject))


def test_trie_remove() -> None:
    trie: PatternTrie[str] = PatternTrie([("a.>", "a.>"), ("a.*", "a.*")])
    trie.remove("a.>", "a.>")
    trie.remove("never.added", "never.added")
    assert trie.lookup("a.b") == ("a.*",)


@pytest.mark.parametrize(
    ("subject", "problem", "publish"),
    [
        ("a.b", None, None),
        ("a.*", "wildcards '*' and '>' are only allowed in subscription patterns", ...),
        ("$sys.x", None, "subjects starting with '$' belong to the broker"),
        ("$inbox.x", None, None),
    ],
)
def test_subject_and_publish_problem(subject: str, problem: str | None, publish: object) -> None:
    assert subject_problem(subject) == problem
    assert publish_problem(subject) == (problem if publish is ... else publish)


@pytest.mark.parametrize(
    ("pattern", "allowed"),
    [("$dlq.>", True), ("$inbox.x", True), ("$sys.>", False), ("$>", False), (">", True)],
)
def test_subscribe_problem(pattern: str, allowed: bool) -> None:
    assert (subscribe_problem(pattern) is None) is allowed


# Every character a subject may not hold, by kind: ASCII whitespace and controls, ANSI escapes,
# DEL, C1 controls (NEL), Unicode separators (NBSP, U+2028/9, ideographic space), format
# characters (zero-width space and joiner, BOM, bidi overrides and isolates, soft hyphen),
# a lone surrogate, private use and an unassigned code point.
_KIND = "a whitespace, control or invisible character"
BAD_CHARACTERS = [
    *"\t\n\v\f\r \x00\x1b\x7f\x85\x9f",
    *"\u00a0\u1680\u2000\u2028\u2029\u202f\u3000",
    *"\u00ad\u200b\u200d\u200e\u202e\u2066\ufeff",
    "\ud800",
    "\ue000",
    "\U000f0000",
    "\U000e0001",
    "\u0378",
]


@pytest.mark.parametrize("char", BAD_CHARACTERS, ids=[f"U+{ord(c):04X}" for c in BAD_CHARACTERS])
def test_invisible_and_control_characters_are_refused(char: str) -> None:
    for text in (f"a.b{char}c", f"{char}a", f"a.{char}", f"a.*.{char}"):
        assert pattern_problem(text) == f"it contains U+{ord(char):04X}, {_KIND}"
        assert subject_problem(text) == publish_problem(text) == pattern_problem(text)


@pytest.mark.parametrize("subject", ["a.ü.é", "日本.注文", "orders.€", "emoji.🎉", "a-b_c:d"])
def test_printable_unicode_is_allowed(subject: str) -> None:
    assert subject_problem(subject) is None
