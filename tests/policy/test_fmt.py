"""fmt: canonical, idempotent, and parsing to the same policies; comments kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockgate.policy.fmt import shape
from tests.policy.policy_helpers import format_source, parse

_GROUPS = json.loads((Path(__file__).parent / "conformance" / "cases.json").read_text())
_SOURCES = [
    pytest.param(text, id=f"{g['name']}/{name}")
    for g in _GROUPS
    for name, text in (g.get("policies") or {"t.policy": g["policy"]}).items()
]


@pytest.mark.parametrize("text", _SOURCES)
def test_round_trip(text: str) -> None:
    once = format_source(text)
    assert format_source(once) == once
    assert shape(parse(once)) == shape(parse(text))


def test_canonical_layout() -> None:
    src = (
        '# head\npolicy  b   on "b.>","c" {   # scope\n'
        '  allow publish,subscribe when (a_x == 1) or ((event.type == "x"))\n'
        "  # about the deny\n"
        "  deny publish when not (event.data.n > 1 and event.data.m < 2)"
        ' because "no"\n'
        "  limit publish 5 per minutes by principal.agent\n"
        "}\n# tail\n"
    )
    src = src.replace("a_x == 1", "event.data.x == 1")
    assert format_source(src) == (
        "# head\n"
        'policy b on "b.>", "c" {  # scope\n'
        '  allow publish, subscribe when event.data.x == 1 or event.type == "x"\n'
        "  # about the deny\n"
        '  deny publish when not (event.data.n > 1 and event.data.m < 2) because "no"\n'
        "  limit publish 5 per minute by principal.agent\n"
        "}\n"
        "\n"
        "# tail\n"
    )


def test_precedence_parentheses_kept_where_needed() -> None:
    cond = '(event.type == "a" or event.type == "b") and true'
    src = f'policy p on "x" {{\n  allow publish when {cond}\n}}\n'
    assert format_source(src) == src
    src2 = 'policy p on "x" {\n  allow publish when event.data.a - (event.data.b - 1) > 0\n}\n'
    assert format_source(src2) == src2


def test_long_rule_wraps_one_clause_per_line() -> None:
    cond = " and ".join(f'event.data.f{i} == "{i}"' for i in range(6))
    out = format_source(f'policy p on "x" {{ deny publish when {cond} unless true because "r" }}')
    lines = out.splitlines()
    assert lines[1] == "  deny publish"
    assert lines[2].startswith("      when ")
    assert lines[3] == "      unless true"
    assert lines[4] == '      because "r"'
    assert format_source(out) == out


def test_strings_with_hash_are_not_comments() -> None:
    src = 'policy p on "x" {\n  allow publish when event.type == "a#b"  # real\n}\n'
    assert format_source(src) == src
