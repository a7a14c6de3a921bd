"""The memory budget of the embedded dedup index (issue 8, resource exhaustion): an entry
costs the same whatever the lengths of ``id`` and ``source``, and a full index shortens its
window with a warning instead of growing; dedup keeps working inside the shortened window."""

from __future__ import annotations

import logging
import tracemalloc

import pytest

from lockgate.broker.config import ConfigError
from lockgate.broker.config_load import load_config
from lockgate.broker.dedup import BATCH_BYTES, ENTRY_BYTES, DedupKey, MemoryDedupWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _keys(batch: int, n: int) -> list[DedupKey]:
    # The largest id and source the broker accepts (1024 characters each).
    return [
        ("acme", f"{batch:04d}".ljust(1024, "s"), f"{batch}-{i}".ljust(1024, "i")) for i in range(n)
    ]


@pytest.mark.parametrize("looked_up", [False, True])
@pytest.mark.parametrize("batch", [1, 10, 500])
async def test_an_entry_costs_what_the_budget_counts(batch: int, looked_up: bool) -> None:
    """Measured, not assumed: tracemalloc sees at most the estimate, for 1 KiB ids, whether
    the keys were looked up first (as the pipeline does: lookup enters them) or not."""
    window = MemoryDedupWindow(120.0, max_bytes=1 << 30)
    keys = [_keys(b, batch) for b in range(20_000 // batch)]
    tracemalloc.start()
    try:
        for b, ks in enumerate(keys):
            if looked_up:
                await window.lookup(ks)
            await window.remember([(k, (b << 20) + i + (1 << 62)) for i, k in enumerate(ks)])
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(window) == 20_000
    assert used <= window.size() == 20_000 * ENTRY_BYTES + len(keys) * BATCH_BYTES
    # The strings would be 2 KiB an entry; the index keeps none of them.
    assert used < 20_000 * 400


async def test_a_full_index_shortens_the_window_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    budget = 1 << 20
    window = MemoryDedupWindow(120.0, max_bytes=budget, clock=clock)
    caplog.set_level(logging.WARNING, "lockgate.dedup")
    ids: dict[DedupKey, int] = {}
    for b in range(40):  # 40 batches of 500, one a second: 20,000 entries, ~2.9 MB estimated
        clock.now += 1.0
        entries = [(k, b * 1000 + i + 1) for i, k in enumerate(_keys(b, 500))]
        ids.update(entries)
        await window.remember(entries)
        assert window.size() <= budget
    warnings = [r for r in caplog.records if "dedup.window.shortened" in r.getMessage()]
    assert len(warnings) == 1  # once a minute, not per batch
    assert "instead of dedup_window 120s" in warnings[0].getMessage()
    assert window.shortened_to is not None and 0 < window.shortened_to < 120.0
    # Inside the shortened window dedup works; the oldest batches were dropped early.
    newest = _keys(39, 500)
    assert await window.lookup(newest) == [ids[k] for k in newest]
    assert await window.lookup(_keys(0, 3)) == [0, 0, 0]
    # A minute later, the next shortening warns again.
    clock.now += 61.0
    for b in range(40, 50):
        await window.remember([(k, b * 1000 + i + 1) for i, k in enumerate(_keys(b, 500))])
    assert len([r for r in caplog.records if "dedup.window.shortened" in r.getMessage()]) == 2


async def test_a_window_within_its_budget_is_not_shortened(
    caplog: pytest.LogCaptureFixture,
) -> None:
    window = MemoryDedupWindow(120.0, max_bytes=1 << 20, clock=Clock())
    await window.remember([(k, i + 1) for i, k in enumerate(_keys(0, 100))])
    assert window.shortened_to is None
    assert not [r for r in caplog.records if "dedup.window.shortened" in r.getMessage()]


async def test_found_keys_give_their_ids_whichever_way_they_were_remembered() -> None:
    """Looked up then remembered (consecutive ids, or not), remembered alone, a key twice."""
    clock = Clock()
    window = MemoryDedupWindow(120.0, clock=clock)
    a, b, c = _keys(1, 300), _keys(2, 40), _keys(3, 2)
    assert await window.lookup(a) == [0] * 300
    await window.remember([(k, 1000 + i) for i, k in enumerate(a)])
    assert await window.lookup(b) == [0] * 40
    await window.remember([(k, 500 - 3 * i) for i, k in enumerate(b)])  # not consecutive
    assert await window.lookup(c) == [0, 0]
    await window.remember([(k, 77 + i) for i, k in enumerate(c)])
    new = ("acme", "s", "new")
    mixed = [new, a[299], b[2], c[1], a[0], b[0], new, a[299]] * 4  # 32: entered at once
    assert await window.lookup(mixed) == [0, 1299, 494, 78, 1000, 500, 0, 1299] * 4
    assert await window.lookup(mixed[:8]) == [0, 1299, 494, 78, 1000, 500, 0, 1299]
    clock.now += 121.0  # all of them expired
    assert await window.lookup(mixed) == [0] * 32
    assert len(window) == 0


async def test_a_lookup_not_remembered_leaves_nothing_behind() -> None:
    window = MemoryDedupWindow(120.0, clock=Clock())
    keys = _keys(1, 50)
    assert await window.lookup(keys) == [0] * 50
    assert len(window) == 0
    assert await window.lookup(keys) == [0] * 50
    await window.remember([(keys[1], 42)])  # another key list than the lookup's
    assert await window.lookup(keys) == [0, 42] + [0] * 48
    assert await window.lookup(keys[:2]) == [0, 42]
    await window.forget(keys)
    assert len(window) == 0


def test_dedup_max_bytes_is_configurable_with_a_floor() -> None:
    assert load_config(env={"LOCKGATE_DEDUP_MAX_BYTES": str(64 << 20)}).dedup_max_bytes == 64 << 20
    assert load_config(env={}).dedup_max_bytes == 256 << 20
    with pytest.raises(ConfigError, match="dedup_max_bytes"):
        load_config(env={"LOCKGATE_DEDUP_MAX_BYTES": "1000"})


async def test_remembering_keys_a_lookup_found_takes_the_new_ids() -> None:
    """Not what the pipeline does (it remembers new keys only), but the window's contract."""
    window = MemoryDedupWindow(120.0, clock=Clock())
    keys = _keys(1, 40)
    assert await window.lookup(keys[:20]) == [0] * 20
    await window.remember([(k, 100 + i) for i, k in enumerate(keys[:20])])
    assert await window.lookup(keys) == list(range(100, 120)) + [0] * 20
    await window.remember([(k, 500 + i) for i, k in enumerate(keys)])
    assert await window.lookup(keys) == list(range(500, 540))
