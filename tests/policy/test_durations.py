"""The one duration and time syntax (policy.durations)."""

from __future__ import annotations

import pytest

from lockgate.policy.durations import (
    DurationError,
    TimeError,
    parse_duration,
    parse_time,
    parse_time_ms,
    rfc3339_seconds,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1w", 604800.0),
        ("1.5h", 5400.0),
        (" 2H ", 7200.0),
        ("90", 90.0),
        ("0.5", 0.5),
        (3, 3.0),
        (2.5, 2.5),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1h", "1y", "1h30m", "h", "1e3", True, -1, "1 h"])
def test_not_durations(text: object) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(text)  # type: ignore[arg-type]
    assert "is not a duration" in str(info.value)
    assert "250ms" in info.value.hint


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("-1h", NOW - 3600),
        ("-30m", NOW - 1800),
        ("-1w", NOW - 604800),
        ("-250ms", NOW - 0.25),
        ("now", NOW),
        ("2023-06-01T00:00:00Z", 1685577600.0),
        ("2023-06-01t00:00:00z", 1685577600.0),
        ("2023-06-01T02:00:00+02:00", 1685577600.0),
        ("2023-06-01T00:00:00", 1685577600.0),  # no zone: UTC
        ("2023-06-01", 1685577600.0),
        ("1685577600000", 1685577600.0),  # digits: unix milliseconds
    ],
)
def test_times(text: str, seconds: float) -> None:
    assert parse_time(text, now=NOW) == seconds
    assert parse_time_ms(text, now=NOW) == round(seconds * 1000)


@pytest.mark.parametrize("text", ["", "-", "-soon", "yesterday", "1h", "2023-13-01", "1h ago"])
def test_not_times(text: str) -> None:
    with pytest.raises(TimeError) as info:
        parse_time(text, now=NOW)
    assert "is not a time" in str(info.value)
    assert "-1h" in info.value.hint


def test_rfc3339_needs_a_zone() -> None:
    assert rfc3339_seconds("2024-01-31T09:30:00Z") == 1706693400.0
    with pytest.raises(TimeError, match="without a time zone"):
        rfc3339_seconds("2024-01-31T09:30:00")
    with pytest.raises(TimeError, match="not an RFC 3339 timestamp"):
        rfc3339_seconds("-1h")
