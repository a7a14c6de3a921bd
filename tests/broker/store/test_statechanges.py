"""The write-behind merge rule both stores use (broker/store/statechanges.py)."""

from __future__ import annotations

import asyncio

from lockgate.broker.store import LogPosition
from lockgate.broker.store.statechanges import ChangeQueue, Changes, StateChanges


def test_a_delivery_acked_before_it_was_written_leaves_nothing_to_write() -> None:
    ch = StateChanges()
    ch.record(delivered=[41, 42])
    ch.record(drop=[41])
    assert ch.put == {42: 1} and ch.fresh == {42} and not ch.drop


def test_an_ack_of_a_written_row_deletes_it_and_a_redelivery_restores_it() -> None:
    ch = StateChanges()
    ch.record(drop=[7])  # written by an earlier transaction
    assert ch.drop == {7} and not ch.put
    ch.record(put={7: 3})  # redriven before the delete was written
    assert ch.put == {7: 3} and not ch.drop


def test_a_redelivery_sets_the_attempt_and_the_position_moves() -> None:
    ch = StateChanges()
    ch.record(delivered=[5], position=LogPosition(3, 5), delivered_id=5)
    ch.record(put={5: 2}, position=LogPosition(4, 0), delivered_id=9)
    assert ch.put == {5: 2} and ch.position == (4, 0, 9)


async def test_the_queue_schedules_one_write_and_hands_it_the_changes_at_its_start() -> None:
    q = ChangeQueue()
    scheduled: list[list[Changes]] = []
    loop = asyncio.get_running_loop()

    def schedule(taken: list[Changes]) -> asyncio.Future[object]:
        scheduled.append(taken)
        return loop.create_future()

    first = q.record("acme", "a", schedule, delivered=[1])
    assert q.record("acme", "b", schedule, delivered=[2]) is first  # one write for both
    q.forget("acme", "b")  # rewritten meanwhile: its changes go
    q.before_commit()  # the write's transaction starts
    assert len(scheduled) == 1 and list(scheduled[0][0]) == [("acme", "a")]
    later = q.record("acme", "a", schedule, drop=[1])  # during the write: the next one
    assert later is not first and len(scheduled) == 2 and not scheduled[1]
    assert q.changes[("acme", "a")].drop == {1}
