"""The values the broker hands to the engine and gets back: requests and decisions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

__all__ = [
    "DEDUP_BY_CONTENT",
    "MISSING",
    "Decision",
    "DedupRule",
    "Limit",
    "Principal",
    "Request",
    "Route",
    "Tag",
]


class _Missing:
    """The type of :data:`MISSING`: "the broker did not parse the data"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


#: ``Request.data`` default: the engine parses ``data_bytes`` lazily when a rule reads it.
MISSING: Final = _Missing()
#: ``DedupRule.key`` when duplicates are judged by content: the broker hashes the payload.
DEDUP_BY_CONTENT: Final = "@content"

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asks: an agent of an org, its roles and key attributes (``principal.attrs.x``)."""

    org: str
    agent: str
    roles: frozenset[str] = frozenset()
    attrs: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(slots=True)
class Request:
    """One action to decide.

    ``event`` holds the CloudEvents attributes as a flat dict (extensions by name). ``data`` is
    the parsed JSON data, or :data:`MISSING` when the engine should parse ``data_bytes`` itself
    (only if a rule reads ``event.data``; the result is stored back into ``data``).

    >>> Request("publish", "billing.eu", Principal("acme", "agent-7", frozenset({"billing"})))
    ... # doctest: +ELLIPSIS
    Request(action='publish', subject='billing.eu', ...)
    """

    action: str
    subject: str
    principal: Principal
    event: Mapping[str, object] | None = None
    data: object = MISSING
    data_bytes: bytes | None = None
    now: float | None = None


@dataclass(frozen=True, slots=True)
class Limit:
    """A token bucket to charge: ``key`` is already evaluated (``"identity|value"``, where the
    identity is the rule's label or its content, never its position); ``rule`` is ``file:line``."""

    key: str
    rate_per_second: float
    burst: float
    rule: str


@dataclass(frozen=True, slots=True)
class Route:
    """Send the event to ``subject`` too (``copy``) or instead (``redirect``)."""

    subject: str
    mode: str
    rule: str


@dataclass(frozen=True, slots=True)
class Tag:
    """Add the CloudEvents extension attribute ``name`` = ``value``."""

    name: str
    value: str
    rule: str


@dataclass(frozen=True, slots=True)
class DedupRule:
    """Reject the event if ``key`` was seen within the window (``@content``: hash the payload,
    and keep the hashes under ``identity``, the rule's stable identity)."""

    key: str
    window_seconds: float
    rule: str
    identity: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one request, naming the rule (``file:line``) that made it and why."""

    allowed: bool
    effect: str
    reason: str
    rule: str
    limits: tuple[Limit, ...] = ()
    routes: tuple[Route, ...] = ()
    tags: tuple[Tag, ...] = ()
    dedup: tuple[DedupRule, ...] = ()
    trace: tuple[str, ...] = ()
