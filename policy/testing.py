"""Policy test cases kept beside the policies (``*.tests.json`` / ``*.tests.toml``), and rule
coverage: which rules fired in at least one case.

A case: ``{"name", "action", "subject", "principal": {"org", "agent", "roles", "attrs"},
"event": {...}, "data": ..., "now": unix seconds, "expect": {"allowed", "rule"?, "effect"?}}``.
A JSON file holds a list of cases or ``{"cases": [...]}``; a TOML file holds ``[[case]]``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine import PolicySet
from .model import MISSING, Principal, Request

__all__ = ["CaseResult", "TestReport", "load_cases", "request_from", "run_cases"]

_FIRED = (": fired", ": applies")


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class TestReport:
    results: tuple[CaseResult, ...]
    fired: frozenset[str]
    rules: tuple[tuple[str, str], ...] = field(default=())  # (rule id, kind)

    @property
    def failed(self) -> int:
        return sum(not r.passed for r in self.results)


def request_from(case: Mapping[str, Any]) -> Request:
    """Build a :class:`Request` from a case's plain-data fields."""
    p = case.get("principal") or {}
    if not isinstance(p, Mapping):
        raise ValueError("principal must be an object")
    principal = Principal(
        str(p.get("org", "")),
        str(p.get("agent", "")),
        frozenset(str(r) for r in p.get("roles", [])),
        {str(k): str(v) for k, v in dict(p.get("attrs", {})).items()},
    )
    event = dict(case.get("event") or {})
    data = case["data"] if "data" in case else event.pop("data", MISSING)
    return Request(
        str(case.get("action", "publish")),
        str(case.get("subject", "")),
        principal,
        event,
        data,
        None,
        float(case["now"]) if "now" in case else None,
    )


def load_cases(path: Path) -> list[dict[str, Any]]:
    """Cases of one ``*.tests.json`` or ``*.tests.toml`` file."""
    text = path.read_text("utf-8")
    if path.name.endswith(".toml"):
        raw: Any = tomllib.loads(text).get("case", [])
    else:
        raw = json.loads(text)
        if isinstance(raw, dict):
            raw = raw.get("cases", [])
    if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
        raise ValueError(f"{path.name}: expected a list of cases")
    for n, c in enumerate(raw, 1):
        c.setdefault("name", f"{path.name}#{n}")
        expect = c.get("expect")
        if not isinstance(expect, dict) or not isinstance(expect.get("allowed"), bool):
            raise ValueError(f"{path.name}: case {c['name']!r} needs expect.allowed (true/false)")
    return raw


def run_cases(ps: PolicySet, cases: Sequence[Mapping[str, Any]]) -> TestReport:
    """Run ``cases`` against ``ps``; record which rules fired."""
    results: list[CaseResult] = []
    fired: set[str] = set()
    for case in cases:
        d = ps.explain(request_from(case))
        for line in d.trace:
            rid, _, rest = line.partition(" ")
            if any(f in rest.split("  |")[0] for f in _FIRED):
                fired.add(rid)
        expect = case.get("expect", {})
        wrong = [
            f"{k}: expected {expect[k]!r}, got {getattr(d, k)!r}"
            for k in ("allowed", "effect", "rule")
            if k in expect and getattr(d, k) != expect[k]
        ]
        detail = "; ".join(wrong) if wrong else d.reason
        results.append(CaseResult(str(case["name"]), not wrong, detail))
    rules = tuple((r.id, r.kind) for r in ps.rules)
    return TestReport(tuple(results), frozenset(fired), rules)
