"""Publishing in slices (gateways/_slices.py): cuts by count and by serialized size, and the
per-event outcomes put back in the batch's order."""

from __future__ import annotations

import pytest

from lockgate.broker.api import CloudEvent, PublishResult
from lockgate.broker.errors import BrokerError, Unauthenticated
from lockgate.gateways._slices import by_bytes, by_count, publish_in_slices
from tests.gateways.gw_kit import event


def test_by_count() -> None:
    assert [list(r) for r in by_count(5, 2)] == [[0, 1], [2, 3], [4]]
    assert by_count(0, 2) == []


def test_by_bytes_keeps_each_slice_under_the_budget_and_refuses_the_giants() -> None:
    events = [event(i, data="x" * (5000 if i == 3 else 100)) for i in range(10)]
    budget = 600
    slices, too_large = by_bytes(events, budget)
    assert [i for i, _ in too_large] == [3]
    assert too_large[0][1].reason == "EVENT_TOO_LARGE"
    assert sorted(i for s in slices for i in s) == [i for i in range(10) if i != 3]
    for s in slices:
        assert sum(events[i].ByteSize() + 6 for i in s) <= budget


class Broker:
    """Stores what it is given (ids from 1), refusing events whose data says so."""

    def __init__(self, fail_call: int = -1) -> None:
        self.calls = 0
        self.next_id = 1
        self.fail_call = fail_call

    async def publish(self, events: list[CloudEvent]) -> PublishResult:
        self.calls += 1
        if self.calls - 1 == self.fail_call:
            raise Unauthenticated("the API key was revoked")
        ids, errors = [], []
        for pos, ev in enumerate(events):
            if ev.text_data == "bad":
                ids.append(0)
                errors.append((pos, BrokerError("refused", reason="POLICY_DENIED")))
            else:
                ids.append(self.next_id)
                self.next_id += 1
        return PublishResult(ids, [], errors)


async def test_outcomes_come_back_in_the_batchs_order() -> None:
    events = [event(i, data="bad" if i in (1, 4) else "ok") for i in range(6)]
    broker = Broker()
    result = await publish_in_slices(broker.publish, events, by_count(6, 4))
    assert broker.calls == 2
    assert result.ids == [1, 0, 2, 3, 0, 4]
    assert [i for i, _ in result.errors] == [1, 4]


async def test_a_whole_call_error_raises_before_anything_is_stored() -> None:
    with pytest.raises(Unauthenticated):
        await publish_in_slices(
            Broker(fail_call=0).publish, [event(i) for i in range(4)], by_count(4, 2)
        )


async def test_a_whole_call_error_after_stored_slices_becomes_the_rest_of_the_errors() -> None:
    events = [event(i) for i in range(6)]
    result = await publish_in_slices(Broker(fail_call=1).publish, events, by_count(6, 2))
    assert result.ids == [1, 2, 0, 0, 0, 0]
    assert [i for i, _ in result.errors] == [2, 3, 4, 5]
    assert {e.reason for _, e in result.errors} == {"UNAUTHENTICATED"}
