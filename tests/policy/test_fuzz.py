"""Hypothesis fuzzing of parser + checker + compiler (the long run: fuzz_policy.py)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.policy.fuzz_policy import GENERATORS, VOCAB, check_one

_FAST = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(st.lists(st.sampled_from(VOCAB), max_size=40))
def test_token_soup(tokens: list[str]) -> None:
    check_one(" ".join(tokens))


@_FAST
@given(st.text(max_size=120))
def test_random_text(text: str) -> None:
    check_one(text)


# 300 here (about 6 s); the long run is `python -m tests.policy.fuzz_policy`.
@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(GENERATORS))
def test_generated_policies(seed: int, gen: object) -> None:
    check_one(gen(random.Random(seed)))  # type: ignore[operator]


def test_deep_nesting_never_recurses() -> None:
    for depth in (100, 5000):
        for opener, closer in (("(", ")"), ("not ", ""), ("[", "]")):
            text = (
                'policy p on "x" {\n  allow publish when '
                + opener * depth
                + "true"
                + closer * depth
                + "\n}"
            )
            assert check_one(text) in ("ok", "error")
