from __future__ import annotations

from lockgate.broker.ids import EPOCH_MS, IdGenerator, id_for_time_ms, time_ms_of


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_ids_are_time_ordered_and_unique() -> None:
    clock = FakeClock(1_800_000_000.0)
    gen = IdGenerator(7, clock=clock)
    ids = gen.next_block(10_000)  # more than one millisecond's 4096
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert time_ms_of(ids[0]) == 1_800_000_000_000


def test_clock_stepping_back_never_repeats() -> None:
    clock = FakeClock(1_800_000_000.0)
    gen = IdGenerator(1, clock=clock)
    first = gen.next_block(100)
    clock.t -= 5.0  # NTP steps the clock back five seconds
    second = gen.next_block(100)
    assert second[0] > first[-1]
    assert len(set(first + second)) == 200


def test_workers_do_not_collide() -> None:
    clock = FakeClock(1_800_000_000.0)
    a = IdGenerator(1, clock=clock).next_block(500)
    b = IdGenerator(2, clock=clock).next_block(500)
    assert not set(a) & set(b)


def test_floor_after_restart() -> None:
    clock = FakeClock(1_800_000_000.0)
    last = IdGenerator(0, clock=clock).next_block(5)[-1]
    clock.t -= 60
    restarted = IdGenerator(0, clock=clock, floor=last)
    assert restarted.next() > last


def test_time_bounds() -> None:
    assert time_ms_of(id_for_time_ms(EPOCH_MS + 1234)) == EPOCH_MS + 1234
    assert id_for_time_ms(0) == 0
