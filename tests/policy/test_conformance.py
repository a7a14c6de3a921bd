"""Conformance: policy text + request -> expected decision, kept as data in conformance/."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lockgate.policy import PolicySet
from tests.policy.policy_helpers import compile_policies, make_request

_HERE = Path(__file__).parent / "conformance"
_GROUPS: list[dict[str, Any]] = []
for _f in sorted(_HERE.glob("*.json")):
    _GROUPS.extend(json.loads(_f.read_text("utf-8")))
_SETS: dict[str, PolicySet] = {}


def _cases() -> list[Any]:
    out = []
    for g in _GROUPS:
        for c in g["cases"]:
            out.append(pytest.param(g, c, id=f"{g['name']}/{c['name']}"))
    return out


def _set(group: dict[str, Any]) -> PolicySet:
    ps = _SETS.get(group["name"])
    if ps is None:
        sources = group.get("policies") or {"t.policy": group["policy"]}
        ps = _SETS[group["name"]] = compile_policies(sources)
    return ps


def test_enough_cases() -> None:
    assert sum(len(g["cases"]) for g in _GROUPS) >= 150


@pytest.mark.parametrize(("group", "case"), _cases())
def test_conformance(group: dict[str, Any], case: dict[str, Any]) -> None:
    ps = _set(group)
    want = case["want"]
    d = ps.decide(make_request(case.get("req", {})))
    assert d.allowed is want["allowed"], d
    if "effect" in want:
        assert d.effect == want["effect"], d
    if "rule" in want:
        assert d.rule == want["rule"], d
    if "reason" in want:
        assert d.reason == want["reason"], d
    if "reason_contains" in want:
        assert want["reason_contains"] in d.reason, d
    if "limits" in want:
        got = [[x.key, x.rate_per_second, x.burst] for x in d.limits]
        assert got == pytest.approx(want["limits"]) if not got else _eq_limits(got, want["limits"])
    if "routes" in want:
        assert [[r.subject, r.mode] for r in d.routes] == want["routes"]
    if "tags" in want:
        assert [[t.name, t.value] for t in d.tags] == want["tags"]
    if "dedup" in want:
        assert [[x.key, x.window_seconds] for x in d.dedup] == want["dedup"]
    # explain() walks the rules one by one and must reach the same decision
    e = ps.explain(make_request(case.get("req", {})))
    assert e.trace
    assert replace(e, trace=()) == d


def _eq_limits(got: list[list[Any]], want: list[list[Any]]) -> bool:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[0] == w[0]
        assert g[1] == pytest.approx(w[1])
        assert g[2] == pytest.approx(w[2])
    return True
