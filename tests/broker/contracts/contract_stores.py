"""The store implementations every store contract suite runs against.

Two registries. ``BACKENDS``: backends of every role (:class:`Store`), which every suite runs
on, the EventLog's included. ``METADATA_BACKENDS``: backends of the metadata roles
(:class:`MetadataStore`: consumer state, dead letters, keys, policy versions, audit), which
the role suites run on: every full backend, plus those that hold only these roles (PostgreSQL:
its log is JetStream's). A backend joins with one entry: given the test's request and its
temporary directory, it returns an opener, a callable giving an async context manager that
opens the store on this test's data (a directory, or a fresh database of its server), so
that opening it twice shows what survives a restart.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from lockgate.broker import wire
from lockgate.broker.ids import IdGenerator
from lockgate.broker.store import Batch, EventLog, MetadataStore, Store
from lockgate.broker.store.sqlite import SqliteStore

__all__ = [
    "BACKENDS",
    "HISTORY_ELSEWHERE",
    "METADATA_BACKENDS",
    "OpenLog",
    "OpenMetadata",
    "OpenStore",
    "event_log",
    "history_log",
    "make_batch",
    "metadata",
    "open_log",
    "open_metadata",
    "open_store",
    "store",
]

S = TypeVar("S", bound=MetadataStore)
OpenStore = Callable[[], AbstractAsyncContextManager[Store]]
OpenMetadata = Callable[[], AbstractAsyncContextManager[MetadataStore]]


@asynccontextmanager
async def _opened(s: S) -> AsyncIterator[S]:
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _sqlite(request: pytest.FixtureRequest, where: Path) -> OpenStore:
    return lambda: _opened(SqliteStore(where, fsync="os"))


def _postgres(request: pytest.FixtureRequest, where: Path) -> OpenMetadata:
    from lockgate.broker.store.postgres import PgStore

    dsn: str = request.getfixturevalue("pg_fresh_dsn")  # a new database for this test
    return lambda: _opened(PgStore(dsn, max_size=4))


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], OpenStore]] = {
    "sqlite": _sqlite,
}
METADATA_BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], OpenMetadata]] = {
    **BACKENDS,
    "postgres": _postgres,
}

# The server a backend needs, so that `-m "not postgres"` deselects its runs.
_MARKS = {"postgres": pytest.mark.postgres}


def _params(names: object) -> list[object]:
    return [pytest.param(n, marks=_MARKS.get(n, ())) for n in sorted(names)]  # type: ignore[call-overload]


@pytest.fixture(params=_params(BACKENDS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """Opens the parametrised full backend on this test's data; call it again to reopen."""
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[Store]:
    async with open_store() as s:
        yield s


@pytest.fixture(params=_params(METADATA_BACKENDS))
def open_metadata(request: pytest.FixtureRequest, tmp_path: Path) -> OpenMetadata:
    """Opens the parametrised metadata backend on this test's data; call it again to reopen."""
    return METADATA_BACKENDS[request.param](request, tmp_path)


@pytest.fixture
async def metadata(open_metadata: OpenMetadata) -> AsyncIterator[MetadataStore]:
    async with open_metadata() as s:
        yield s


OpenLog = Callable[[], AbstractAsyncContextManager[EventLog]]


@asynccontextmanager
async def _jetstream(url: str, name: str) -> AsyncIterator[EventLog]:
    from lockgate.broker.store.jetstream import JetStreamLog

    log = JetStreamLog(url, stream=name, root=name.lower())
    await log.open()
    try:
        yield log
    finally:
        await log.close()


async def _delete_stream(url: str, name: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        await nc.request(f"$JS.API.STREAM.DELETE.{name}", b"", timeout=5)
    finally:
        await nc.close()


HISTORY_ELSEWHERE = {"jetstream"}
"""Logs whose history reads by id (``read_batches``, ``scan_batches``, ``batch_containing``)
another store serves: the cluster's come from PostgreSQL (the message logger)."""


@pytest.fixture(params=[*_params(BACKENDS), pytest.param("jetstream", marks=pytest.mark.nats)])
async def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenLog]:
    """Opens the parametrised event log (every full backend, and the cluster's JetStream log
    on a fresh stream, deleted afterwards) on this test's data; call it again to reopen."""
    if request.param != "jetstream":
        yield BACKENDS[request.param](request, tmp_path)
        return
    url: str = request.getfixturevalue("nats_url")
    name = "LGT_" + uuid.uuid4().hex[:12]
    try:
        yield lambda: _jetstream(url, name)
    finally:
        await _delete_stream(url, name)


@pytest.fixture
async def event_log(open_log: OpenLog) -> AsyncIterator[EventLog]:
    async with open_log() as log:
        yield log


@pytest.fixture
async def history_log(request: pytest.FixtureRequest, open_log: OpenLog) -> AsyncIterator[EventLog]:
    """The log, for a test of its history reads: skipped where those live elsewhere."""
    if request.node.callspec.params["open_log"] in HISTORY_ELSEWHERE:
        pytest.skip("this log's history reads are served by PostgreSQL (the message logger)")
    async with open_log() as log:
        yield log


def make_batch(gen: IdGenerator, org: str, subject: str, n: int) -> Batch:
    ids = gen.next_block(n)
    sf = wire.subject_field(subject)
    body = b"".join(wire.delivery_frame(i, sf, b"\x0a\x01x") for i in ids)
    return Batch(ids[0], ids[-1], org, subject, n, "v1", body)
