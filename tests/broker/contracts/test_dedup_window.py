"""The contract of a :class:`broker.dedup.DedupWindow`, for every implementation.

A shared window (NATS KV, Redis) joins by adding its factory to ``WINDOWS``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from lockgate.broker.dedup import DedupWindow, MemoryDedupWindow
from lockgate.broker.ids import IdGenerator
from lockgate.broker.store import Batch
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import cloudevent_pb2
from lockgate.broker.wire import delivery_frames, subject_field


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


WindowFactory = Callable[[float, Clock], DedupWindow]

WINDOWS: dict[str, WindowFactory] = {
    "memory": lambda window, clock: MemoryDedupWindow(window, clock=clock),
}


@pytest.fixture(params=sorted(WINDOWS))
def make(request: pytest.FixtureRequest) -> WindowFactory:
    return WINDOWS[request.param]


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path, fsync="never")
    await s.open()
    yield s
    await s.close()


async def test_remembers_and_forgets(make: WindowFactory, store: SqliteStore) -> None:
    window = make(60.0, Clock())
    await window.open(store)
    a, b = ("o", "src", "a"), ("o", "src", "b")
    assert await window.lookup([a, b]) == [0, 0]
    await window.remember([(a, 11), (b, 12)])
    assert await window.lookup([b, a]) == [12, 11]
    await window.forget([a])
    assert await window.lookup([a, b]) == [0, 12]
    await window.close()


async def test_keys_belong_to_their_org(make: WindowFactory, store: SqliteStore) -> None:
    window = make(60.0, Clock())
    await window.open(store)
    await window.remember([(("o1", "src", "a"), 5)])
    assert await window.lookup([("o2", "src", "a"), ("o1", "src", "a")]) == [0, 5]
    await window.close()


async def test_keys_expire_after_the_window(make: WindowFactory, store: SqliteStore) -> None:
    clock = Clock()
    window = make(10.0, clock)
    await window.open(store)
    await window.remember([(("o", "s", "old"), 1)])
    clock.now += 6
    await window.remember([(("o", "s", "new"), 2)])
    clock.now += 6  # "old" is 12 s old, "new" 6 s
    assert await window.lookup([("o", "s", "old"), ("o", "s", "new")]) == [0, 2]
    await window.close()


async def test_open_loads_what_the_log_stored_lately(
    make: WindowFactory, store: SqliteStore
) -> None:
    ids = IdGenerator().next_block(2)
    raws = [
        cloudevent_pb2.CloudEvent(
            id=i, source="/s", spec_version="1.0", type="t"
        ).SerializeToString()
        for i in ("x1", "x2")
    ]
    body = b"".join(delivery_frames(ids, subject_field("a.b"), raws, b""))
    await store.append([Batch(ids[0], ids[-1], "o", "a.b", 2, "none", body)])
    window = make(60.0, Clock())
    await window.open(store)
    assert await window.lookup([("o", "/s", "x2"), ("o", "/s", "x1"), ("o", "/s", "x3")]) == [
        ids[1],
        ids[0],
        0,
    ]
    await window.close()
