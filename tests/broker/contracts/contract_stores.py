"""The store implementations every store contract suite runs against.

A backend joins by adding one entry to ``BACKENDS``: an async context manager that opens a
store keeping its data under the given directory (or in its server, keyed by that directory
name), so that opening it twice shows what survives a restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from lockgate.broker import wire
from lockgate.broker.ids import IdGenerator
from lockgate.broker.store import Batch, Store
from lockgate.broker.store.sqlite import SqliteStore

__all__ = ["BACKENDS", "OpenStore", "make_batch", "open_store", "store"]

OpenStore = Callable[[], AbstractAsyncContextManager[Store]]


@asynccontextmanager
async def _sqlite(where: Path) -> AsyncIterator[Store]:
    s = SqliteStore(where, fsync="os")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Store]]] = {
    "sqlite": _sqlite,
}


@pytest.fixture(params=sorted(BACKENDS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """Opens the parametrised backend on this test's data; call it again to reopen."""
    backend = BACKENDS[request.param]
    return lambda: backend(tmp_path)


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[Store]:
    async with open_store() as s:
        yield s


def make_batch(gen: IdGenerator, org: str, subject: str, n: int) -> Batch:
    ids = gen.next_block(n)
    sf = wire.subject_field(subject)
    body = b"".join(wire.delivery_frame(i, sf, b"\x0a\x01x") for i in ids)
    return Batch(ids[0], ids[-1], org, subject, n, "v1", body)
