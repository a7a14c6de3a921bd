"""Run-time helpers called by the generated policy code (and by explain).

Missing values are ``None``. Helpers raise ``TypeError`` with a plain message on values of the
wrong type; the generated code turns that into a fail-closed decision.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import re2

from .durations import rfc3339_seconds
from .model import MISSING, Decision, DedupRule, Limit, Request, Route, Tag


def _load(req: Request) -> object:
    if req.data is not MISSING:
        return req.data
    raw = req.data_bytes
    data: object = None
    if raw is not None:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
    req.data = data
    return data


def _dig(data: object, req: Request, keys: tuple[str | int, ...]) -> object:
    if data is MISSING:
        data = _load(req)
    for k in keys:
        if isinstance(k, int):
            if not isinstance(data, list | tuple) or not -1 < k < len(data):
                return None
            data = data[k]
        elif isinstance(data, Mapping):
            data = data.get(k)
        else:
            return None
    return data


def _ts(v: object) -> float | None:
    if v is None:
        return None
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        return rfc3339_seconds(v)
    raise TypeError(f"event.time must be an RFC 3339 timestamp, found {type(v).__name__}")


def _size(v: object) -> int | None:
    return None if v is None else len(v)  # type: ignore[arg-type]


def _add(a: object, b: object) -> object:
    return None if a is None or b is None else a + b  # type: ignore[operator]


def _sub(a: object, b: object) -> object:
    return None if a is None or b is None else a - b  # type: ignore[operator]


def _tri(t: bool, f: bool) -> bool | None:
    return True if t else (False if f else None)


def _aslist(v: object) -> frozenset[object]:
    if isinstance(v, list | tuple | set | frozenset):
        return frozenset(v)
    raise TypeError(f"expected a list, found {type(v).__name__}")


def _list_eq(a: object, b: object) -> bool:
    """Lists compare in order; a set (principal.roles) compares as a set."""
    if isinstance(a, set | frozenset) or isinstance(b, set | frozenset):
        return _aslist(a) == _aslist(b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return a == b


def _has_any(a: object, b: object) -> bool:
    return not _aslist(a).isdisjoint(_aslist(b))


def _has_all(a: object, b: object) -> bool:
    return _aslist(b).issubset(_aslist(a))


def _text(v: object, op: str) -> str:
    if isinstance(v, str):
        return v
    raise TypeError(f"{op} needs text, found {type(v).__name__}")


def _startswith(a: object, b: object) -> bool:
    return _text(a, "starts_with").startswith(_text(b, "starts_with"))


def _endswith(a: object, b: object) -> bool:
    return _text(a, "ends_with").endswith(_text(b, "ends_with"))


def text_of(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, str):
        return v
    if isinstance(v, set | frozenset):
        v = sorted(v, key=str)
    try:
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(v)


def fail(rule: str, exc: BaseException) -> Decision:
    return Decision(
        False,
        "deny",
        f"rule {rule} failed to evaluate ({type(exc).__name__}: {exc}), so it denies",
        rule,
    )


class CachedSearch:
    """``matches``: an RE2 search with a bounded memo of recent inputs.

    RE2 is linear-time but its Python wrapper costs microseconds a call, while the values a
    rule matches (types, sources, subjects) repeat, so a dict hit is the common case. The
    memo holds short inputs only and is dropped whole when full; races between threads can
    at worst compute a result twice.
    """

    __slots__ = ("_memo", "_regex")

    def __init__(self, regex: re2._Regexp[str]) -> None:
        self._regex = regex
        self._memo: dict[str, bool] = {}

    def __call__(self, text: str) -> bool:
        hit = self._memo.get(text)
        if hit is None:
            hit = self._regex.search(text) is not None
            if len(text) <= 256:
                if len(self._memo) >= 4096:
                    self._memo.clear()
                self._memo[text] = hit
        return hit


def with_effects(
    ok: Decision, lim: list[Limit], rt: list[Route], tg: list[Tag], dd: list[DedupRule]
) -> Decision:
    return Decision(
        True, ok.effect, ok.reason, ok.rule, tuple(lim), tuple(rt), tuple(tg), tuple(dd)
    )


def no_rule(req: Request) -> Decision:
    return Decision(False, "default", f"no rule allows {req.action} on {req.subject}", "")


HELPERS: dict[str, object] = {
    "_load": _load,
    "_dig": _dig,
    "_ts": _ts,
    "_size": _size,
    "_add": _add,
    "_sub": _sub,
    "_tri": _tri,
    "_startswith": _startswith,
    "_endswith": _endswith,
    "_has_any": _has_any,
    "_list_eq": _list_eq,
    "_has_all": _has_all,
    "_s": text_of,
    "_fail": fail,
    "_with": with_effects,
    "_no_rule": no_rule,
    "_MISSING": MISSING,
    "_EMPTY": {},
    "_time": time.time,
    "Limit": Limit,
    "Route": Route,
    "Tag": Tag,
    "DedupRule": DedupRule,
}
