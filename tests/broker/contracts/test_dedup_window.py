"""The contract of a :class:`broker.dedup.DedupWindow`, for every implementation.

An implementation joins by adding its :class:`Subject` factory to ``WINDOWS``. Time is
counted in units: the memory window runs on a fake clock (one unit a second); the Redis one
on the server's clock, so its entry waits real time with a short window. A window rebuilt
from the log at start (the embedded one) says so with ``rebuilds``; a shared window outlives
the nodes and loads nothing. What only a shared window does (claims seen by another node)
is in tests/broker/test_dedup_redis.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from lockgate.broker.dedup import DedupWindow, MemoryDedupWindow
from lockgate.broker.dedup_redis import RedisDedupWindow
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


@dataclass
class Subject:
    make: Callable[[float], DedupWindow]
    """A window of this many units."""
    wait: Callable[[float], Awaitable[None]]
    """Lets this many units pass."""
    rebuilds: bool
    """Whether :meth:`DedupWindow.open` loads the log's recent events."""


def _memory(_: pytest.FixtureRequest) -> Subject:
    clock = Clock()

    async def wait(units: float) -> None:
        clock.now += units

    return Subject(lambda units: MemoryDedupWindow(units, clock=clock), wait, True)


def _redis(request: pytest.FixtureRequest) -> Subject:
    url = request.getfixturevalue("redis_url")
    prefix = f"lockgate-test:{uuid.uuid4().hex}:"
    # A stall of the test process longer than the margin a test leaves (4-5 units) lets a key
    # run out early: 0.1 s units left 0.4 s, short of a loaded machine's stalls.
    unit = 0.25

    async def wait(units: float) -> None:
        await asyncio.sleep(units * unit)  # the server's clock is the one under test

    return Subject(lambda units: RedisDedupWindow(url, units * unit, prefix=prefix), wait, False)


WINDOWS: dict[str, Callable[[pytest.FixtureRequest], Subject]] = {
    "memory": _memory,
    "redis": _redis,
}


@pytest.fixture(
    params=[pytest.param(n, marks=[pytest.mark.redis] if n == "redis" else []) for n in WINDOWS]
)
def subject(request: pytest.FixtureRequest) -> Subject:
    return WINDOWS[request.param](request)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path, fsync="never")
    await s.open()
    yield s
    await s.close()


async def test_remembers_and_forgets(subject: Subject, store: SqliteStore) -> None:
    window = subject.make(600)
    await window.open(store)
    a, b = ("o", "src", "a"), ("o", "src", "b")
    assert await window.lookup([a, b]) == [0, 0]
    await window.remember([(a, 11), (b, 12)])
    window.stored([a, b])  # their append committed
    assert await window.lookup([b, a]) == [12, 11]
    await window.forget([a])
    assert await window.lookup([a, b]) == [0, 12]
    await window.close()


async def test_a_key_twice_in_one_lookup(subject: Subject, store: SqliteStore) -> None:
    window = subject.make(600)
    await window.open(store)
    k = ("o", "src", "twice")
    assert await window.lookup([k, k]) == [0, 0]
    await window.remember([(k, 7)])
    window.stored([k])
    assert await window.lookup([k, k]) == [7, 7]
    await window.close()


async def test_keys_belong_to_their_org(subject: Subject, store: SqliteStore) -> None:
    window = subject.make(600)
    await window.open(store)
    assert await window.lookup([("o1", "src", "a")]) == [0]
    await window.remember([(("o1", "src", "a"), 5)])
    window.stored([("o1", "src", "a")])
    assert await window.lookup([("o2", "src", "a"), ("o1", "src", "a")]) == [0, 5]
    await window.close()


async def test_keys_expire_after_the_window(subject: Subject, store: SqliteStore) -> None:
    window = subject.make(10)
    await window.open(store)
    old, new = ("o", "s", "old"), ("o", "s", "new")
    assert await window.lookup([old]) == [0]
    await window.remember([(old, 1)])
    window.stored([old])
    await subject.wait(6)
    assert await window.lookup([new]) == [0]
    await window.remember([(new, 2)])
    window.stored([new])
    await subject.wait(6)  # "old" is 12 units old, "new" 6
    assert await window.lookup([old, new]) == [0, 2]
    await window.close()


async def test_open_loads_what_the_log_stored_lately_if_it_rebuilds(
    subject: Subject, store: SqliteStore
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
    window = subject.make(60)
    await window.open(store)
    found = await window.lookup([("o", "/s", "x2"), ("o", "/s", "x1"), ("o", "/s", "x3")])
    # A shared window outlives the nodes: it is not rebuilt from the log.
    assert found == ([ids[1], ids[0], 0] if subject.rebuilds else [0, 0, 0])
    await window.close()
