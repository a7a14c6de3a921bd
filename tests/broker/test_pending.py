"""The pending table's states on their own: in flight, waiting, due; backoff; restore."""

from __future__ import annotations

from dataclasses import dataclass

from lockgate.broker.delivery.pending import PendingTable, backoff_factor


@dataclass
class Holder:
    in_flight: int = 0


def test_after_a_restart_everything_is_due_in_id_order() -> None:
    table = PendingTable({30: 2, 10: 1})
    assert table.next_due() is not None and list(table.due) == [30]
    assert len(table) == 2 and 10 in table


def test_first_delivery_ack_and_a_second_hand_out_refused() -> None:
    table, s = PendingTable({}), Holder()
    assert table.hand_out(1, b"f", s, deadline=5.0)
    s.in_flight += 1
    assert not table.hand_out(1, b"f", s, deadline=5.0)  # never twice as a first delivery
    (p,) = table.settle([1])
    assert p.attempt == 1 and s.in_flight == 0 and 1 not in table


def test_nack_with_and_without_delay_then_expire() -> None:
    table, s = PendingTable({}), Holder()
    for i in (1, 2):
        table.hand_out(i, b"f", s, deadline=100.0)
        s.in_flight += 1
    table.nack([1], 0.0, now=10.0)  # due at once
    table.nack([2], 5.0, now=10.0)  # waiting until 15
    assert s.in_flight == 0 and list(table.due) == [1]
    assert not table.expire(14.0)
    assert table.expire(15.0) and list(table.due) == [1, 2]


def test_an_unacked_delivery_expires_and_redelivers_with_backoff() -> None:
    table, s = PendingTable({}), Holder()
    table.hand_out(7, b"f", s, deadline=30.0)
    s.in_flight += 1
    assert table.expire(30.0) and s.in_flight == 0
    item = table.next_due()
    assert item is not None
    i, p = item
    assert i == 7
    table.redeliver(p, b"f", s, now=30.0, wait=30.0)
    assert (p.attempt, p.deadline, s.in_flight) == (2, 90.0, 1)  # twice the ack wait
    assert [backoff_factor(a) for a in range(1, 9)] == [1, 2, 4, 8, 16, 32, 32, 32]


def test_a_holder_that_goes_away() -> None:
    table, stream, poll = PendingTable({}), Holder(), Holder()
    table.hand_out(1, b"f", stream, deadline=50.0)
    table.hand_out(2, b"f", poll, deadline=50.0)
    table.release(stream, keep=False)  # a stream: due now
    table.release(poll, keep=True)  # a poll: waits for its deadline
    assert list(table.due) == [1]
    assert table.entries[2].deadline == 50.0 and table.entries[2].session is None


def test_due_ids_acked_meanwhile_are_skipped_and_restore() -> None:
    table = PendingTable({1: 1, 2: 1})
    table.settle([1])
    item = table.next_due()
    assert item is not None and item[0] == 2
    assert table.next_due() is None
    assert table.restore([2, 3]) == {3: 0}  # 2 is still pending
    assert table.entries[3].attempt == 0 and list(table.due) == [3]
