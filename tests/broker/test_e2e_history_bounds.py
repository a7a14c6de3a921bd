"""History time bounds against a real broker: an end before the ids' epoch (2024-01-01) is an
end before every event, not "no end" (``history --until 2023-…`` once returned everything)."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import timestamp_pb2

from lockgate.broker.v1 import broker_pb2
from tests.broker.e2e_kit import Stubs, event, query_all, unique
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def _ts(when: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


async def test_until_before_2024_returns_nothing(stubs: Stubs) -> None:
    subject = unique("hist")
    await stubs.broker.PublishOne(
        broker_pb2.PublishOneRequest(subject=subject, event=event("x")), timeout=10
    )

    async def stored() -> bool:
        return len(await query_all(stubs.broker, subject)) == 1

    await eventually(stored)
    old = dt.datetime(2023, 6, 1, tzinfo=dt.UTC)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert await query_all(stubs.broker, subject, end_time=_ts(old)) == []
    assert len(await query_all(stubs.broker, subject, end_time=_ts(later))) == 1
    assert len(await query_all(stubs.broker, subject, start_time=_ts(old))) == 1
