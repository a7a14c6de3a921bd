"""Helpers shared by the policy tests (imported as a top-level module)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policy import MISSING, Principal, Request


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
