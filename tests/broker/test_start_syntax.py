"""The one text syntax of a start position (broker.positions.parse_start), read by the CLI, HTTP
and WebSocket."""

from __future__ import annotations

import pytest

from lockgate.broker.errors import InvalidStart
from lockgate.broker.positions import StartSpec, parse_start
from lockgate.broker.v1 import broker_pb2

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("new", StartSpec(broker_pb2.START_POLICY_NEW)),
        ("", StartSpec(broker_pb2.START_POLICY_NEW)),
        ("ALL", StartSpec(broker_pb2.START_POLICY_ALL)),
        ("after:42", StartSpec(broker_pb2.START_POLICY_AFTER_ID, after_id=42)),
        ("id:42", StartSpec(broker_pb2.START_POLICY_AFTER_ID, after_id=42)),  # old CLI spelling
        ("since:-1h", StartSpec(broker_pb2.START_POLICY_SINCE_TIME, since_ms=1_799_996_400_000)),
        ("-1w", StartSpec(broker_pb2.START_POLICY_SINCE_TIME, since_ms=1_799_395_200_000)),
        (
            "2023-06-01T00:00:00Z",
            StartSpec(broker_pb2.START_POLICY_SINCE_TIME, since_ms=1_685_577_600_000),
        ),
        (
            "since:2023-06-01",
            StartSpec(broker_pb2.START_POLICY_SINCE_TIME, since_ms=1_685_577_600_000),
        ),
        (
            "1685577600000",
            StartSpec(broker_pb2.START_POLICY_SINCE_TIME, since_ms=1_685_577_600_000),
        ),
    ],
)
def test_starts(text: str, want: StartSpec) -> None:
    assert parse_start(text, now=NOW) == want


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("after:", "needs an event id"),
        ("after:x", "needs an event id"),
        ("after:0", "needs an event id"),
        ("since:soon", "is not a start position"),
        ("yesterday", "is not a start position"),
        ("1970-01-01T00:00:00Z", "lies before 1970"),
    ],
)
def test_bad_starts(text: str, problem: str) -> None:
    with pytest.raises(InvalidStart) as info:
        parse_start(text, now=NOW)
    assert problem in info.value.message
    assert "after:<id>" in info.value.hint
    assert info.value.reason == "INVALID_START"
