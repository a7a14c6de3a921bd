"""Helpers shared by the policy tests (imported as a top-level module)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lockgate.policy import MISSING, PolicySet, Principal, Request
from lockgate.policy import ast as A
from lockgate.policy.engine import compile_policies as _compile
from lockgate.policy.files import new_parser
from lockgate.policy.fmt import format_source as _format

#: One parser for the whole session, as a long-lived caller (the broker, the CLI) holds one.
PARSER = new_parser()


def compile_policies(sources: Mapping[str, str]) -> PolicySet:
    return _compile(sources, PARSER)


def parse(text: str, file: str = "<policy>") -> tuple[A.Policy, ...]:
    return PARSER.parse(text, file)


def format_source(text: str, file: str = "<policy>") -> str:
    return _format(text, file, PARSER)


def make_request(spec: Mapping[str, Any]) -> Request:
    """A request from a conformance-case dict (defaults: publish on t.x by acme/a1)."""
    p = spec.get("principal", {})
    principal = Principal(
        p.get("org", "acme"),
        p.get("agent", "a1"),
        frozenset(p.get("roles", [])),
        p.get("attrs", {}),
    )
    raw = spec.get("data_bytes")
    return Request(
        action=spec.get("action", "publish"),
        subject=spec.get("subject", "t.x"),
        principal=principal,
        event=spec.get("event"),
        data=spec.get("data", MISSING),
        data_bytes=raw.encode() if isinstance(raw, str) else None,
        now=spec.get("now"),
    )
