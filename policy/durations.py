"""Durations and times: the one syntax for the CLI, HTTP, WebSocket, configuration and policies
(pure, standard library only).

Durations: a number and a unit, ``250ms``, ``30s``, ``10m``, ``2h``, ``7d``, ``1w``, or a bare
number of seconds (``1.5``). Times: relative to now (``-1h``, ``-30m``, ``-1w``: that long ago;
``now``), an RFC 3339 / ISO 8601 time (``2026-01-02T03:04:05Z``; UTC when it has no zone), a
date (``2026-01-02``, midnight UTC), or digits: unix milliseconds.

Errors are :class:`DurationError` / :class:`TimeError` (both ``ValueError``) with one sentence
and a hint; the broker turns them into its own errors at its edge.

>>> parse_duration("10m"), parse_duration("250ms"), parse_duration(5)
(600.0, 0.25, 5.0)
>>> parse_time("-1h", now=7200.0), parse_time("1970-01-01T00:00:10Z")
(3600.0, 10.0)
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

__all__ = [
    "DURATION_HINT",
    "RELATIVE_TIME",
    "TIME_HINT",
    "UNIT_SECONDS",
    "UNIT_WORD_SECONDS",
    "DurationError",
    "TimeError",
    "parse_duration",
    "parse_time",
    "parse_time_ms",
    "rfc3339_seconds",
]

#: Seconds per unit of a duration literal.
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
#: Seconds per unit word of the policy language (``10 minutes``, ``100 per second``).
UNIT_WORD_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}

DURATION_HINT = "write it as 250ms, 30s, 10m, 2h, 7d, 1w or a number of seconds"
TIME_HINT = "write -1h, -30m, -2d, -1w (ago), an RFC 3339 time like 2026-01-02T03:04:05Z or a date"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?")
#: A relative time (``-1h``), which a command line must read as a value, not an option.
RELATIVE_TIME = re.compile(r"^-\d+(?:\.\d+)?(?:ms|s|m|h|d|w)?$")


class DurationError(ValueError):
    """Text that is not a duration."""

    def __init__(self, text: object) -> None:
        super().__init__(f"{text!r} is not a duration")
        self.text = text
        self.hint = DURATION_HINT


class TimeError(ValueError):
    """Text that is not a time."""

    def __init__(self, text: object, problem: str = "is not a time") -> None:
        super().__init__(f"{text!r} {problem}")
        self.text = text
        self.hint = TIME_HINT


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration (see the module docstring); a number is seconds already."""
    if isinstance(text, bool):
        raise DurationError(text)
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise DurationError(text)
        return float(text)
    if not isinstance(text, str):
        raise DurationError(text)
    m = _DURATION.fullmatch(text.strip().lower())
    if m is None:
        raise DurationError(text)
    return float(m[1]) * UNIT_SECONDS[m[2] or "s"]


def rfc3339_seconds(text: str) -> float:
    """Unix seconds of an RFC 3339 timestamp, which must carry a time zone (``T``/``Z`` in
    either case; fractions beyond microseconds are dropped); raises :class:`TimeError`.

    >>> rfc3339_seconds("2024-01-31T09:30:00Z")
    1706693400.0
    """
    try:
        dt = datetime.fromisoformat(text.upper())
    except ValueError:
        raise TimeError(text, "is not an RFC 3339 timestamp") from None
    if dt.tzinfo is None:
        raise TimeError(text, "is a timestamp without a time zone")
    return dt.timestamp()


def parse_time(text: str, *, now: float | None = None) -> float:
    """Unix seconds of a time (see the module docstring); ``now`` defaults to the clock."""
    t = text.strip()
    if not t:
        raise TimeError(text)
    if t.lower() == "now":
        return time.time() if now is None else now
    if t[0] == "-":
        try:
            ago = parse_duration(t[1:])
        except DurationError:
            raise TimeError(text) from None
        return (time.time() if now is None else now) - ago
    if t.isdigit():
        # ASCII only ("²" is a digit to isdigit, not to int), and few enough for int.
        if not t.isascii() or len(t) > 20:
            raise TimeError(text[:100], "is not a time in epoch milliseconds")
        return int(t) / 1000
    try:
        dt = datetime.fromisoformat(t.upper())
    except ValueError:
        raise TimeError(text) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def parse_time_ms(text: str, *, now: float | None = None) -> int:
    """Unix milliseconds of a time, as :func:`parse_time` reads it."""
    return round(parse_time(text, now=now) * 1000)
